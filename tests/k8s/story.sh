#!/usr/bin/env bash
# The user's story end to end on real pods: our images, the operator, a
# PikoCluster, the agent's chart, requests and `piko forward` through it,
# scaling, a deleted pod and a rolling update under load, PodSecurity
# restricted, deletion (tests/k8s/story.py has the steps).
#
#   tests/k8s/story.sh [BUILD_DIR]      (default build: its bin/piko runs
#                                        `piko forward` on the node)
#
# Builds the images offline (hack/image.sh: piko, piko-controller, pause;
# tests/k8s/testapp.sh: the application behind the agent), then runs the
# story in hack/k8s/sandbox.sh --check: a control plane and a real node
# (containerd, kubelet, kube-proxy, cluster DNS) in namespaces of their own,
# and afterwards a check that the host has nothing left behind (processes,
# mounts, links, iptables/nftables rules, cgroups, sysctls). Exit 0 only if
# every step and the check passed. About 3 minutes once the images and the
# Kubernetes binaries are cached.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
PIKO=$(cd "$BUILD/bin" && pwd)/piko
[ -x "$PIKO" ] || { echo "story: $PIKO not found (build first)" >&2; exit 1; }
hack/k8s/build.sh >/dev/null

t0=$(date +%s)
images=$(hack/image.sh)
out=$(dirname "$(awk '$1 == "piko" { print $2 }' <<<"$images")")
testapp=$(tests/k8s/testapp.sh "$out" | awk '{ print $2 }')
echo "story: images built in $(($(date +%s) - t0))s:" $(awk '{ print $1 }' <<<"$images") testapp
exec hack/k8s/sandbox.sh --check python3 tests/k8s/story.py --piko "$PIKO" \
	--testapp "$testapp" $(awk '{ print $2 }' <<<"$images")
