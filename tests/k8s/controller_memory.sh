#!/usr/bin/env bash
# piko-controller's memory with 20, 100 and 300 PikoClusters against a real
# control plane (tests/k8s/controller_memory.py does the work; see its header).
#
#   tests/k8s/controller_memory.sh [BUILD_DIR] [COUNTS]   (default build, 20,100,300)
#
# Runs in a network namespace of its own (unshare -n, as root), as
# tests/k8s/controller.sh does: the control plane's ports are its own.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
BIN=$(cd "$BUILD/bin" && pwd)/piko-controller
[ -x "$BIN" ] || { echo "controller-memory: $BIN not found (build first)" >&2; exit 1; }
hack/k8s/build.sh >/dev/null || { echo "controller-memory: hack/k8s/build.sh failed" >&2; exit 1; }
exec unshare --net -- bash -c '
	set -e
	ip link set lo up
	exec python3 tests/k8s/controller_memory.py "$@"
' _ "$BIN" ${2:+"$2"}
