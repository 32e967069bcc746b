#!/usr/bin/env bash
# Add a real node to the control plane that hack/k8s/up.sh DIR started:
#
#   hack/k8s/sandbox.sh bash -c 'hack/k8s/up.sh D && hack/k8s/node-up.sh D IMAGES... && ...'
#
# Runs only inside hack/k8s/sandbox.sh (network, mount and PID namespaces of
# its own: nothing it does reaches the host, and the kernel stops all of it
# when the sandbox ends). Starts, with state and logs in DIR/node:
#
#   containerd       Debian's, own root/state/socket; CRI with the settings
#                    this VM needs (reference kubernetes.md §3.5b)
#   CNI              bridge `cni0` + host-local IPAM on 10.244.0.0/24, portmap
#   kube-scheduler   its own client certificate
#   kubelet          node `pikoc-node` at PK_K8S_NODE_IP, cgroupfs under the
#                    sandbox's cgroup root, pods' DNS = the resolver below
#   kube-proxy       nftables mode: ClusterIPs and NodePorts work from the
#                    sandbox and from pods
#   dns.py           cluster DNS (Services, headless endpoints, pod hostnames)
#
# IMAGES are OCI archives (hack/image.sh) imported into containerd's k8s.io
# namespace before the kubelet starts; one of them must be the sandbox image
# registry.k8s.io/pause:3.10 (no registry is reachable: nothing is pulled).
# Appends to DIR/pids (hack/k8s/down.sh DIR stops them, in reverse order)
# and DIR/env (PK_K8S_NODE, PK_K8S_NODE_IP, PK_K8S_CTR: a ctr command line).
# Prints "node NAME IP" and "node-ready-seconds N.N" once the Node is Ready
# and its pods can be scheduled. Every wait is bounded (PK_K8S_TIMEOUT,
# default 120 s). Ports: the usual ones (10250, 10259, 10249, 10256, 53), as
# the sandbox's network namespace is the node's alone.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 DIR [IMAGE.tar...]" >&2; exit 2; }
DIR=$(cd "$1" && pwd)
shift
TIMEOUT=${PK_K8S_TIMEOUT:-120}
NODE=pikoc-node
POD_CIDR=10.244.0.0/24
N=$DIR/node

log() { echo "k8s-node: $*" >&2; }
die() { log "$*"; exit 1; }

[ -n "${PK_K8S_SANDBOX:-}" ] || die "run me inside hack/k8s/sandbox.sh (I change network, mounts and cgroups)"
[ -s "$DIR/env" ] || die "no control plane in $DIR (hack/k8s/up.sh $DIR first)"
NODE_IP=$PK_K8S_NODE_IP
CGROOT=$PK_K8S_CGROUP_ROOT
for t in containerd containerd-shim-runc-v2 runc ctr nft iptables; do
	command -v $t >/dev/null || die "$t not found (hack/deps.sh installs it)"
done
[ -x /usr/lib/cni/bridge ] || die "CNI plugins not found in /usr/lib/cni (containernetworking-plugins)"

bins=$("$HERE/build.sh")
bin() { awk -v n="$1" '$1 == n { print $2 }' <<<"$bins"; }
KUBELET=$(bin kubelet) SCHED=$(bin kube-scheduler) PROXY=$(bin kube-proxy) KUBECTL=$(bin kubectl)
API_URL=$(awk -F= '$1 == "PK_K8S_APISERVER" { print $2 }' "$DIR/env")
export KUBECONFIG=$DIR/kubeconfig

t_start=$(date +%s.%N)
deadline=$((SECONDS + TIMEOUT))
rm -rf "$N"
mkdir -p "$N"/{pki,cni/net.d,cni/ipam,containerd,kubelet,pod-logs} "$DIR/logs"

# ---- certificates, signed by the control plane's CA
leaf() { # name, subject, extensions
	local p=$N/pki
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$2" \
		-keyout "$p/$1.key" -out "$p/$1.csr" 2>/dev/null
	printf '%s\n' "$3" >"$p/$1.ext"
	openssl x509 -req -in "$p/$1.csr" -CA "$DIR/pki/ca.crt" -CAkey "$DIR/pki/ca.key" \
		-CAcreateserial -days 30 -extfile "$p/$1.ext" -out "$p/$1.crt" 2>/dev/null
	rm -f "$p/$1.csr" "$p/$1.ext"
}
client='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'
leaf kubelet "/O=system:nodes/CN=system:node:$NODE" "$client"
leaf kubelet-serving "/CN=$NODE" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE"
leaf scheduler /CN=system:kube-scheduler "$client"
leaf kube-proxy /CN=system:kube-proxy "$client"

kubeconfig() { # file, user, cert, key
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pikoc-test
  cluster:
    server: $API_URL
    certificate-authority-data: $(base64 -w0 "$DIR/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$3")
    client-key-data: $(base64 -w0 "$4")
contexts:
- name: default
  context: {cluster: pikoc-test, user: $2}
current-context: default
EOF
	chmod 600 "$1"
}
for c in kubelet scheduler kube-proxy; do
	kubeconfig "$N/$c.kubeconfig" "$c" "$N/pki/$c.crt" "$N/pki/$c.key"
done

