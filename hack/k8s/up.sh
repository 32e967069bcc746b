#!/usr/bin/env bash
# Start a real Kubernetes control plane on loopback for tests:
#
#   hack/k8s/up.sh DIR      (stop it with hack/k8s/down.sh DIR)
#
# etcd, kube-apiserver and kube-controller-manager (built by
# hack/k8s/build.sh) on free 127.0.0.1 ports, with a PKI made by openssl in
# DIR/pki, state and logs in DIR. No kubelet and no scheduler: pods are
# created (by the StatefulSet controller, say) but stay Pending.
#
# Writes:
#   DIR/kubeconfig          admin (group system:masters), the current context
#   DIR/admin.token         a bearer token for the same admin (static token file)
#   DIR/env                 shell lines to source: KUBECONFIG, PATH, the URLs
#                           (`. DIR/env` with a path: `source env` finds /usr/bin/env)
#   DIR/pids                "name pid binary" of each process (down.sh reads it)
#   DIR/logs/*.log          each process's output
# Prints, once /readyz is ok and the default namespace and its service
# account exist:
#   etcd http://127.0.0.1:PORT
#   kube-apiserver https://127.0.0.1:PORT
#   kube-controller-manager https://127.0.0.1:PORT
#   kubeconfig DIR/kubeconfig
#   ready-seconds N.N
#
# Every wait is bounded (PK_K8S_TIMEOUT seconds for the whole start, default
# 120). PK_K8S_CONTROLLERS sets the controller-manager's --controllers
# (default '*'). PK_K8S_APISERVER_FLAGS adds flags to kube-apiserver's (split
# on spaces; e.g. --enable-admission-plugins=...). Instances in different DIRs run side by side (random free ports).
# Inside hack/k8s/sandbox.sh (PK_K8S_SANDBOX and PK_K8S_NODE_IP set) the
# control plane is ready for a real node (hack/k8s/node-up.sh DIR): the
# apiserver listens on every address of the sandbox's own network
# namespace and advertises the node's, so pods reach it through the
# `kubernetes` Service (its certificate names that address and 10.0.0.1);
# Node authorization is on, and it reaches kubelets (logs, exec) with a
# client certificate of its own.
# On failure it stops what it started, prints the logs' tails and exits 1;
# so it does on SIGINT/SIGTERM while starting (exit 130). The first run on a
# machine builds the binaries first (about 10 minutes; see build.sh).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
TIMEOUT=${PK_K8S_TIMEOUT:-120}
# Which controllers kube-controller-manager runs: '*' is all that are on by
# default (among them garbage-collector, statefulset, endpointslice,
# serviceaccount and serviceaccount-token); '*,-name' leaves one out.
CONTROLLERS=${PK_K8S_CONTROLLERS:-*}
NODE_IP=
if [ -n "${PK_K8S_SANDBOX:-}" ] && [ -n "${PK_K8S_NODE_IP:-}" ]; then
	NODE_IP=$PK_K8S_NODE_IP
fi

log() { echo "k8s-up: $*" >&2; }
die() { log "$*"; exit 1; }

for t in openssl python3 curl; do
	command -v $t >/dev/null || die "$t not found"
done

if [ -s "$DIR/pids" ]; then
	while read -r _ pid _; do
		[ -d "/proc/$pid" ] && die "$DIR already has a running control plane (pid $pid); run down.sh first"
	done <"$DIR/pids"
fi

bins=$("$HERE/build.sh")
bin() { awk -v n="$1" '$1 == n { print $2 }' <<<"$bins"; }
ETCD=$(bin etcd) APISERVER=$(bin kube-apiserver) KCM=$(bin kube-controller-manager)
KUBECTL=$(bin kubectl)
for b in "$ETCD" "$APISERVER" "$KCM" "$KUBECTL"; do
	[ -x "$b" ] || die "missing binary '$b' (hack/k8s/build.sh said: $bins)"
done

t_start=$(date +%s.%N)
deadline=$((SECONDS + TIMEOUT))

