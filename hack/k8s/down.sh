#!/usr/bin/env bash
# Stop the control plane that hack/k8s/up.sh DIR started:
#
#   hack/k8s/down.sh DIR
#
# In reverse order of start (controller-manager, apiserver, etcd): SIGTERM,
# wait up to PK_K8S_STOP_TIMEOUT seconds (default 15), then SIGKILL and wait
# up to 5 s more. Only the processes listed in DIR/pids, and only while they
# still run the binary recorded there (a recycled pid is left alone). Leaves
# DIR's files (logs, PKI, etcd data) for the caller to keep or remove.
# Exit 0 when none of them is left running, 1 otherwise.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1
PIDS=$DIR/pids
GRACE=${PK_K8S_STOP_TIMEOUT:-15}

log() { echo "k8s-down: $*" >&2; }

[ -f "$PIDS" ] || { log "nothing to stop ($PIDS not found)"; exit 0; }

# Running (not gone, not a zombie) and still the binary we started.
ours() { # pid, binary
	[ -r "/proc/$1/stat" ] || return 1
	local st exe
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ] || return 1
	exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
	# Between fork and exec the process is still setsid (see up.sh's start).
	[ "${exe% (deleted)}" = "$2" ] || [ "$(basename "$exe")" = setsid ]
}

wait_gone() { # pid, binary, seconds
	local end=$((SECONDS + $3))
	while ours "$1" "$2"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.1
	done
}

status=0
# Reverse order of start.
while read -r name pid binary; do
	[ -n "$pid" ] || continue
	if ! ours "$pid" "$binary"; then
		continue
	fi
	kill -TERM "$pid" 2>/dev/null || true
	if wait_gone "$pid" "$binary" "$GRACE"; then
		log "stopped $name (pid $pid)"
		continue
	fi
	log "$name (pid $pid) still running after ${GRACE}s; SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" "$binary" 5; then
		log "$name (pid $pid) did not exit"
		status=1
	fi
done < <(tac "$PIDS")

[ $status != 0 ] || rm -f "$PIDS"
exit $status
