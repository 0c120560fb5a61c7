#!/usr/bin/env bash
# android_demo's checks on a Linux machine without the Android SDK or Gradle (the README's `make test` runs this):
#   1. the toolchain (tools/install-toolchain.sh): kotlinc, JUnit 5, org.json, ktlint; installed once, cached
#   2. compile core/ and its unit tests with kotlinc (tools/build-core.sh; cached by a hash of the sources)
#   3. run the unit tests with JUnit 5, golden cases from the app bundle given as $1 or EDGEVIT_BUNDLE
#   4. ktlint on every Kotlin source and build script
#   5. parse every Kotlin source with tree-sitter-kotlin (the app/ layer needs the Android SDK to compile)
# A step that cannot run fails the script with a message saying why; nothing is skipped.
#
#   android_demo/check.sh [BUNDLE_DIR]        (or EDGEVIT_BUNDLE=DIR android_demo/check.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
die() { echo "android check: ERROR: $*" >&2; exit 1; }
t0=$SECONDS
step() { echo "android check: [$((SECONDS - t0))s] $*"; }

bundle="${1:-${EDGEVIT_BUNDLE:-}}"
[ -n "$bundle" ] || die "no app bundle for the golden tests: make one with 'edgevit bundle RUN --platform android \
--out DIR' and run 'android_demo/check.sh DIR' (or set EDGEVIT_BUNDLE=DIR)"
bundle="$(cd "$bundle" 2>/dev/null && pwd)" || die "app bundle folder not found: ${1:-$EDGEVIT_BUNDLE}"
[ -f "$bundle/bundle.json" ] || die "$bundle has no bundle.json (not an app bundle)"
[ -f "$bundle/golden/cases.json" ] || die "$bundle has no golden/cases.json (write the bundle with golden cases)"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for p in "$repo/.venv/bin/python" "$(command -v python3 || true)"; do [ -x "$p" ] && { PY="$p"; break; }; done
fi
[ -n "$PY" ] || die "no python for the tree-sitter parse of the app sources (set PYTHON=...)"

step "toolchain"
toolchain="$("$here/tools/install-toolchain.sh" --env)" || die "the Android core toolchain could not be installed (see above)"
eval "$toolchain"

step "compiling core and its tests (kotlinc $KOTLIN_VERSION, cached)"
cp="$("$here/tools/build-core.sh" test)"
test_jar="${cp%%:*}"

step "unit tests (JUnit 5) with the golden cases of $bundle"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
java -Dedgevit.bundle="$bundle" -jar "$JUNIT_CONSOLE_JAR" --disable-banner --disable-ansi-colors \
  --details=tree --fail-if-no-tests -cp "$cp" --scan-classpath "$test_jar" >"$log" 2>&1
rc=$?
set -e
# the tree's failed lines (named tests) and the console's summary
grep -E "✘|\[ +[0-9]+ (tests|containers) (found|successful|failed|aborted) +\]" "$log" || true
passed="$(sed -n -E 's/^\[ +([0-9]+) tests successful +\]$/\1/p' "$log")"
failed="$(sed -n -E 's/^\[ +([0-9]+) tests failed +\]$/\1/p' "$log")"
if [ "$rc" != 0 ]; then
  sed -n '/^Failures (/,/^Test run finished/p' "$log" | grep -v "^       [a-z]" | head -80 || true
  echo "android core: ${passed:-0} passed, ${failed:-?} failed"
  die "unit tests failed (JUnit exit $rc)"
fi
echo "android core: ${passed:-0} passed, ${failed:-0} failed"

step "ktlint $(java -jar "$KTLINT_JAR" --version 2>/dev/null | sed 's/ktlint version //')"
(cd "$here" && java -jar "$KTLINT_JAR" --relative "**/*.kt" "**/*.kts" "!**/build/**") \
  || die "ktlint found style errors (fix them, or run: cd android_demo && java -jar $KTLINT_JAR --format '**/*.kt' '**/*.kts')"

step "parsing the Kotlin sources with tree-sitter-kotlin"
"$PY" "$here/tools/parse_kotlin.py" "$here/app" "$here/core" "$here"/*.kts || die "Kotlin sources do not parse"

step "done: android_demo checks passed"