# ---- PKI (ECDSA P-256: fast to make, accepted everywhere it is used here)
pki() {
	local p=$DIR/pki
	rm -rf "$p"
	mkdir -p "$p"
	cd "$p"
	local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
	ca() { # name, common name
		openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=$2" \
			-addext basicConstraints=critical,CA:TRUE \
			-addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature \
			-keyout "$1.key" -out "$1.crt" 2>/dev/null
	}
	leaf() { # name, subject, extensions[, ca name]
		local ca=${4:-ca}
		openssl req "${ec[@]}" -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
		printf '%s\n' "$3" >"$1.ext"
		openssl x509 -req -in "$1.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
			-days 30 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
		rm -f "$1.csr" "$1.ext"
	}
	ca ca pikoc-test-ca
	# The front proxy (aggregation layer): the apiserver publishes this CA for
	# request-header authentication, which the controller-manager's own
	# delegated authentication expects to find (it complains without it).
	ca front-proxy-ca pikoc-test-front-proxy-ca
	leaf apiserver /CN=kube-apiserver "$(printf '%s\n' \
		'basicConstraints=critical,CA:FALSE' \
		'keyUsage=critical,digitalSignature' \
		'extendedKeyUsage=serverAuth' \
		"subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local${NODE_IP:+,IP:$NODE_IP}")"
	local client
	client=$(printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
		'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth')
	leaf admin '/O=system:masters/CN=pikoc-admin' "$client"
	leaf controller-manager /CN=system:kube-controller-manager "$client"
	[ -z "$NODE_IP" ] || leaf apiserver-kubelet-client '/O=system:masters/CN=kube-apiserver-kubelet-client' "$client"
	leaf front-proxy-client /CN=front-proxy-client "$client" front-proxy-ca
	# Service-account token signing key pair (apiserver signs, verifies).
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out sa.key 2>/dev/null
	openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
	# A static bearer token for the same admin (to test token auth).
	openssl rand -hex 24 >"$DIR/admin.token"
	printf '%s,pikoc-admin-token,pikoc-admin-token,system:masters\n' \
		"$(cat "$DIR/admin.token")" >tokens.csv
	chmod 600 ./*.key tokens.csv "$DIR/admin.token"
	cd - >/dev/null
}

kubeconfig() { # file, server, user, cert, key
	local b64='base64 -w0'
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pikoc-test
  cluster:
    server: $2
    certificate-authority-data: $($b64 "$DIR/pki/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $($b64 "$4")
    client-key-data: $($b64 "$5")
contexts:
- name: $3@pikoc-test
  context:
    cluster: pikoc-test
    user: $3
current-context: $3@pikoc-test
EOF
	chmod 600 "$1"
}

# Free loopback ports, below the ephemeral range so that outgoing
# connections (the apiserver's to etcd, say) can't have taken them.
free_ports() { # count
	python3 - "$1" <<'EOF'
import random, socket, sys
n, got, held = int(sys.argv[1]), [], []
rng = random.SystemRandom()
for _ in range(2000):
    if len(got) == n:
        break
    p = rng.randrange(20000, 32000)
    if p in got:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        s.listen(1)
    except OSError:
        s.close()
        continue
    held.append(s)
    got.append(p)
if len(got) != n:
    sys.exit("no free ports")
print(" ".join(map(str, got)))
EOF
}

start() { # name, binary, args... (detached: its own session, output to a log)
	local name=$1
	shift
	setsid "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
	echo "$name $! $1" >>"$DIR/pids"
}

pid_of() { awk -v n="$1" '$1 == n { print $2 }' "$DIR/pids"; }

alive() { # pid: running (not gone, not a zombie)
	[ -r "/proc/$1/stat" ] || return 1
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# Poll until the command succeeds; fail if the deadline passes or the named
# process exits.
wait_for() { # what, process name, command...
	local what=$1 name=$2 pid
	shift 2
	pid=$(pid_of "$name")
	until "$@" >/dev/null 2>&1; do
		alive "$pid" || { log "$name exited while waiting for $what"; return 1; }
		[ $SECONDS -lt $deadline ] || { log "timed out (${TIMEOUT}s) waiting for $what"; return 1; }
		sleep 0.2
	done
}

tails() {
	local f
	for f in "$DIR"/logs/*.log; do
		[ -s "$f" ] || continue
		echo "---- last lines of $f" >&2
		tail -n 25 "$f" >&2
	done
}

attempt() {
	: >"$DIR/pids"
	rm -rf "$DIR/etcd" "$DIR/logs"
	mkdir -p "$DIR/logs"
	local p_etcd p_peer p_api p_kcm
	read -r p_etcd p_peer p_api p_kcm < <(free_ports 4)
	[ -n "$p_kcm" ] || { log "could not find free ports"; return 1; }
	ETCD_URL=http://127.0.0.1:$p_etcd
	API_URL=https://127.0.0.1:$p_api
	KCM_URL=https://127.0.0.1:$p_kcm
	kubeconfig "$DIR/kubeconfig" "$API_URL" pikoc-admin "$DIR/pki/admin.crt" "$DIR/pki/admin.key"
	kubeconfig "$DIR/controller-manager.kubeconfig" "$API_URL" system:kube-controller-manager \
		"$DIR/pki/controller-manager.crt" "$DIR/pki/controller-manager.key"

	start etcd "$ETCD" --name pikoc-test --data-dir "$DIR/etcd" \
		--listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
		--listen-peer-urls "http://127.0.0.1:$p_peer" \
		--initial-advertise-peer-urls "http://127.0.0.1:$p_peer" \
		--initial-cluster "pikoc-test=http://127.0.0.1:$p_peer" \
		--unsafe-no-fsync --log-level warn
	wait_for "etcd /health" etcd curl -sf --max-time 5 "$ETCD_URL/health" || return 1

	local k=$DIR/pki
	# --endpoint-reconciler-type=none: the apiserver would otherwise publish
	# its own 127.0.0.1 as the `kubernetes` Service's endpoint, which
	# Endpoints validation rejects (loopback), and log that forever. With a
	# node, it publishes the node's address instead (in-cluster clients).
	local where=(--bind-address=127.0.0.1 --advertise-address=127.0.0.1
		--endpoint-reconciler-type=none --authorization-mode=RBAC)
	if [ -n "$NODE_IP" ]; then
		where=(--bind-address=0.0.0.0 --advertise-address="$NODE_IP"
			--endpoint-reconciler-type=lease --authorization-mode=Node,RBAC
			--kubelet-client-certificate="$k/apiserver-kubelet-client.crt"
			--kubelet-client-key="$k/apiserver-kubelet-client.key"
			--kubelet-preferred-address-types=InternalIP)
	fi
	start kube-apiserver "$APISERVER" \
		--etcd-servers="$ETCD_URL" --secure-port="$p_api" "${where[@]}" \
		--cert-dir="$k" --tls-cert-file="$k/apiserver.crt" --tls-private-key-file="$k/apiserver.key" \
		--client-ca-file="$k/ca.crt" --token-auth-file="$k/tokens.csv" \
		--requestheader-client-ca-file="$k/front-proxy-ca.crt" \
		--requestheader-allowed-names=front-proxy-client \
		--requestheader-username-headers=X-Remote-User \
		--requestheader-group-headers=X-Remote-Group \
		--requestheader-extra-headers-prefix=X-Remote-Extra- \
		--proxy-client-cert-file="$k/front-proxy-client.crt" \
		--proxy-client-key-file="$k/front-proxy-client.key" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$k/sa.pub" --service-account-signing-key-file="$k/sa.key" \
		--service-cluster-ip-range=10.0.0.0/24 \
		--allow-privileged=true --profiling=false \
		${PK_K8S_APISERVER_FLAGS:-}
	wait_for "kube-apiserver /readyz" kube-apiserver \
		"$KUBECTL" --kubeconfig="$DIR/kubeconfig" --request-timeout=5s get --raw /readyz || return 1

	# The controllers run as their own service accounts (as kubeadm sets it
	# up), with the bootstrap RBAC roles the apiserver creates for them.
	start kube-controller-manager "$KCM" \
		--kubeconfig="$DIR/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$p_kcm" \
		--leader-elect=false --controllers="$CONTROLLERS" \
		--use-service-account-credentials=true \
		--service-account-private-key-file="$k/sa.key" --root-ca-file="$k/ca.crt" \
		--cluster-signing-cert-file="$k/ca.crt" --cluster-signing-key-file="$k/ca.key" \
		--profiling=false
	wait_for "kube-controller-manager /healthz" kube-controller-manager \
		curl -sfk --max-time 5 "$KCM_URL/healthz" || return 1
	# The serviceaccount controller makes the default namespace's account.
	wait_for "serviceaccount default/default" kube-controller-manager \
		"$KUBECTL" --kubeconfig="$DIR/kubeconfig" --request-timeout=5s \
		get serviceaccount default -n default || return 1
}

# Interrupted while starting: stop what was started.
trap '"$HERE/down.sh" "$DIR" >&2 || true; exit 130' INT TERM
pki
ok=0
for try in 1 2 3; do
	if attempt; then
		ok=1
		break
	fi
	# A port taken between choosing it and binding it: stop, choose again.
	if grep -qs 'address already in use' "$DIR"/logs/*.log && [ $SECONDS -lt $deadline ]; then
		log "a port was taken meanwhile (try $try); retrying with other ports"
		"$HERE/down.sh" "$DIR" >/dev/null 2>&1 || true
		continue
	fi
	break
done
if [ $ok != 1 ]; then
	log "failed; logs in $DIR/logs"
	tails
	"$HERE/down.sh" "$DIR" >&2 || true
	exit 1
fi

trap - INT TERM
ready=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
bindir=$(dirname "$KUBECTL")
cat >"$DIR/env" <<EOF
export KUBECONFIG=$DIR/kubeconfig
export PATH=$bindir:\$PATH
PK_K8S_ETCD=$ETCD_URL
PK_K8S_APISERVER=$API_URL
PK_K8S_CONTROLLER_MANAGER=$KCM_URL
PK_K8S_BIN=$bindir
EOF
cat <<EOF
etcd $ETCD_URL
kube-apiserver $API_URL
kube-controller-manager $KCM_URL
kubeconfig $DIR/kubeconfig
ready-seconds $ready
EOF
