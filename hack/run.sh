#!/usr/bin/env bash
# Build, then run `piko server` on its defaults (proxy :8000, upstream :8001,
# admin :8002). Extra arguments go to `piko server`.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/build.sh build
exec build/bin/piko server "$@"
