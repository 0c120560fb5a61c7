# Shared by ios_demo/check.sh and ios_demo/run-golden.sh (sourced, not run).
# IOS_DIR: this ios_demo folder; SWIFT_SCRATCH: the SwiftPM build folder for this checkout, kept in the cache
# outside the repository (keyed by the checkout's path, so worktrees do not rebuild each other's objects).
IOS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EDGEVIT_CACHE="${EDGEVIT_CACHE:-$HOME/.cache/edgevit}"
SWIFT_SCRATCH="$EDGEVIT_CACHE/swift-build/$(printf '%s' "$IOS_DIR" | sha1sum | cut -c1-12)"
mkdir -p "$SWIFT_SCRATCH"
touch "$SWIFT_SCRATCH"
# Build folders of checkouts unused for two weeks (old CI clones) are removed.
find "$EDGEVIT_CACHE/swift-build" -mindepth 1 -maxdepth 1 -type d -mtime +14 -exec rm -rf {} + 2>/dev/null || true

# swift_in_root [--bind H:R[:ro]]... -- 'command': the command in the Swift root with ios_demo at /edgevit/ios_demo
# and the scratch folder at /edgevit/build.
swift_in_root() {
  "$IOS_DIR/tools/swift-chroot.sh" --bind "$IOS_DIR:/edgevit/ios_demo" --bind "$SWIFT_SCRATCH:/edgevit/build" "$@"
}
