#!/usr/bin/env bash
# The Kotlin core's golden runner (docs/reference/bundle.md): compiles the core if needed, then
#   android_demo/core/run-golden.sh --bundle DIR --cases DIR --out FILE.json
# `edgevit app-check android` calls this from the repository root.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cp="$("$here/tools/build-core.sh" main)"
exec java -cp "$cp" dev.edgevit.core.GoldenRunner "$@"
