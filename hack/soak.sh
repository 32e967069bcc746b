#!/usr/bin/env bash
# The soak (docs/soak.md): an ASan+UBSan build of piko under a steady mixed
# load on loopback for DURATION (a 2-node cluster, HTTP and TCP agents
# restarted, SIGKILLed and expiring, keep-alive and new-connection HTTP,
# WebSocket sessions, `piko forward` transfers), RSS and fds of every
# process sampled every 10 s. Exits non-zero on any failed request, exit
# code, sanitizer report, or RSS/fd slope above its threshold.
# Not part of hack/test.sh.
#
# Usage: hack/soak.sh [--build DIR] [--out DIR] [driver flags...] DURATION
#   DURATION   e.g. 1h, 10m, 90s
#   --build D  use the existing (sanitized) build in D instead of building
#              build-soak/ here (e.g. a build of a snapshot of the tree)
#   --out D    where logs, samples.csv and summary.json go (default: a new
#              directory in /tmp)
# Other flags go to tests/soak/soak.py (--rate, --rotate-every,
# --kill-fraction, --sample-every, --seed; see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."

build=""
args=()
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--build=*) build=${1#--build=}; shift ;;
	-h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
	*) args+=("$1"); shift ;;
	esac
done
[ ${#args[@]} -gt 0 ] || { echo "usage: hack/soak.sh [--build DIR] [--out DIR] DURATION" >&2; exit 2; }

hack/deps.sh
if [ -z "$build" ]; then
	build=build-soak
	hack/build.sh "$build" -DPK_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
fi
[ -x "$build/bin/piko" ] || { echo "hack/soak.sh: no $build/bin/piko" >&2; exit 1; }
if ! grep -q '^PK_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
	echo "hack/soak.sh: $build is not a PK_SANITIZE=ON build: no leak check possible" >&2
	exit 1
fi
exec python3 tests/soak/soak.py --bin "$build/bin/piko" "${args[@]}"
