#!/usr/bin/env bash
# Build the Go test peers into a cache outside the repository, idempotently
# (a second run builds nothing), and print where they are:
#
#   piko <path>      the real Piko (server, agent, forward), pinned below
#   sdkpeer <path>   tests/interop/gopeers: a program on Piko's Go SDK
#
# Both come from one Go module, tests/interop/gopeers, whose go.mod pins Piko
# (as a `tool` dependency, so `go build` can build its main package) and whose
# go.sum is committed; the go command checks every module against it.
#
# Pin: Piko v0.9.x is what we match, but the Go module proxy here serves
# github.com/andydunstall/piko only at v0.7.0 and v0.10.0 (v0.8.x and v0.9.x
# answer 403), so the pin is v0.10.0: the same wire protocol (yamux v0.1.6
# fork, same WebSocket paths and JSON errors), flags and YAML keys as v0.9.
#
# Environment: PK_PEERS_DIR overrides the cache (default ~/.cache/pikoc).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-/usr/local/go/bin/go}
CACHE=${PK_PEERS_DIR:-$HOME/.cache/pikoc}
SRC=tests/interop/gopeers

[ -x "$GO" ] || { echo "peers: Go not found at $GO" >&2; exit 1; }

# Module and build caches outside the repository; the machine's own Go, never
# a toolchain download.
export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gobuild GOTOOLCHAIN=local
export GOFLAGS=-mod=readonly CGO_ENABLED=0

# Each output is keyed by a hash of what it is built from, so an edit rebuilds
# it and an unchanged tree does nothing.
build() { # name, package, files it is built from...
	local name=$1 pkg=$2 out
	shift 2
	out=$CACHE/$name-$(cat "$@" | sha256sum | cut -c1-16)/$name
	if [ ! -x "$out" ]; then
		echo "peers: building $name ($pkg) into $out" >&2
		mkdir -p "$(dirname "$out")"
		(cd "$SRC" && "$GO" build -trimpath -o "$out.tmp" "$pkg") >&2
		mv "$out.tmp" "$out"
	fi
	echo "$name $out"
}

build piko github.com/andydunstall/piko "$SRC"/go.mod "$SRC"/go.sum
build sdkpeer . "$SRC"/go.mod "$SRC"/go.sum "$SRC"/*.go