start() { # name, binary, args...
	local name=$1
	shift
	setsid "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
	echo "$name $! $1" >>"$DIR/pids"
}
alive() {
	local pid
	pid=$(awk -v n="$1" '$1 == n { p = $2 } END { print p }' "$DIR/pids")
	[ -n "$pid" ] && [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}
wait_for() { # what, process name, command...
	local what=$1 name=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		alive "$name" || { log "$name exited while waiting for $what"; tail -n 30 "$DIR/logs/$name.log" >&2; return 1; }
		[ $SECONDS -lt $deadline ] || { log "timed out (${TIMEOUT}s) waiting for $what"; tail -n 30 "$DIR/logs/$name.log" >&2; return 1; }
		sleep 0.2
	done
}

# ---- containerd
SOCK=$N/containerd/containerd.sock
cat >"$N/containerd/config.toml" <<EOF
version = 2
root = "$N/containerd/root"
state = "$N/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = "$SOCK.debug"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  disable_apparmor = true
  # This VM lacks CAP_SYS_RESOURCE: nothing may lower oom_score_adj, and
  # every sandbox would fail to start without this.
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$N/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$N/cni/net.d"
    max_conf_num = 1
EOF
cat >"$N/cni/net.d/10-pikoc.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "pikoc",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$N/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
CTR=(ctr --address "$SOCK" -n k8s.io)
start containerd "$(command -v containerd)" --config "$N/containerd/config.toml"
wait_for "containerd" containerd "${CTR[@]}" version

for img in "$@"; do
	"${CTR[@]}" images import --no-unpack "$img" >/dev/null || die "could not import $img"
done
"${CTR[@]}" images ls -q | grep -qx 'registry.k8s.io/pause:3.10' ||
	die "no registry.k8s.io/pause:3.10 among the images given (hack/image.sh makes it)"

# ---- kube-scheduler
start kube-scheduler "$SCHED" --kubeconfig="$N/scheduler.kubeconfig" \
	--authentication-kubeconfig="$N/scheduler.kubeconfig" \
	--authorization-kubeconfig="$N/scheduler.kubeconfig" \
	--leader-elect=false --bind-address=127.0.0.1 --secure-port=10259

# ---- cluster DNS (the kubelet points pods at it)
start dns "$(readlink -f "$(command -v python3)")" "$HERE/dns.py" --listen "$NODE_IP" --kubeconfig-dir "$DIR"
: >"$N/resolv.conf" # no upstream resolvers for pods: nothing beyond the machine

# ---- kubelet
cat >"$N/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $N/pki/kubelet-serving.crt
tlsPrivateKeyFile: $N/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROOT
cgroupsPerQOS: true
# cgroup v1 here; the kubelet 1.36 refuses it unless told.
failCgroupV1: false
failSwapOn: false
# No CAP_SYS_RESOURCE in this VM (see containerd's restrict_oom_score_adj).
oomScoreAdj: 0
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podLogsDir: $N/pod-logs
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $N/resolv.conf
serializeImagePulls: false
registerNode: true
maxPods: 110
EOF
start kubelet "$KUBELET" --config="$N/kubelet.yaml" --kubeconfig="$N/kubelet.kubeconfig" \
	--root-dir="$N/kubelet" --cert-dir="$N/pki" --hostname-override="$NODE" --node-ip="$NODE_IP"

# ---- kube-proxy (nftables; leaves the conntrack sysctls alone)
# The sandbox has no default route; a node's own connections to ClusterIPs
# need a route for the address before kube-proxy's output hook rewrites it
# (pods have theirs: the bridge's gateway).
ip route replace 10.0.0.0/24 dev pk-node
start kube-proxy "$PROXY" --kubeconfig="$N/kube-proxy.kubeconfig" --proxy-mode=nftables \
	--hostname-override="$NODE" --cluster-cidr=10.244.0.0/16 --masquerade-all \
	--healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
	--conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
	--conntrack-tcp-timeout-close-wait=0 --nodeport-addresses="$NODE_IP/32"

kc() { "$KUBECTL" --request-timeout=5s "$@"; }
wait_for "node $NODE Ready" kubelet kc wait --for=condition=Ready "node/$NODE" --timeout=2s
wait_for "kube-proxy healthz" kube-proxy curl -sf --max-time 2 http://127.0.0.1:10256/healthz
wait_for "kube-scheduler healthz" kube-scheduler curl -sfk --max-time 2 https://127.0.0.1:10259/healthz
wait_for "cluster DNS" dns python3 -c "
import socket,struct,sys
q=struct.pack('!HHHHHH',1,0x100,1,0,0,0)+b''.join(bytes([len(l)])+l.encode() for l in 'kubernetes.default.svc.cluster.local'.split('.'))+b'\0\0\1\0\1'
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1);s.sendto(q,('$NODE_IP',53))
r=s.recv(512);sys.exit(0 if struct.unpack('!H',r[6:8])[0]==1 else 1)"

cat >>"$DIR/env" <<EOF
PK_K8S_NODE=$NODE
PK_K8S_NODE_IP=$NODE_IP
PK_K8S_CTR="ctr --address $SOCK -n k8s.io"
EOF
ready=$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "node $NODE $NODE_IP"
echo "node-ready-seconds $ready"
