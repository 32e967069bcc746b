#!/usr/bin/env bash
# Build the container images of piko and piko-controller, and the pod sandbox
# ("pause") image, offline, into OCI archives for `ctr images import`.
#
# Usage: hack/image.sh [--build DIR] [--out DIR]
#   --build DIR  CMake build tree, configured Release without tests
#                (default build-release)
#   --out DIR    where the archives go (default DIR/images of --build)
# Prints one "name path" line per image:
#   piko <out>/piko.oci.tar
#   piko-controller <out>/piko-controller.oci.tar
#   pause <out>/pause.oci.tar
#
# Why: no container registry and no Docker engine are reachable here, but the
# Debian mirror is. The images equal the Dockerfile's: the same bookworm
# runtime packages (read from the Dockerfile's RUNTIME_PACKAGES, so the two
# cannot drift), the same non-root user 65532, entrypoints, ports and labels.
# Each image has two layers: the base rootfs (mmdebstrap --variant=essential,
# slimmed), shared by both so containerd stores it once, and one small layer
# with the binary. The base layer is cached under
# ${PK_IMAGE_CACHE:-~/.cache/pikoc/images}, keyed by a hash of the package
# list, the mirrors and how it is built; a second run does not run mmdebstrap
# (PK_IMAGE_REFRESH=1 rebuilds it, e.g. for security updates).
#
# The pause image (registry.k8s.io/pause:3.10, the kubelet's sandbox image,
# which no registry here serves) is one layer holding hack/image/pause.c built
# static.
#
# Needs root (mmdebstrap --mode=root), mmdebstrap, python3, gcc (hack/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

