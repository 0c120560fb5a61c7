#!/usr/bin/env bash
# Installs (once) and prints the root of the Swift toolchain the iOS core is built and tested with.
#
# Swift 6.0.3 is Debian trixie's `swiftlang`; it needs glibc 2.38, newer than this host's, so it lives in a
# `debootstrap --variant=minbase trixie` root cached OUTSIDE the repo, keyed by version:
#   ${EDGEVIT_CACHE:-~/.cache/edgevit}/toolchains/swift-<version>
# `libc6-dev` and `libstdc++-14-dev` are installed with it (without them linking fails on Scrt1.o).
# Idempotent: a finished root carries a stamp and is reused; a half-built one is removed and redone.
# Needs root (debootstrap, chroot). Anything that cannot be installed fails loudly with a non-zero exit.
# Usage: install-swift.sh            -> prints the chroot root on stdout (everything else goes to stderr)
set -euo pipefail

SWIFT_VERSION="${EDGEVIT_SWIFT_VERSION:-6.0.3}"
SUITE=trixie
MIRROR="${EDGEVIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${EDGEVIT_CACHE:-$HOME/.cache/edgevit}"
ROOT="$CACHE/toolchains/swift-$SWIFT_VERSION"
STAMP="$ROOT/.edgevit-toolchain-ready"

die() {
  echo "" >&2
  echo "!!! install-swift.sh: $*" >&2
  echo "!!! the Swift toolchain (swiftlang $SWIFT_VERSION in a Debian $SUITE root at $ROOT) is NOT available;" >&2
  echo "!!! the iOS core tests cannot run. Fix the cause above and rerun ios_demo/tools/install-swift.sh." >&2
  exit 1
}
log() { echo "install-swift: $*" >&2; }

if [[ -f "$STAMP" ]]; then
  echo "$ROOT"
  exit 0
fi

[[ "$(id -u)" == 0 ]] || die "must run as root (debootstrap and chroot need it)"
mkdir -p "$CACHE/toolchains"
exec 9>"$CACHE/toolchains/.swift-$SWIFT_VERSION.lock"
flock 9  # another check.sh may be installing the same root: wait for it
if [[ -f "$STAMP" ]]; then
  echo "$ROOT"
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap (apt-get)"
  { apt-get -o DPkg::Lock::Timeout=900 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq debootstrap; } >&2 \
    || die "apt-get install debootstrap failed"
fi

START=$(date +%s)
PARTIAL="$ROOT.partial"
rm -rf "$ROOT"
if [[ -f "$PARTIAL/.debootstrap-done" ]]; then
  log "resuming in $PARTIAL (debootstrap already done)"
else
  rm -rf "$PARTIAL"
  log "debootstrap --variant=minbase $SUITE into $PARTIAL (first time only: ~3 min, ~3 GB)"
  debootstrap --variant=minbase "$SUITE" "$PARTIAL" "$MIRROR" >&2 || die "debootstrap $SUITE from $MIRROR failed"
  touch "$PARTIAL/.debootstrap-done"
fi

cp /etc/resolv.conf "$PARTIAL/etc/resolv.conf" 2>/dev/null || true
log "apt-get install swiftlang libc6-dev libstdc++-14-dev inside the root"
unshare --mount --propagation private bash -c '
  set -e
  mount -t proc proc "$1/proc"
  mount --rbind /dev "$1/dev"
  chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    bash -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends swiftlang libc6-dev libstdc++-14-dev ca-certificates && apt-get clean"
' _ "$PARTIAL" >&2 || die "apt-get install swiftlang libc6-dev libstdc++-14-dev failed inside the $SUITE root"

# /proc must be mounted: the swift driver finds its runtime libraries through /proc/self/exe.
got=$(unshare --mount --propagation private bash -c 'mount -t proc proc "$1/proc" && chroot "$1" /usr/bin/swift --version \
  && chroot "$1" /usr/bin/swift format --version' _ "$PARTIAL" 2>&1 | head -n 4 || true)
grep -q "Swift version $SWIFT_VERSION" <<<"$got" \
  || die "expected Swift $SWIFT_VERSION in the $SUITE root, got: ${got:-nothing}"
[[ $(wc -l <<<"$got") -ge 3 ]] || die "swift format is missing from the $SUITE root's swiftlang: $got"
log "$(head -n 1 <<<"$got")"

mv "$PARTIAL" "$ROOT"
echo "swift $SWIFT_VERSION suite=$SUITE installed=$(date -u +%FT%TZ) seconds=$(( $(date +%s) - START ))" > "$STAMP"
log "done in $(( $(date +%s) - START )) s: $ROOT ($(du -sh "$ROOT" 2>/dev/null | cut -f1))"
echo "$ROOT"
