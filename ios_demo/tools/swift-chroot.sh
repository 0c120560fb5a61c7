#!/usr/bin/env bash
# Runs a shell command inside the cached Swift toolchain root (installing it first if needed), in a private
# mount namespace so nothing stays mounted afterwards.
#   swift-chroot.sh [--bind HOST_DIR:ROOT_DIR[:ro]]... [--env NAME=VALUE]... -- 'command'
# The command runs under bash in the root, with /proc and /dev mounted and HOME=/root. Its exit status is
# returned. Needs root.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
binds=()
envs=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bind) binds+=("$2"); shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "swift-chroot.sh: unknown argument $1 (usage: [--bind H:R[:ro]]... [--env N=V]... -- 'command')" >&2; exit 2 ;;
  esac
done
[[ $# -eq 1 ]] || { echo "swift-chroot.sh: expected one command string after --" >&2; exit 2; }
ROOT="$("$HERE/install-swift.sh")"

# Mount points are created in the root once; the mounts themselves live only in this namespace.
for spec in "${binds[@]}"; do
  IFS=: read -r host inside _ <<<"$spec"
  [[ -d "$host" ]] || { echo "swift-chroot.sh: $host is not a directory" >&2; exit 2; }
  mkdir -p "$ROOT$inside"
done

exec unshare --mount --propagation private bash -c '
  set -euo pipefail
  root="$1"; shift
  cmd="$1"; shift
  nbinds="$1"; shift
  for ((i = 0; i < nbinds; i++)); do
    IFS=: read -r host inside mode <<<"$1"; shift
    mount --bind "$host" "$root$inside"
    if [[ "$mode" == ro ]]; then mount -o remount,bind,ro "$root$inside"; fi
  done
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin "$@" /bin/bash -c "$cmd"
' _ "$ROOT" "$1" "${#binds[@]}" "${binds[@]}" "${envs[@]}"
