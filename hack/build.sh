#!/usr/bin/env bash
# Configure and build into build/ (or $1 with extra CMake args after it),
# with warnings as errors (PK_WERROR; a plain cmake build has them off).
# Usage: hack/build.sh [builddir] [cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
"$(dirname "$0")/deps.sh"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPK_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)" -- --no-print-directory >/dev/null
