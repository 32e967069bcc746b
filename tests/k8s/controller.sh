#!/usr/bin/env bash
# End-to-end tests of piko-controller against a real control plane
# (tests/k8s/controller_e2e.py does the work; see its header).
#
#   tests/k8s/controller.sh [BUILD_DIR]     (default build)
#
# Runs everything in a network namespace of its own (unshare -n, as root):
# the EndpointSlice API refuses loopback addresses, so the nodes the
# controller pushes member sets to (real `piko server`s from the same build,
# which then link and forward) listen on 10.250.0.x addresses added to the
# namespace's own lo. Nothing outside the namespace is touched, and two runs
# at once do not see each other's ports.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
BIN=$(cd "$BUILD/bin" && pwd)/piko-controller
PIKO=$(dirname "$BIN")/piko
for b in "$BIN" "$PIKO"; do
	[ -x "$b" ] || { echo "controller-e2e: $b not found (build first)" >&2; exit 1; }
done
bins=$(hack/k8s/build.sh) || { echo "controller-e2e: hack/k8s/build.sh failed" >&2; exit 1; }
exec unshare --net -- bash -c '
	set -e
	ip link set lo up
	for i in 2 3 4; do ip addr add 10.250.0.$i/32 dev lo; done
	exec python3 tests/k8s/controller_e2e.py "$1" "$2"
' _ "$BIN" "$PIKO"
