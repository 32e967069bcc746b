#!/usr/bin/env bash
# The container images, run for real: hack/image.sh builds the piko,
# piko-controller and pause images offline, then a private containerd (its
# own root, state and sockets under a mktemp dir; the CRI plugin disabled,
# ctr needs none of it) imports them and runc runs them:
#   - the three names are listed, the base layer is stored once;
#   - piko --version, piko-controller --version and --help exit 0;
#   - pause exits 0 on SIGTERM;
#   - piko server from the image's own Entrypoint/Cmd, in the fresh network
#     namespace runc makes for it (no host port is used), answers /ready on
#     the admin port (curl from the host through nsenter into that netns) and
#     runs as uid/gid 65532 (read from /proc) on epoll (an eventpoll fd: the
#     libev plugin lws dlopen()s is in the image);
#   - prints image sizes (archive, unpacked snapshots) and the start time from
#     `ctr run` to /ready 200 (median of 3).
# Then tears everything down (tasks, containers, containerd by PID, its shims
# by their -address, mounts, the dir, runc's and the cgroups' per-namespace
# dirs) and checks nothing is left. Two runs at once do not meet: own dir,
# sockets, containerd namespace. Needs root, containerd, runc, curl, nsenter.
#
#   tests/k8s/image.sh [BUILD_DIR]     (default build-release, see hack/image.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-release}
say() { echo "k8s image: $*"; }
die() {
	say "FAIL: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || die "needs root (containerd, runc)"
for t in containerd containerd-shim-runc-v2 runc ctr curl nsenter findmnt flock; do
	command -v "$t" >/dev/null || die "$t not found (hack/deps.sh installs it)"
done

dir=$(mktemp -d /tmp/pkimg.XXXXXX)
ns=pkimg-$(basename "$dir" | cut -d. -f2 | tr 'A-Z' 'a-z')
sock=$dir/ctd.sock
ctd_pid=
C() { timeout 60 ctr --address "$sock" --namespace "$ns" "$@"; }

teardown() {
	local rc=$? left
	set +e
	if [ -n "$ctd_pid" ] && kill -0 "$ctd_pid" 2>/dev/null; then
		for id in $(C containers ls -q 2>/dev/null); do
			C task kill -s SIGKILL "$id" >/dev/null 2>&1
			C task delete -f "$id" >/dev/null 2>&1
			C containers delete "$id" >/dev/null 2>&1
		done
		kill -TERM "$ctd_pid"
		for _ in $(seq 100); do kill -0 "$ctd_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$ctd_pid" 2>/dev/null
		wait "$ctd_pid" 2>/dev/null
	fi
	# Shims outlive containerd by design: ours are the ones with our -address.
	for pid in $(pgrep -f -- "-address $sock( |\$)"); do kill -KILL "$pid"; done
	for _ in $(seq 50); do pgrep -f -- "$sock" >/dev/null || break; sleep 0.1; done
	findmnt -rn -o TARGET | grep -F "$dir/" | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
	rm -rf "$dir"
	rm -rf "/run/containerd/runc/$ns"
	for cg in /sys/fs/cgroup/*/"$ns"; do [ -d "$cg" ] && rmdir "$cg"; done
	left=
	pgrep -af -- "$sock" && left="processes with $sock"
	findmnt -rn -o TARGET | grep -qF "$dir/" && left="$left mounts under $dir"
	[ -e "$dir" ] && left="$left $dir"
	ls -d /sys/fs/cgroup/*/"$ns" 2>/dev/null && left="$left cgroups $ns"
	if [ -n "$left" ]; then
		say "FAIL: teardown left $left" >&2
		rc=1
	fi
	[ "$rc" = 0 ] && say "ok" || say "FAILED (rc $rc)" >&2
	exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- (a) the images -------------------------------------------------------------
t0=$(date +%s%N)
lines=$(hack/image.sh --build "$BUILD" --out "$dir/images") || die "hack/image.sh failed"
say "hack/image.sh: $(((($(date +%s%N) - t0) / 1000000))) ms"
declare -A arch
while read -r name path; do arch[$name]=$path; done <<<"$lines"
for n in piko piko-controller pause; do
	[ -f "${arch[$n]:-}" ] || die "hack/image.sh printed no archive for $n"
done
version=$(sed -n 's/^project([^)]*VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
version=${version:-0.1.0}
piko_ref=ghcr.io/pikoc/piko:$version
ctl_ref=ghcr.io/pikoc/piko-controller:$version
pause_ref=registry.k8s.io/pause:3.10

# --- (b) a private containerd ------------------------------------------------------
mkdir -p "$dir/root" "$dir/state" "$dir/opt"
cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
ctd_pid=$!
for _ in $(seq 100); do
	C version >/dev/null 2>&1 && break
	kill -0 "$ctd_pid" 2>/dev/null || { tail -20 "$dir/containerd.log" >&2; die "containerd exited"; }
	sleep 0.1
done
C version >/dev/null 2>&1 || { tail -20 "$dir/containerd.log" >&2; die "containerd not up in 10 s"; }
say "containerd up (pid $ctd_pid, $sock, namespace $ns)"

# --- (c) import ----------------------------------------------------------------------
for n in piko piko-controller pause; do
	t0=$(date +%s%N)
	C images import "${arch[$n]}" >/dev/null || die "ctr images import ${arch[$n]}"
	say "imported $n in $(((($(date +%s%N) - t0) / 1000000))) ms"
done
names=$(C images ls -q)
for ref in "$piko_ref" "$ctl_ref" "$pause_ref"; do
	grep -qxF "$ref" <<<"$names" || die "ctr images ls lacks $ref (has: $(echo $names))"
done
say "images listed: $(echo $names)"
# Both images' first layer is the same base: one snapshot for it, one on it
# for each binary, one for pause.
nsnap=$(C snapshots --snapshotter overlayfs ls | grep -c ' Committed *$' || true)
[ "$nsnap" = 4 ] || die "expected 4 committed snapshots (a shared base), got $nsnap"

# --- (d) run them ---------------------------------------------------------------------
run() { # id image cmd...: ctr run --rm, prints output, returns its exit status
	local id=$1 img=$2
	shift 2
	timeout 60 ctr --address "$sock" --namespace "$ns" run --rm "$img" "$id" "$@"
}
v=$(run v1 "$piko_ref" /usr/local/bin/piko --version) || die "piko --version exited $?"
[ "$v" = "$version" ] || die "piko --version printed '$v', want $version"
v=$(run v2 "$ctl_ref" /usr/local/bin/piko-controller --version) || die "piko-controller --version exited $?"
[ "$v" = "piko-controller $version" ] || die "piko-controller --version printed '$v'"
h=$(run v3 "$ctl_ref" /usr/local/bin/piko-controller --help) || die "piko-controller --help exited $?"
grep -q "^Usage: piko-controller" <<<"$h" || die "piko-controller --help printed no usage"
say "piko --version, piko-controller --version/--help: ok ($version)"

# pause: runs until SIGTERM, then exits 0.
run p1 "$pause_ref" >"$dir/pause.out" 2>&1 &
prun=$!
for _ in $(seq 100); do
	C task ls 2>/dev/null | grep -qE "^p1 +[0-9]+ +RUNNING" && break
	sleep 0.1
done
C task ls | grep -qE "^p1 +[0-9]+ +RUNNING" || die "pause not running after 10 s"
ppid_=$(C task ls | awk '$1 == "p1" {print $2}')
grep -q "^Uid:.65535" "/proc/$ppid_/status" || die "pause does not run as 65535"
C task kill -s SIGTERM p1
rc=0
wait "$prun" || rc=$?
[ "$rc" = 0 ] || die "pause exited $rc on SIGTERM ($(cat "$dir/pause.out"))"
say "pause: runs as 65535, exits 0 on SIGTERM"

# piko server, three times: start to /ready, and its uid.
times=()
for i in 1 2 3; do
	id=server$i
	t0=$(date +%s%N)
	C run -d "$piko_ref" "$id" >/dev/null || die "ctr run -d $id"
	pid=
	code=
	for _ in $(seq 1000); do
		[ -n "$pid" ] || pid=$(C task ls | awk -v id="$id" '$1 == id && $3 == "RUNNING" {print $2}')
		if [ -n "$pid" ]; then
			code=$(nsenter --net="/proc/$pid/ns/net" curl -s -o /dev/null -w '%{http_code}' \
				--max-time 1 http://127.0.0.1:8002/ready || true)
			[ "$code" = 200 ] && break
		fi
		sleep 0.01
	done
	[ "$code" = 200 ] || die "piko server ($id) not ready in 10 s (last code '$code')"
	ms=$((($(date +%s%N) - t0) / 1000000))
	times+=("$ms")
	if [ "$i" = 1 ]; then
		grep -qE "^Uid:\s+65532\s+65532\s+65532\s+65532" "/proc/$pid/status" ||
			die "piko server runs as $(grep -E '^(Uid|Gid)' "/proc/$pid/status" | tr '\n' ' ')"
		grep -qE "^Gid:\s+65532\s+65532\s+65532\s+65532" "/proc/$pid/status" || die "piko server gid is not 65532"
		cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
		[ "$cmd" = "/usr/local/bin/piko server " ] || die "piko server's command line is '$cmd'"
		cwd=$(readlink "/proc/$pid/cwd")
		[ "$cwd" = /home/nonroot ] || die "piko server's cwd is $cwd"
		say "piko server: runs as 65532:65532, '/usr/local/bin/piko server' in /home/nonroot"
		# The epoll loop: lws's libev plugin is dlopen()ed, so only a
		# running server shows the image has it (else it warns and polls).
		find "/proc/$pid/fd" -lname 'anon_inode:\[eventpoll\]' | grep -q . ||
			die "piko server has no epoll descriptor: is libwebsockets-evlib-ev in the image?"
		say "piko server: runs on epoll (lws's libev plugin is in the image)"
	fi
	C task kill -s SIGTERM "$id"
	for _ in $(seq 100); do
		C task ls | grep -qE "^$id +[0-9]+ +STOPPED" && break
		sleep 0.1
	done
	C task ls | grep -qE "^$id +[0-9]+ +STOPPED" || die "piko server ($id) did not stop on SIGTERM in 10 s"
	C task delete "$id" >/dev/null
	C containers delete "$id"
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
say "piko server: ctr run to /ready 200: ${times[*]} ms (median $median ms)"

# --- (e) sizes ------------------------------------------------------------------------------
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
chains() { # image ref: the chain IDs of its layers (its snapshots' keys)
	local target
	target=$(C images ls | awk -v r="$1" '$1 == r {print $3}')
	python3 - "$dir/root/io.containerd.content.v1.content/blobs/sha256" "$target" <<'EOF'
import hashlib, json, os, sys
blobs, digest = sys.argv[1:]
def load(d):
    with open(os.path.join(blobs, d.split(":")[1])) as f:
        return json.load(f)
m = load(digest)
if "manifests" in m:  # an index: its one manifest
    m = load(m["manifests"][0]["digest"])
ids = load(m["config"]["digest"])["rootfs"]["diff_ids"]
chain = ids[0]
print(chain)
for d in ids[1:]:
    chain = "sha256:" + hashlib.sha256((chain + " " + d).encode()).hexdigest()
    print(chain)
EOF
}
for n in piko piko-controller pause; do
	case $n in
	piko) ref=$piko_ref ;;
	piko-controller) ref=$ctl_ref ;;
	pause) ref=$pause_ref ;;
	esac
	size=$(stat -c %s "${arch[$n]}")
	unpacked=0
	for chain in $(chains "$ref"); do
		b=$(C snapshots --snapshotter overlayfs usage -b "$chain" | awk 'NR == 2 {print $2}')
		[ -n "$b" ] || die "no snapshot $chain of $ref"
		unpacked=$((unpacked + b))
	done
	say "size $ref: archive $(mib "$size"), unpacked $(mib "$unpacked") ($(chains "$ref" | wc -l) layers)"
done
