#!/usr/bin/env bash
# The iOS side of `make test`: everything about ios_demo/ that this (Linux) machine can check.
#   ios_demo/check.sh [BUNDLE_DIR]        (or EDGEVIT_BUNDLE=BUNDLE_DIR ios_demo/check.sh)
# 1. installs or finds the Swift 6.0.3 toolchain (tools/install-swift.sh; cached outside the repo),
# 2. `swift test --disable-swift-testing` for EdgeVitCore, its golden tests reading BUNDLE_DIR/golden,
# 3. `swift format lint --strict` over the core and the app,
# 4. `swiftc -parse` of the app and app-test sources (they need Apple's SDKs to compile),
# 5. tools/check_xcodeproj.py: every app source is in EdgeVitDemo.xcodeproj, packages and versions match.
# Every step runs; none is skipped. Exits 1 if any fails or the toolchain cannot be installed.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/tools/common.sh"

bundle="${1:-${EDGEVIT_BUNDLE:-}}"
if [[ -z "$bundle" || ! -f "$bundle/bundle.json" || ! -f "$bundle/golden/cases.json" ]]; then
  echo "!!! ios_demo/check.sh: no bundle with golden cases at '${bundle}'." >&2
  echo "!!! Pass one (or set EDGEVIT_BUNDLE): a folder written by 'edgevit bundle RUN --platform ios --out DIR'" >&2
  echo "!!! with bundle.json and golden/cases.json. The Swift core's golden tests cannot run without it." >&2
  exit 1
fi
bundle="$(cd "$bundle" && pwd)"

passed=0
failed=0
failures=()
step() {  # step NAME COMMAND...: runs it, times it, counts it
  local name="$1"
  shift
  local start=$SECONDS
  echo "== ios: $name"
  if "$@"; then
    passed=$((passed + 1))
    echo "== ios: $name: ok ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "!!! ios: $name: FAILED ($((SECONDS - start)) s)"
  fi
}

toolchain() { "$IOS_DIR/tools/install-swift.sh" >/dev/null; }
core_tests() {
  swift_in_root --bind "$bundle:/edgevit/bundle:ro" --env EDGEVIT_BUNDLE=/edgevit/bundle -- \
    'set -o pipefail; cd /edgevit/ios_demo/EdgeVitCore && swift test --disable-swift-testing --scratch-path /edgevit/build 2>&1 \
       | grep -vE "^Test Case .* (started|passed) |^\[[0-9]+/[0-9]+\] "'
}
lint() {
  swift_in_root -- 'cd /edgevit/ios_demo && swift format lint --strict --recursive EdgeVitCore EdgeVitDemo EdgeVitDemoTests'
}
parse_app() {
  swift_in_root -- 'cd /edgevit/ios_demo && shopt -s globstar nullglob && files=(EdgeVitDemo/**/*.swift EdgeVitDemoTests/**/*.swift) \
    && echo "parsing ${#files[@]} app sources" && swiftc -parse "${files[@]}"'
}
xcodeproj() { python3 "$IOS_DIR/tools/check_xcodeproj.py"; }

step "Swift toolchain" toolchain
if [[ $failed -gt 0 ]]; then
  echo "!!! ios_demo/check.sh: the Swift toolchain is not available; no iOS check can run (see above)." >&2
  echo "ios: 0 passed, 1 failed"
  exit 1
fi
step "EdgeVitCore swift test (golden cases: $bundle)" core_tests
step "swift format lint" lint
step "swiftc -parse app sources" parse_app
step "Xcode project lists every source" xcodeproj
[[ $failed -eq 0 ]] || echo "!!! ios_demo/check.sh failed: ${failures[*]}"
echo "ios: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
