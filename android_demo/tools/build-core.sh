#!/usr/bin/env bash
# Compiles android_demo/core with kotlinc (no Gradle: see android_demo/README.md) and prints the classpath to run it.
#
#   android_demo/tools/build-core.sh main   classpath of the core (+ Kotlin stdlib + org.json)
#   android_demo/tools/build-core.sh test   the same plus the compiled unit tests, kotlin-test and JUnit 5
#
# Compiled jars are cached under ${EDGEVIT_CACHE:-~/.cache/edgevit}/build/android-core/, keyed by a hash of the
# sources, the compiler version and the flags, so an unchanged core is not recompiled (the newest 6 are kept).
# Sources are compiled at Kotlin language/API level 2.3, the level the Gradle build (gradle/libs.versions.toml) uses.
set -euo pipefail
what="${1:-main}"
here="$(cd "$(dirname "$0")/.." && pwd)"  # android_demo/
# check.sh has located the toolchain already when it calls this (EDGEVIT_ANDROID_TOOLCHAIN set)
if [ -z "${EDGEVIT_ANDROID_TOOLCHAIN:-}" ]; then
  toolchain="$("$here/tools/install-toolchain.sh" --env)" || { echo "android core: ERROR: no toolchain" >&2; exit 1; }
  eval "$toolchain"
fi

FLAGS=(-language-version 2.3 -api-version 2.3 -jvm-target 17)
OUT="${EDGEVIT_CACHE:-$HOME/.cache/edgevit}/build/android-core"
mkdir -p "$OUT"

hash_of() {  # hash_of DIR EXTRA...: the Kotlin sources under DIR (names and contents), the compiler, flags, EXTRA
  local src="$1"; shift
  { echo "$KOTLIN_VERSION ${FLAGS[*]} $*"; (cd "$src" && find . -name '*.kt' -type f | LC_ALL=C sort | xargs sha256sum); } \
    | sha256sum | cut -c1-16
}

compile() {  # compile NAME CLASSPATH SRC_DIR [extra kotlinc args]: prints the cached jar, compiling it if needed
  local name="$1" cp="$2" src="$3"; shift 3
  local jar="$OUT/$name-$(hash_of "$src" "$@" "$cp").jar"
  if [ ! -f "$jar" ]; then
    echo "android core: compiling $src with kotlinc $KOTLIN_VERSION" >&2
    local tmp="${jar%.jar}.tmp$$.jar"  # kotlinc writes a jar only when -d ends in .jar
    if ! JAVA_OPTS="${JAVA_OPTS:--Xmx1g}" "$KOTLINC" "${FLAGS[@]}" -cp "$cp" "$@" "$src" -d "$tmp" >"$tmp.log" 2>&1; then
      cat "$tmp.log" >&2; rm -f "$tmp" "$tmp.log"
      echo "android core: ERROR: kotlinc failed on $src" >&2; exit 1
    fi
    grep -E "^(warning|error)|: (warning|error):" "$tmp.log" >&2 || true
    rm -f "$tmp.log"; mv "$tmp" "$jar"
    ls -t "$OUT"/"$name"-*.jar 2>/dev/null | tail -n +7 | xargs -r rm -f  # keep the newest 6
  fi
  echo "$jar"
}

main_jar="$(compile core-main "$ANDROID_JSON_JAR" "$here/core/src/main/kotlin")"
runtime="$main_jar:$KOTLIN_STDLIB_JAR:$ANDROID_JSON_JAR"
case "$what" in
  main) echo "$runtime" ;;
  test)
    test_cp="$runtime:$KOTLIN_TEST_JARS:$JUNIT_CONSOLE_JAR"
    test_jar="$(compile core-test "$test_cp" "$here/core/src/test/kotlin" "-Xfriend-paths=$main_jar")"
    echo "$test_jar:$test_cp" ;;
  *) echo "usage: $0 main|test" >&2; exit 2 ;;
esac
