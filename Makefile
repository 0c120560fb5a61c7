# Two commands do all set-up on a fresh machine:  `make demo` (quickstart run)  and  `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgevit-installed
RUN ?= runs/quickstart

.PHONY: demo test test-fast lint bench clean browser armbuild

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)  ## train -> int8 -> export to every backend -> parity report, on the built-in digits data
	$(BIN)/edgevit run recipes/quickstart.yaml --out $(RUN)
	@echo "report: $(RUN)/report.md, with plots: $(RUN)/report.html  (machine-readable: $(RUN)/parity.json)"

test: $(STAMP) browser armbuild  ## the whole suite, slow end-to-end tests included (what CI runs)
	$(BIN)/python -m pytest -q --durations=25  # the slowest 25, so a CI log shows where its time goes

test-fast: $(STAMP) browser  ## the inner loop: skips the end-to-end pipeline tests
	$(BIN)/python -m pytest -q -m "not slow"

# tests/test_report_html.py opens report.html in a headless Chromium; installed from apt when root on Debian/Ubuntu,
# otherwise this says how and that test skips with the same advice. A failed install never fails the build.
BROWSERS := chromium-headless-shell chromium chromium-browser google-chrome chrome-headless-shell
browser:  ## a headless Chromium for the report.html browser test
	@for b in $(BROWSERS); do command -v $$b >/dev/null 2>&1 && exit 0; done; \
	test -n "$$EDGEVIT_BROWSER" && exit 0; \
	if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium-headless-shell from apt (for the report.html browser test)"; \
	  for pkg in chromium-headless-shell chromium; do \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$pkg >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
	         apt-get install -y -q --no-install-recommends $$pkg >/dev/null 2>&1; } && exit 0; \
	  done; echo "warning: could not install a headless Chromium with apt; the report.html browser test will skip"; \
	else \
	  echo "note: no headless Chromium; the report.html browser test will skip. Install one with"; \
	  echo "  sudo apt-get install chromium-headless-shell   (Debian)   or set EDGEVIT_BROWSER=/path/to/chrome"; \
	fi

# The android-arm64 target builds its counting emulator (QEMU with plugins) from source on first use: it needs a C
# compiler, ninja, pkg-config and glib's headers. Installed from apt when root on Debian/Ubuntu and missing;
# otherwise `edgevit target setup android-arm64` (and the tests that use it) name what is missing.
ARM_BUILD_PKGS := gcc ninja-build pkg-config libglib2.0-dev
armbuild:  ## build tools for the emulated ARM64 target's counting emulator
	@command -v cc >/dev/null 2>&1 && command -v ninja >/dev/null 2>&1 && pkg-config --exists gmodule-2.0 2>/dev/null \
	&& exit 0; \
	if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(ARM_BUILD_PKGS) from apt (to build the android-arm64 counting emulator)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(ARM_BUILD_PKGS) >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
	       apt-get install -y -q --no-install-recommends $(ARM_BUILD_PKGS) >/dev/null 2>&1; } \
	  || echo "warning: could not install $(ARM_BUILD_PKGS); android-arm64 setup will say what is missing"; \
	else \
	  echo "note: android-arm64's counting emulator needs: sudo apt-get install $(ARM_BUILD_PKGS)"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check edgevit tests && $(BIN)/ruff format --check edgevit tests

clean:
	rm -rf runs .pytest_cache
