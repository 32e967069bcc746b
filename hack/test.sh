#!/usr/bin/env bash
# Build and run every test (after clang-format and the clang static
# analyzer): unit tests (cmocka), fuzz-corpus replays, the
# integration suite on loopback (with the interop tests against the real Piko,
# built by hack/peers.sh into ~/.cache/pikoc), the Kubernetes smoke test,
# piko-controller's end-to-end tests and the Helm chart's tests
# (charts/piko-controller) against a real control plane (built by
# hack/k8s/build.sh), the agent's chart, the container images, and the
# user's story on real pods (a kubelet node in a sandbox), the Debian
# package in a fresh Debian root; then the unit,
# integration and controller tests again under ASan+UBSan; then a short
# libFuzzer run of each harness.
# Environment: PK_TEST_QUICK=1 skips the sanitizer pass and the fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "dependencies (installed when missing, then every tool and toolchain feature probed)"
hack/deps.sh --check
step "build (RelWithDebInfo)"
hack/build.sh build
step "the builds users make (Debug, MinSizeRel, Debian's packaging flags): no warning"
tests/builds.sh
# The benchmark tools are not tests, but they must keep compiling (-Werror).
cmake --build build --target pk_openloop pk_upstream pk_bulk -- --no-print-directory >/dev/null
step "clang-format check"
hack/format.sh --check
step "clang static analyzer (scan-build): no finding"
hack/scan.sh
step "Go test peers (the real Piko, the SDK program)"
peers=$(hack/peers.sh)
echo "$peers"
peer() { awk -v n="$1" '$1 == n { print $2 }' <<<"$peers"; }
interop=(--piko-peer "$(peer piko)" --sdk-peer "$(peer sdkpeer)" --require-peers)
step "unit tests and corpus replays"
ctest --test-dir build --output-on-failure -j"$(nproc)"
step "integration tests"
python3 tests/integration/run.py --bin build/bin/piko "${interop[@]}"
step "Kubernetes test bed (etcd, kube-apiserver, kube-controller-manager on loopback)"
tests/k8s/smoke.sh
step "piko-controller end to end (real control plane, own network namespace)"
tests/k8s/controller.sh build
step "piko-controller memory with 20, 100, 300 PikoClusters (<= 30 KiB each, <= 20 MiB over the baseline at 300)"
tests/k8s/controller_memory.sh build
step "Helm chart charts/piko-controller (lint, schema, template, install/upgrade/uninstall on a real control plane)"
tests/k8s/helm.sh build
step "Helm chart charts/piko-agent (lint, schema, rendering, PodSecurity restricted, install/upgrade/uninstall, the rendered config run by the real agent)"
tests/k8s/helm_agent.sh build
step "the user's story on real pods (images, operator, PikoCluster, agent chart, scaling and rolling under load; host left as found)"
tests/k8s/story.sh build
# After the story, which built the images (from the Debian mirror the first
# time): the sandbox has no network, and keeps containerd's fixed paths
# (/run/containerd) off the host.
step "container images (run in a private containerd with runc, in a sandbox)"
hack/k8s/sandbox.sh --check tests/k8s/image.sh
step "the Debian package (cpack; installed with apt into a fresh bookworm root, used, purged)"
tests/package.sh build-release

if [ "${PK_TEST_QUICK:-0}" != 1 ]; then
	step "build (ASan+UBSan)"
	hack/build.sh build-asan -DPK_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	step "unit tests under sanitizers"
	ctest --test-dir build-asan --output-on-failure -j"$(nproc)"
	step "integration tests under sanitizers"
	python3 tests/integration/run.py --bin build-asan/bin/piko --sanitized "${interop[@]}"
	step "piko-controller end to end under sanitizers"
	tests/k8s/controller.sh build-asan
	step "fuzz (libFuzzer, bounded)"
	hack/fuzz.sh 15
fi
step "all tests passed"
