#!/usr/bin/env bash
# Run a command in a sandbox that can hold a whole Kubernetes test bed with a
# real node (hack/k8s/up.sh + hack/k8s/node-up.sh) and still leave the host
# as it found it, however the command ends:
#
#   hack/k8s/sandbox.sh [--check] COMMAND [ARGS...]
#
# The command runs as PID 1's child in new network, mount and PID namespaces
# (unshare, as root):
#   - network: only lo and a link `pk-node` (one end of a veth) holding the node's address
#     PK_K8S_NODE_IP (default 10.250.1.1/24). The CNI bridge, the pods' veths,
#     kube-proxy's nftables rules, the kubelet's iptables chains and the
#     net.* sysctls the bridge plugin sets all live in it and die with it;
#     every port is free, so two sandboxes run side by side.
#   - mount (private propagation): a tmpfs on /run (containerd's shim
#     sockets, /run/netns) and an overlay on /var/lib whose writes go to the
#     sandbox directory (the kubelet's fixed /var/lib/kubelet/device-plugins,
#     CNI's /var/lib/cni); containerd's overlay mounts and the kubelet's
#     volume mounts never reach the host's mount table.
#   - PID: when the command exits (or is killed), the kernel kills every
#     process left in the namespace: kubelet, containerd, shims, pods.
#   - the kernel-wide sysctls the kubelet sets at start (kernel.panic,
#     kernel.panic_on_oops, vm.overcommit_memory) are files of the sandbox's
#     own, bind-mounted over /proc/sys in the mount namespace.
# What namespaces cannot hold is undone here afterwards, always (EXIT trap):
# the cgroup tree PK_K8S_CGROUP_ROOT (a fresh name per sandbox, passed to
# the command; node-up.sh makes the kubelet put every pod under it) is
# removed from every hierarchy.
#
# With --check the host's state is recorded before and compared after:
# processes of the test bed's programs, the mount table, network links,
# iptables and nftables rules, top-level cgroups, those sysctls, and
# /var/lib/kubelet, /var/lib/cni, /run/containerd. Any difference is printed
# and makes the exit status 3 (otherwise the command's own status).
#
# Environment passed to the command: PK_K8S_SANDBOX (the sandbox directory,
# removed afterwards unless PK_K8S_KEEP=1), PK_K8S_NODE_IP,
# PK_K8S_CGROUP_ROOT.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
log() { echo "k8s-sandbox: $*" >&2; }
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory)

