#!/usr/bin/env bash
# Build a real Kubernetes control plane for the operator's tests into a cache
# outside the repository, idempotently (a second run builds nothing), and
# print where each program is, one "name path" line each:
#
#   etcd <path>                     go.etcd.io/etcd/server/v3
#   kube-apiserver <path>           k8s.io/kubernetes/cmd/kube-apiserver
#   kube-controller-manager <path>  k8s.io/kubernetes/cmd/kube-controller-manager
#   kubectl <path>                  k8s.io/kubernetes/cmd/kubectl
#   kube-scheduler <path>           k8s.io/kubernetes/cmd/kube-scheduler  (the test node:
#   kubelet <path>                  k8s.io/kubernetes/cmd/kubelet          hack/k8s/node-up.sh)
#   kube-proxy <path>               k8s.io/kubernetes/cmd/kube-proxy
#   helm <path>                     helm.sh/helm/v4/cmd/helm
#
# They come from the wrapper modules under hack/k8s/mod/ (go.mod + go.sum
# committed, the go command checks every module against them); hack/k8s/pin.sh
# regenerates them to move a pin. Pins (reference kubernetes.md §3.2, F2-F4):
#
#   Kubernetes v1.36.3 with its staging modules at v0.36.3 (replace directives
#     in mod/kubernetes/go.mod); builds with Go 1.26. Neighbours if a release
#     is not served: v1.35.4, v1.37.2 (needs GOTOOLCHAIN=go1.27.3).
#   etcd v3.6.16: Kubernetes >= 1.35 wants etcd >= 3.5.13 (RequestWatchProgress)
#     and kubeadm/kops pair 1.34+ with 3.6.x. Neighbours: v3.6.13-15.
#   helm v4.3.1 (helm.sh/helm/v4). Neighbour: helm.sh/helm/v3 v3.22.0.
#   (See the PINS note at the end of this file for what the proxy served.)
#
# The Kubernetes binaries get the version stamps that Kubernetes' own build
# sets with -ldflags (otherwise /version says v0.0.0-master and clients that
# check the server's version, helm's kubeVersion for one, refuse it).
#
# Cache: $CACHE/k8s-<kubernetes version>-<hash of the wrapper modules>/bin;
# module and build caches in $CACHE/gomod and $CACHE/gobuild, as
# hack/peers.sh does. Builds run under `nice -n 19` (a build on an idle
# machine is not slowed by it).
#
# Environment: PK_K8S_CACHE overrides the cache (default ~/.cache/pikoc).
set -euo pipefail
cd "$(dirname "$0")"

GO=${GO:-/usr/local/go/bin/go}
CACHE=${PK_K8S_CACHE:-$HOME/.cache/pikoc}
MOD=mod

[ -x "$GO" ] || { echo "k8s-build: Go not found at $GO" >&2; exit 1; }

# Module and build caches outside the repository; the machine's own Go, never
# a toolchain download; exactly the committed go.mod/go.sum.
export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gobuild GOTOOLCHAIN=local
export GOFLAGS=-mod=readonly CGO_ENABLED=0

# The version a wrapper module requires of a module ("" if none).
required() { # go.mod, module
	awk -v m="$2" '$0 !~ /=>/ { for (i = 1; i < NF; i++)
		if ($i == m && $(i + 1) ~ /^v[0-9]/) { print $(i + 1); exit } }' "$1"
}

K=$(required $MOD/kubernetes/go.mod k8s.io/kubernetes)
[ -n "$K" ] || { echo "k8s-build: no k8s.io/kubernetes in $MOD/kubernetes/go.mod" >&2; exit 1; }
HELM_MOD=$(grep -o 'helm\.sh/helm/v[0-9]*' $MOD/helm/go.mod | head -n1)
HELM_V=$(required $MOD/helm/go.mod "$HELM_MOD")

major=${K#v}; major=${major%%.*}
minor=${K#v*.}; minor=${minor%%.*}
kube_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	kube_ldflags+=" -X $p.gitVersion=$K -X $p.gitMajor=$major -X $p.gitMinor=$minor"
	kube_ldflags+=" -X $p.gitTreeState=clean"
done
helm_ldflags="-s -w -X $HELM_MOD/internal/version.version=$HELM_V"

# Keyed by the Kubernetes version and a hash of every wrapper module file and
# of the link flags, so moving a pin builds anew and an unchanged tree does
# nothing.
key=$( (cat $MOD/*/go.mod $MOD/*/go.sum; echo "$kube_ldflags $helm_ldflags") |
	sha256sum | cut -c1-12)
OUT=$CACHE/k8s-$K-$key/bin

build() { # name, wrapper module dir, package, ldflags
	local name=$1 dir=$2 pkg=$3 ldflags=$4 out=$OUT/$1 t0 t1
	if [ ! -x "$out" ]; then
		echo "k8s-build: building $name ($pkg) into $out" >&2
		mkdir -p "$OUT"
		t0=$(date +%s)
		(cd "$MOD/$dir" && nice -n 19 "$GO" build -trimpath -ldflags="$ldflags" \
			-o "$out.tmp" "$pkg") >&2
		mv "$out.tmp" "$out"
		t1=$(date +%s)
		echo "k8s-build: built $name in $((t1 - t0))s" >&2
		echo "$name $((t1 - t0))s $(date -u +%FT%TZ)" >>"$OUT/../build-times"
	fi
	echo "$name $out"
}

build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
build kubectl kubernetes k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
build kube-scheduler kubernetes k8s.io/kubernetes/cmd/kube-scheduler "$kube_ldflags"
build kubelet kubernetes k8s.io/kubernetes/cmd/kubelet "$kube_ldflags"
build kube-proxy kubernetes k8s.io/kubernetes/cmd/kube-proxy "$kube_ldflags"
build helm helm "$HELM_MOD/cmd/helm" "$helm_ldflags"

# PINS: all three first choices were served by the Go module proxy
# (2026-11-29) and build with Go 1.26.8; no neighbour was needed:
#   k8s.io/kubernetes v1.36.3 + 31 staging modules at v0.36.3 (go 1.26.0,
#     godebug default=go1.26, copied into the wrapper by pin.sh)
#   go.etcd.io/etcd/server/v3 v3.6.16 (go 1.26.0)
#   helm.sh/helm/v4 v4.3.1 (go 1.26.0; it brings its own client-go v0.37.1)
# First build on the 2-core machine, under nice while other work ran:
#   etcd 32 s, kube-apiserver 284 s, kube-controller-manager 74 s (after the
#   apiserver: shared packages cached), kubectl 26 s, helm 179 s; about 10
#   minutes in all. Adds ~340 MB of binaries, ~1.8 GB to $CACHE/gomod and
#   ~4 GB to $CACHE/gobuild.