build=build-release
out=
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "hack/image.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
out=${out:-$build/images}
cache=${PK_IMAGE_CACHE:-$HOME/.cache/pikoc/images}
mirror=${PK_IMAGE_MIRROR:-http://deb.debian.org/debian}
security=${PK_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
oci="python3 $repo/hack/image/oci.py"
log() { echo "hack/image.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- names: the version must be the one the manifests name ------------------
version=$(sed -n 's/^project([^)]*VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
version=${version:-0.1.0}
dockerfile_arg() { sed -n "s/^ARG $1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" Dockerfile; }
[ "$(dockerfile_arg VERSION)" = "$version" ] ||
	die "Dockerfile ARG VERSION is '$(dockerfile_arg VERSION)', CMakeLists.txt says $version"
piko_ref=ghcr.io/pikoc/piko:$version
ctl_ref=ghcr.io/pikoc/piko-controller:$version
pause_ref=registry.k8s.io/pause:3.10
grep -q "\"$piko_ref\"" controller/render.c || die "controller/render.c does not default to $piko_ref"
grep -q "image: $ctl_ref\$" crds/controller.yaml || die "crds/controller.yaml does not run $ctl_ref"
grep -q "^appVersion: \"$version\"" charts/piko-controller/Chart.yaml ||
	die "charts/piko-controller/Chart.yaml appVersion is not $version"
read -r -a pkgs <<<"$(dockerfile_arg RUNTIME_PACKAGES)"
[ ${#pkgs[@]} -gt 0 ] || die "no ARG RUNTIME_PACKAGES=\"...\" line in Dockerfile"

# --- binaries -----------------------------------------------------------------
t0=$(date +%s%N)
log "building piko, piko-controller in $build (Release)"
mkdir -p "$build" "$out"
work=$(mktemp -d "$out/.work.XXXXXX")
tmp=
trap 'rm -rf "$work" ${tmp:+"$tmp"}' EXIT
# Two runs at once (tests) share the build tree and the cache: one builds at a
# time, and the binaries are copied out under the lock.
(
	flock -w 1200 9 || die "timed out waiting for the lock on $build"
	hack/build.sh "$build" -DCMAKE_BUILD_TYPE=Release -DPK_TESTS=OFF
	strip --strip-unneeded -o "$work/piko" "$build/bin/piko"
	strip --strip-unneeded -o "$work/piko-controller" "$build/bin/piko-controller"
) 9>"$build/.image.lock"
gcc -static -Os -s -Wall -Wextra -Werror -o "$work/pause" hack/image/pause.c

# --- the base rootfs layer, cached ---------------------------------------------
# Everything that shapes the base goes into the key; bump "base-v2" when the
# mmdebstrap options or hooks below change.
sources=("deb $mirror $suite main" "deb $mirror $suite-updates main"
	"deb $security $suite-security main")
key=$(printf '%s\n' base-v2 "$(dpkg --print-architecture)" "$suite" "${pkgs[@]}" "${sources[@]}" |
	sha256sum | cut -c1-16)
base=$cache/base-$key
mkdir -p "$cache"
# Held to the end: a run with PK_IMAGE_REFRESH=1 cannot replace the base
# while another one reads it.
exec 8>"$cache/.lock"
flock -w 1200 8 || die "timed out waiting for the lock on $cache"
if [ "${PK_IMAGE_REFRESH:-0}" = 1 ]; then rm -rf "$base"; fi
if [ ! -f "$base/done" ]; then
	log "base rootfs: mmdebstrap $suite (${pkgs[*]}) into $base"
	tb=$(date +%s)
	rm -rf "$base"
	tmp=$(mktemp -d "$cache/.base.XXXXXX")
	inc=$(
		IFS=,
		echo "${pkgs[*]}"
	)
	# essential: the Essential: yes set (no apt), plus what we include.
	# The merged-usr hook installs usr-is-merged first: without it the
	# essential set's init-system-helpers pulls usrmerge and with it perl.
	# The slimming keeps copyright files; /etc/hostname and resolv.conf come
	# from the host during the build and from the runtime in a container.
	mmdebstrap --quiet --mode=root --variant=essential --format=tar \
		--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --include="$inc" \
		--aptopt='Acquire::Languages "none"' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-exclude=/usr/share/lintian/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/* "$1"/etc/hostname "$1"/etc/resolv.conf' \
		--customize-hook='echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin" >>"$1/etc/passwd"' \
		--customize-hook='echo "nonroot:x:65532:" >>"$1/etc/group"' \
		--customize-hook='mkdir -p "$1/home/nonroot" && chown 65532:65532 "$1/home/nonroot" && chmod 0750 "$1/home/nonroot"' \
		"$suite" "$tmp/rootfs.tar" "${sources[@]}" >"$tmp/mmdebstrap.log" 2>&1 || {
		tail -30 "$tmp/mmdebstrap.log" >&2
		die "mmdebstrap failed (log above)"
	}
	tar -tf "$tmp/rootfs.tar" | sed 's|^\./||' >"$tmp/files"
	$oci layer "$tmp/layer.tar.gz" --from-tar "$tmp/rootfs.tar" >"$tmp/layer.ids"
	rm "$tmp/rootfs.tar" "$tmp/mmdebstrap.log"
	chmod 0755 "$tmp"
	printf '%s\n' "${pkgs[@]}" >"$tmp/packages"
	touch "$tmp/done"
	mv -T "$tmp" "$base"
	tmp=
	log "base rootfs: built in $(($(date +%s) - tb)) s"
else
	log "base rootfs: cached $base"
fi
read -r _ base_diff _ <"$base/layer.ids"

# Every library the binaries load must be in the base (a new dependency in
# CMakeLists.txt needs its package in the Dockerfile's RUNTIME_PACKAGES).
for b in piko piko-controller; do
	for lib in $(objdump -p "$work/$b" | awk '/NEEDED/ {print $2}'); do
		grep -qE "^usr/lib/[^/]+-linux-gnu[^/]*/$lib\$" "$base/files" ||
			die "$b needs $lib, which no package of RUNTIME_PACKAGES in Dockerfile provides"
	done
done

# --- the images -------------------------------------------------------------------
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u -d "@${SOURCE_DATE_EPOCH:-0}" +%Y-%m-%dT%H:%M:%SZ)
config() { # title description entrypoint-json cmd-json ports-json
	python3 - "$@" "$version" "$revision" "$created" <<'EOF'
import json, sys
title, desc, entry, cmd, ports, version, revision, created = sys.argv[1:]
c = {
    "User": "65532:65532",
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "Entrypoint": json.loads(entry),
    "WorkingDir": "/home/nonroot",
    "ExposedPorts": {"%d/tcp" % p: {} for p in json.loads(ports)},
    "Labels": {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.description": desc,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.source": "https://github.com/pikoc/piko",
        "org.opencontainers.image.licenses": "MIT",
    },
}
if json.loads(cmd):
    c["Cmd"] = json.loads(cmd)
print(json.dumps({"created": created, "config": c, "history": [
    {"created": created, "created_by": "hack/image.sh: mmdebstrap bookworm base (Dockerfile RUNTIME_PACKAGES)"},
    {"created": created, "created_by": "hack/image.sh: COPY %s /usr/local/bin/" % title},
]}))
EOF
}

image() { # name ref title description entrypoint cmd ports
	local name=$1 ref=$2 ids
	ids=$($oci layer "$work/$name.layer.tar.gz" --file "$work/$name:/usr/local/bin/$name:0755")
	read -r _ diff _ <<<"$ids"
	$oci image "$out/$name.oci.tar" --name "$ref" \
		--layer "$base/layer.tar.gz:$base_diff" --layer "$work/$name.layer.tar.gz:$diff" \
		--config "$(config "$3" "$4" "$5" "$6" "$7")" >/dev/null
}
image piko "$piko_ref" piko \
	"Self-hosted tunnelling reverse proxy, an ngrok alternative (Piko in C)" \
	'["/usr/local/bin/piko"]' '["server"]' '[8000, 8001, 8002, 8003]'
image piko-controller "$ctl_ref" piko-controller \
	"Kubernetes operator for PikoCluster resources (Piko in C)" \
	'["/usr/local/bin/piko-controller"]' '[]' '[8081]'

ids=$($oci layer "$work/pause.layer.tar.gz" --file "$work/pause:/pause:0755")
read -r _ pause_diff _ <<<"$ids"
$oci image "$out/pause.oci.tar" --name "$pause_ref" --layer "$work/pause.layer.tar.gz:$pause_diff" \
	--config "{\"created\":\"$created\",\"config\":{\"User\":\"65535:65535\",\"Entrypoint\":[\"/pause\"],\"WorkingDir\":\"/\"}}" >/dev/null

ms=$((($(date +%s%N) - t0) / 1000000))
log "done in $((ms / 1000)).$((ms % 1000 / 100)) s"
for n in piko piko-controller pause; do
	echo "$n $out/$n.oci.tar"
done
