#!/usr/bin/env bash
# The Swift core's golden runner (docs/reference/bundle.md), run from the host:
#   ios_demo/run-golden.sh --bundle DIR --cases DIR --out FILE.json
# Builds the `edgevit-golden` executable of EdgeVitCore (incrementally, in the cached build folder) and runs it
# inside the Swift toolchain root, with the three folders mounted; paths in its messages are the host's.
# Exit status: the runner's (0 all cases ran, 1 some case failed, 2 bad arguments or bundle), or 1 when the
# toolchain or the build fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/tools/common.sh"

usage="usage: ios_demo/run-golden.sh --bundle DIR --cases DIR --out FILE.json"
bundle="" cases="" out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bundle) bundle="${2:-}"; shift 2 ;;
    --cases) cases="${2:-}"; shift 2 ;;
    --out) out="${2:-}"; shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "run-golden.sh: unknown argument $1; $usage" >&2; exit 2 ;;
  esac
done
[[ -n "$bundle" && -n "$cases" && -n "$out" ]] || { echo "run-golden.sh: $usage" >&2; exit 2; }
[[ -d "$bundle" ]] || { echo "run-golden.sh: --bundle $bundle is not a directory" >&2; exit 2; }
[[ -d "$cases" ]] || { echo "run-golden.sh: --cases $cases is not a directory" >&2; exit 2; }
bundle="$(cd "$bundle" && pwd)"
cases="$(cd "$cases" && pwd)"
mkdir -p "$(dirname "$out")"
out_dir="$(cd "$(dirname "$out")" && pwd)"
out_name="$(basename "$out")"

# Messages name the mounted folders; translate them back to the host's paths.
to_host="s#/edgevit/mnt/bundle#$bundle#g; s#/edgevit/mnt/cases#$cases#g; s#/edgevit/mnt/out#$out_dir#g"
set +e
swift_in_root --bind "$bundle:/edgevit/mnt/bundle:ro" --bind "$cases:/edgevit/mnt/cases:ro" \
  --bind "$out_dir:/edgevit/mnt/out" -- "
  cd /edgevit/ios_demo/EdgeVitCore
  swift build --scratch-path /edgevit/build --product edgevit-golden >/tmp/edgevit-golden-build.log 2>&1 || {
    echo 'run-golden.sh: building edgevit-golden failed:' >&2; tail -n 30 /tmp/edgevit-golden-build.log >&2; exit 1; }
  exec /edgevit/build/debug/edgevit-golden --bundle /edgevit/mnt/bundle --cases /edgevit/mnt/cases \
    --out /edgevit/mnt/out/$out_name
" > >(sed -u "$to_host") 2> >(sed -u "$to_host" >&2)
status=$?
wait
exit $status