# ---- inside the namespaces (re-executed by unshare below)
if [ "${1:-}" = --inside ]; then
	shift
	mount --make-rprivate /
	ip link set lo up
	# A veth pair with both ends here (this kernel has no dummy links): an
	# ordinary interface with carrier, which the kubelet takes as the node's.
	ip link add pk-node type veth peer name pk-node-peer
	ip addr add "$PK_K8S_NODE_IP/24" dev pk-node
	ip link set pk-node-peer up
	ip link set pk-node up
	mount -t tmpfs -o mode=755 tmpfs /run
	mkdir -p "$PK_K8S_SANDBOX/varlib/upper" "$PK_K8S_SANDBOX/varlib/work"
	mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$PK_K8S_SANDBOX/varlib/upper,workdir=$PK_K8S_SANDBOX/varlib/work" /var/lib
	# The kubelet sets these kernel-wide sysctls at start (they are not
	# per-namespace): it gets a file of its own in their place, so another
	# sandbox, or the host, never sees its values.
	mkdir -p "$PK_K8S_SANDBOX/sysctl"
	for s in "${SYSCTLS[@]}"; do
		f=/proc/sys/${s//.//}
		cat "$f" >"$PK_K8S_SANDBOX/sysctl/$s"
		mount --bind "$PK_K8S_SANDBOX/sysctl/$s" "$f"
	done
	# Not exec: this shell stays PID 1 of the namespace and reaps orphans;
	# when it returns, the kernel kills whatever is left.
	set +e
	"$@"
	exit $?
fi

check=0
if [ "${1:-}" = --check ]; then
	check=1
	shift
fi
[ $# -ge 1 ] || { echo "usage: $0 [--check] COMMAND [ARGS...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { log "needs root (namespaces, mounts, cgroups)"; exit 1; }

SANDBOX=$(mktemp -d /tmp/pikoc-sandbox.XXXXXX)
export PK_K8S_SANDBOX=$SANDBOX
export PK_K8S_NODE_IP=${PK_K8S_NODE_IP:-10.250.1.1}
export PK_K8S_CGROUP_ROOT=pikoc-${SANDBOX##*.}

# The host's state that a test bed could touch, one line per fact.
snapshot() {
	echo "## processes left in the sandbox's PID namespace"
	if [ -s "$SANDBOX.pidns" ]; then
		local p
		for p in /proc/[0-9]*; do
			[ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$(cat "$SANDBOX.pidns")" ] &&
				echo "${p#/proc/} $(cat "$p/comm" 2>/dev/null)"
		done
	fi
	# Only the kinds of mount a test bed makes (other work on the machine,
	# an image build say, may mount elsewhere meanwhile).
	echo "## mounts"
	awk '{ print $5, $9, $10 }' /proc/self/mountinfo |
		grep -E '^(/run/|/var/lib/|/sys/fs/cgroup/|/tmp/pikoc-sandbox)| (overlay|nsfs|shm) ' | sort
	echo "## links"
	ip -o link show | awk -F': ' '{ print $2 }' | sort
	echo "## iptables"
	for t in iptables-legacy-save iptables-nft-save ip6tables-legacy-save ip6tables-nft-save; do
		command -v $t >/dev/null && $t 2>/dev/null | grep -v '^#' | sed 's/\[[0-9:]*\]//'
	done
	echo "## nft"
	nft list ruleset 2>/dev/null
	echo "## cgroups"
	for h in /sys/fs/cgroup/*/; do
		find "$h" -mindepth 1 -maxdepth 1 -type d 2>/dev/null
	done | grep -v '/pikoc-' | sort
	for h in /sys/fs/cgroup/*/; do
		[ -d "$h$PK_K8S_CGROUP_ROOT" ] && echo "left: $h$PK_K8S_CGROUP_ROOT"
	done
	echo "## sysctls"
	sysctl "${SYSCTLS[@]}" net.ipv4.ip_forward 2>/dev/null
	echo "## paths"
	ls -d /var/lib/kubelet /var/lib/cni /run/containerd /run/netns 2>/dev/null || true
}

[ $check = 1 ] && (set +eo pipefail; snapshot) >"$SANDBOX.before"

cleanup() {
	# Killed ourselves: unshare --kill-child takes the namespace down with it.
	[ -z "${upid:-}" ] || kill -KILL "$upid" 2>/dev/null || true
	# The namespace's processes are gone once unshare returned (PID 1 died,
	# the kernel killed the rest); their cgroups empty a moment later.
	local h tries
	for h in /sys/fs/cgroup/*/; do
		[ -d "$h$PK_K8S_CGROUP_ROOT" ] || continue
		for tries in $(seq 50); do
			find "$h$PK_K8S_CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
			[ -d "$h$PK_K8S_CGROUP_ROOT" ] || break
			sleep 0.1
		done
		[ ! -d "$h$PK_K8S_CGROUP_ROOT" ] || log "could not remove cgroup $h$PK_K8S_CGROUP_ROOT"
	done
	if [ "${PK_K8S_KEEP:-0}" = 1 ]; then
		log "kept $SANDBOX"
	else
		# Files made by root inside containers may be read-only to us.
		chmod -R u+w "$SANDBOX" 2>/dev/null || true
		rm -rf "$SANDBOX"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The cgroup root the kubelet's pods go under must exist in every hierarchy
# before it starts (the kubelet refuses a missing cgroupRoot).
for h in /sys/fs/cgroup/*/; do
	case $h in */unified/) continue ;; esac
	mkdir -p "$h$PK_K8S_CGROUP_ROOT"
done

set +e
unshare --net --mount --propagation private --pid --fork --mount-proc --kill-child -- \
	"$HERE/sandbox.sh" --inside "$@" &
upid=$!
# unshare's forked child is the namespace's PID 1: its PID namespace names
# every process the sandbox ever ran (the check looks for any left).
for _ in $(seq 100); do
	c=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null | awk '{ print $1 }')
	[ -n "$c" ] && readlink "/proc/$c/ns/pid" >"$SANDBOX.pidns" 2>/dev/null && break
	sleep 0.05
done
wait $upid
rc=$?
set -e
# The kernel kills what was left in the PID namespace when its PID 1 died;
# they may take a moment to go.
in_pidns() {
	local p ns
	[ -s "$SANDBOX.pidns" ] || return 1
	ns=$(cat "$SANDBOX.pidns")
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] && return 0
	done
	return 1
}
for _ in $(seq 100); do
	in_pidns || break
	sleep 0.1
done
if [ $check = 1 ]; then
	cleanup
	trap - EXIT
	(set +eo pipefail; snapshot) >"$SANDBOX.after"
	if ! diff -u "$SANDBOX.before" "$SANDBOX.after" >"$SANDBOX.diff"; then
		log "the host is not as it was before (- before, + after):"
		cat "$SANDBOX.diff" >&2
		rm -f "$SANDBOX.before" "$SANDBOX.after" "$SANDBOX.diff" "$SANDBOX.pidns"
		exit 3
	fi
	log "host unchanged: processes, mounts, links, iptables, nftables, cgroups, sysctls, paths"
	rm -f "$SANDBOX.before" "$SANDBOX.after" "$SANDBOX.diff" "$SANDBOX.pidns"
fi
rm -f "$SANDBOX.pidns"
exit $rc
