# Two commands do all set-up on a fresh machine:  `make demo` (quickstart run)  and  `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgevit-installed
RUN ?= runs/quickstart
LOGS := build/logs

.PHONY: demo test test-fast lint clean browser toolchains armbuild

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)  ## train -> int8 -> export to every backend -> parity report, on the built-in digits data
	$(BIN)/edgevit run recipes/quickstart.yaml --out $(RUN)
	@echo "report: $(RUN)/report.md, with plots: $(RUN)/report.html  (machine-readable: $(RUN)/parity.json)"

# The whole suite, slow end-to-end tests and both demo apps' cores included (what CI runs): lint, then pytest on
# 2 workers (pytest-xdist). The apps' toolchains (Kotlin, a Swift root) start installing in the background first,
# while pip installs; their tests wait for them and fail loudly if an install failed (logs in build/logs/).
test: toolchains $(STAMP) browser armbuild lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=25  # the slowest 25: where CI time goes

test-fast: $(STAMP) browser  ## the inner loop: skips the end-to-end pipeline tests and the app cores
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow"

toolchains:  ## the demo apps' toolchains, installed (once, cached in $$EDGEVIT_CACHE) in the background
	@mkdir -p $(LOGS)
	@(android_demo/tools/install-toolchain.sh > $(LOGS)/android-toolchain.log 2>&1 &)
	@(ios_demo/tools/install-swift.sh > $(LOGS)/ios-toolchain.log 2>&1 &)

# tests/test_report_html.py opens report.html in a headless Chromium; installed from apt when root on Debian/Ubuntu,
# otherwise this says how and that test skips with the same advice. A failed install never fails the build.
BROWSERS := chromium-headless-shell chromium chromium-browser google-chrome chrome-headless-shell
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends
browser:  ## a headless Chromium for the report.html browser test
	@for b in $(BROWSERS); do command -v $$b >/dev/null 2>&1 && exit 0; done; \
	test -n "$$EDGEVIT_BROWSER" && exit 0; \
	if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium-headless-shell from apt (for the report.html browser test)"; \
	  for pkg in chromium-headless-shell chromium; do \
	    $(APT_INSTALL) $$pkg >/dev/null 2>&1 \
	    || { apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null 2>&1 && $(APT_INSTALL) $$pkg >/dev/null 2>&1; } \
	    && exit 0; \
	  done; echo "warning: could not install a headless Chromium with apt; the report.html browser test will skip"; \
	else \
	  echo "note: no headless Chromium; the report.html browser test will skip. Install one with"; \
	  echo "  sudo apt-get install chromium-headless-shell   (Debian)   or set EDGEVIT_BROWSER=/path/to/chrome"; \
	fi

# The android-arm64 target builds its counting emulator (QEMU with plugins) from source on first use, and a small
# entry point to ExecuTorch's aarch64 runtime: it needs a C compiler, ninja, pkg-config, glib's headers and an aarch64
# C++ cross compiler. Installed from apt when root on Debian/Ubuntu and missing; otherwise `edgevit target setup
# android-arm64` (and the tests that use it) name what is missing.
ARM_BUILD_PKGS := gcc ninja-build pkg-config libglib2.0-dev g++-aarch64-linux-gnu
armbuild:  ## build tools for the emulated ARM64 target (counting emulator, ExecuTorch entry point)
	@command -v cc >/dev/null 2>&1 && command -v ninja >/dev/null 2>&1 && pkg-config --exists gmodule-2.0 2>/dev/null \
	&& command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(ARM_BUILD_PKGS) from apt (to build the android-arm64 counting emulator)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends $(ARM_BUILD_PKGS) >/dev/null 2>&1 \
	  || { apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
	       apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends $(ARM_BUILD_PKGS) >/dev/null 2>&1; } \
	  || echo "warning: could not install $(ARM_BUILD_PKGS); android-arm64 setup will say what is missing"; \
	else \
	  echo "note: android-arm64's counting emulator needs: sudo apt-get -o DPkg::Lock::Timeout=900 install $(ARM_BUILD_PKGS)"; \
	fi

lint: $(STAMP)  ## ruff check (PLC0415: imports at the top, so import circles show) and ruff format
	$(BIN)/ruff check edgevit tests docs && $(BIN)/ruff format --check edgevit tests docs

clean:
	rm -rf runs build .pytest_cache
