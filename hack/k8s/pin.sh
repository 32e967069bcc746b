#!/usr/bin/env bash
# Regenerate the wrapper modules that hack/k8s/build.sh builds from:
#
#   hack/k8s/mod/kubernetes  kube-apiserver, kube-controller-manager, kubectl,
#                            kube-scheduler, kubelet, kube-proxy (the test node)
#   hack/k8s/mod/etcd        etcd
#   hack/k8s/mod/helm        helm
#
# Run it only to move a pin; its output (go.mod + go.sum of each) is
# committed, and build.sh builds from exactly that with -mod=readonly.
#
#   hack/k8s/pin.sh [KUBERNETES [ETCD [HELM_MODULE@HELM]]]
#   hack/k8s/pin.sh 1.36.3 3.6.16 helm.sh/helm/v4@v4.3.1        (the defaults)
#
# k8s.io/kubernetes is not meant to be a dependency (kubernetes#79384): its
# go.mod requires its staging modules (k8s.io/api, k8s.io/apiserver, ...) at
# the non-existent version v0.0.0. A consumer replaces each one with the real
# tag v0.<minor>.<patch>. The list is derived from the v0.0.0 requirements of
# the go.mod the Go module proxy serves (not from a replace block, which
# published go.mod files may not carry), so it follows the release.
#
# Each program gets its own module so one's dependency upgrades can't disturb
# another's build (helm depends on client-go too, at its own version).
#
# Environment: PK_K8S_CACHE overrides the cache (default ~/.cache/pikoc).
set -euo pipefail
cd "$(dirname "$0")"

K=${1:-1.36.3}
ETCD=${2:-3.6.16}
HELM=${3:-helm.sh/helm/v4@v4.3.1}
K=${K#v} ETCD=${ETCD#v}
S="v0.${K#1.}" # staging modules: 1.36.3 -> v0.36.3

GO=${GO:-/usr/local/go/bin/go}
CACHE=${PK_K8S_CACHE:-$HOME/.cache/pikoc}
export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gobuild GOTOOLCHAIN=local
export GOFLAGS=-mod=mod CGO_ENABLED=0

fresh() { # dir, module path
	rm -rf "$1"
	mkdir -p "$1"
	(cd "$1" && "$GO" mod init "$2" >/dev/null 2>&1)
}

# The wrapper asks for the Go its program asks for (not the newer patch
# release that happens to be installed); `go mod tidy` raises it if needed.
go_line() { # dir, module@version
	local m
	m=$(cd "$1" && "$GO" mod download -json "$2" | jq -r .GoMod)
	(cd "$1" && "$GO" mod edit -go="$(awk '$1 == "go" { print $2; exit }' "$m")")
}

echo "pin: kubernetes v$K (staging $S)" >&2
fresh mod/kubernetes github.com/pikoc/hack/k8s/kubernetes
gomod=$(cd mod/kubernetes && "$GO" mod download -json "k8s.io/kubernetes@v$K" | jq -r .GoMod)
[ -s "$gomod" ] || { echo "pin: no go.mod for k8s.io/kubernetes@v$K" >&2; exit 1; }
staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)
[ -n "$staging" ] || { echo "pin: no v0.0.0 staging requirements in $gomod" >&2; exit 1; }
(
	cd mod/kubernetes
	for m in $staging; do
		"$GO" mod edit -replace="$m=$m@$S"
	done
	# Keep the GODEBUG defaults Kubernetes builds its own binaries with.
	awk '/^godebug \(/ { b = 1; next } b && /^\)/ { b = 0; next }
		b && NF { print $1; next } $1 == "godebug" { print $2 }' "$gomod" | while read -r kv; do
		"$GO" mod edit -godebug="$kv"
	done
	go_line . "k8s.io/kubernetes@v$K"
	"$GO" get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K" \
		"k8s.io/kubernetes/cmd/kube-controller-manager@v$K" \
		"k8s.io/kubernetes/cmd/kubectl@v$K" \
		"k8s.io/kubernetes/cmd/kube-scheduler@v$K" \
		"k8s.io/kubernetes/cmd/kubelet@v$K" \
		"k8s.io/kubernetes/cmd/kube-proxy@v$K"
	"$GO" mod tidy
)

echo "pin: etcd v$ETCD" >&2
fresh mod/etcd github.com/pikoc/hack/k8s/etcd
(
	cd mod/etcd
	# go.etcd.io/etcd/server/v3 has its main package at the module root.
	go_line . "go.etcd.io/etcd/server/v3@v$ETCD"
	"$GO" get -tool "go.etcd.io/etcd/server/v3@v$ETCD"
	"$GO" mod tidy
)

echo "pin: helm $HELM" >&2
fresh mod/helm github.com/pikoc/hack/k8s/helm
(
	cd mod/helm
	go_line . "$HELM"
	"$GO" get -tool "${HELM%@*}/cmd/helm@${HELM#*@}"
	"$GO" mod tidy
)
echo "pin: done; now run hack/k8s/build.sh" >&2
