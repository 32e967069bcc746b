#!/usr/bin/env bash
# Smoke test of the real control plane the operator's tests run against:
# builds it (hack/k8s/build.sh, nothing to do when cached), brings it up in a
# temporary directory (hack/k8s/up.sh), checks with kubectl that
#   - the default namespace exists;
#   - a ConfigMap can be created and read back;
#   - the StatefulSet controller creates the Pods of a 2-replica StatefulSet
#     (no kubelet: they stay Pending, but the Pod objects exist, owned by it);
#   - the EndpointSlice controller makes a slice for a Service;
#   - the garbage collector deletes a dependent whose owner was deleted
#     (a ConfigMap with an ownerReference to another ConfigMap);
#   - the PikoCluster CRD (crds/) applies, gets its defaults, shows its
#     printer columns, is validated by the apiserver (schema and CEL) and
#     scales, and the controller's RBAC allows what it needs and no more;
# then tears it down (hack/k8s/down.sh) and checks that no process is left.
# Exit 0 when all passed; otherwise 1, naming what failed, with the logs'
# tails. PK_K8S_KEEP=1 keeps the temporary directory (it is kept anyway on
# failure, and its path printed).
set -euo pipefail
cd "$(dirname "$0")/../.."

T0=$(date +%s.%N)
WAIT=${PK_K8S_WAIT:-60} # bound on each wait for a controller, seconds
passed=0 failed=0 failures=()

say() { echo "k8s-smoke: $*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
pass() { passed=$((passed + 1)); say "ok   $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); say "FAIL $1${2:+: $2}"; }

say "building (hack/k8s/build.sh)"
t=$(date +%s.%N)
bins=$(hack/k8s/build.sh) || { say "FAIL build: hack/k8s/build.sh failed"; exit 1; }
say "build step took $(elapsed "$t")s"
KUBECTL=$(awk '$1 == "kubectl" { print $2 }' <<<"$bins")

DIR=$(mktemp -d "${TMPDIR:-/tmp}/pikoc-k8s-smoke.XXXXXX")
up=0
finish() {
	local rc=$?
	if [ $up = 1 ]; then
		hack/k8s/down.sh "$DIR" >/dev/null 2>&1 || true
	fi
	if [ $rc = 0 ] && [ "${PK_K8S_KEEP:-0}" != 1 ]; then
		rm -rf "$DIR"
	else
		say "kept $DIR (logs in $DIR/logs)"
	fi
}
trap finish EXIT
trap 'exit 130' INT TERM

say "starting the control plane in $DIR"
t=$(date +%s.%N)
if ! out=$(hack/k8s/up.sh "$DIR"); then
	say "FAIL up: hack/k8s/up.sh could not bring the control plane up"
	exit 1
fi
up=1
echo "$out" | sed 's/^/  /'
say "up.sh took $(elapsed "$t")s"
while read -r name pid _; do
	rss=$(awk '$1 == "VmRSS:" { printf "%.0f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null || echo '?')
	say "rss $name ${rss} MiB (just after ready)"
done <"$DIR/pids"

export KUBECONFIG=$DIR/kubeconfig
k() { "$KUBECTL" --request-timeout=15s "$@"; }

# Poll until the command prints what is expected, up to WAIT seconds.
eventually() { # expected, command...
	local want=$1 got end=$((SECONDS + WAIT))
	shift
	while :; do
		got=$("$@" 2>/dev/null) || got=""
		[ "$got" = "$want" ] && return 0
		[ $SECONDS -lt $end ] || { echo "$got"; return 1; }
		sleep 0.5
	done
}

# 1. The default namespace.
if got=$(k get namespace default -o jsonpath='{.status.phase}' 2>&1) && [ "$got" = Active ]; then
	pass "namespace default is Active"
else
	fail "namespace default" "$got"
fi

# 2. A ConfigMap, written and read back.
if got=$(k create configmap smoke-cm --from-literal=greeting=hello-piko 2>&1) &&
	got=$(k get configmap smoke-cm -o jsonpath='{.data.greeting}' 2>&1) &&
	[ "$got" = hello-piko ]; then
	pass "configmap created and read back"
else
	fail "configmap round trip" "$got"
fi

# 3. The StatefulSet controller makes the Pods (Parallel: with OrderedReady
# it would wait for smoke-0 to become Ready, which needs a kubelet), and
# 4. the EndpointSlice controller makes a slice for the headless Service.
if got=$(k apply -f - 2>&1 <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: smoke
spec:
  clusterIP: None
  selector: {app: smoke}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: smoke
spec:
  replicas: 2
  serviceName: smoke
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
    spec:
      containers:
      - name: piko
        image: example.invalid/piko:smoke
        ports: [{name: http, containerPort: 8080}]
EOF
); then
	pods() {
		k get pods -l app=smoke -o \
			jsonpath='{range .items[*]}{.metadata.name}/{.metadata.ownerReferences[0].kind}/{.status.phase} {end}'
	}
	if got=$(eventually "smoke-0/StatefulSet/Pending smoke-1/StatefulSet/Pending " pods); then
		pass "statefulset controller created 2 Pods (Pending, owned by the StatefulSet)"
	else
		fail "statefulset pods" "after ${WAIT}s: '$got'"
	fi
	slices() {
		k get endpointslices -l kubernetes.io/service-name=smoke \
			-o jsonpath='{.items[*].metadata.ownerReferences[0].name}'
	}
	if got=$(eventually smoke slices); then
		pass "endpointslice controller made a slice for Service smoke"
	else
		fail "endpointslice" "after ${WAIT}s: '$got'"
	fi
else
	fail "statefulset/service apply" "$got"
	fail "endpointslice" "not tried"
fi

# 5. Garbage collection: delete the owner, the dependent goes.
if got=$(k create configmap gc-owner --from-literal=role=owner 2>&1) &&
	uid=$(k get configmap gc-owner -o jsonpath='{.metadata.uid}' 2>&1) &&
	got=$(k apply -f - 2>&1 <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: gc-dependent
  ownerReferences:
  - {apiVersion: v1, kind: ConfigMap, name: gc-owner, uid: "$uid"}
data: {role: dependent}
EOF
) && got=$(k delete configmap gc-owner --wait=true 2>&1); then
	gone() { k get configmap gc-dependent -o name --ignore-not-found && echo checked; }
	if got=$(eventually checked gone); then
		pass "garbage collector deleted the dependent ConfigMap"
	else
		fail "garbage collection" "gc-dependent still there after ${WAIT}s"
	fi
else
	fail "garbage collection setup" "$got"
fi

# 6. The PikoCluster CRD (crds/): applied, defaults, printer columns, the
# apiserver's own validation (schema and CEL rules), and the scale subresource.
crd_ok=0
if got=$(k apply -f crds/ 2>&1) &&
	got=$(eventually True k get crd pikoclusters.piko.dev \
		-o jsonpath='{.status.conditions[?(@.type=="Established")].status}'); then
	pass "kubectl apply -f crds/: PikoCluster established"
	crd_ok=1
else
	fail "crd apply" "$got"
fi
if [ $crd_ok = 1 ]; then
	# A minimal cluster gets the schema's defaults.
	if got=$(printf 'apiVersion: piko.dev/v1alpha1\nkind: PikoCluster\nmetadata: {name: edge}\nspec: {}\n' |
		k apply -f - 2>&1) && got=$(k get pikocluster edge -o \
		jsonpath='{.spec.replicas}/{.spec.image}/{.spec.service.type}/{.spec.gracePeriod}/{.spec.server.proxyTimeout}' 2>&1) &&
		[ "$got" = "3/ghcr.io/pikoc/piko:0.1.0/ClusterIP/60s/30s" ]; then
		pass "a minimal PikoCluster gets the schema defaults"
	else
		fail "pikocluster defaults" "$got"
	fi
	if got=$(k get piko 2>&1) && head -1 <<<"$got" | grep -Eq '^NAME +READY +FORMED +REPLICAS +AVAILABLE +AGE$' &&
		[ "$(tail -1 <<<"$got" | awk '{ print $1 "/" $2 }')" = edge/3 ]; then
		pass "kubectl get piko shows the printer columns"
	else
		fail "printer columns" "$got"
	fi
	# A full spec is accepted (the rules below must not refuse valid ones).
	full='{replicas: 3, auth: {upstream: {hmacSecretRef: {name: piko-auth, key: secret}, audience: piko}, proxy: {rsaPublicKeyRef: {name: piko-auth, key: rsa.pem}}}, tls: {proxy: {secretName: piko-tls, clientCASecretName: piko-ca}}, service: {type: LoadBalancer, annotations: {example.com/lb: internal}}, podDisruptionBudget: {minAvailable: 1}, resources: {requests: {cpu: 100m}}}'
	if got=$(printf 'apiVersion: piko.dev/v1alpha1\nkind: PikoCluster\nmetadata: {name: full}\nspec: %s\n' \
		"$full" | k apply -f - 2>&1) &&
		got=$(k get pikocluster full -o jsonpath='{.spec.tls.proxy.clientCASecretName}/{.spec.service.annotations}' 2>&1) &&
		[ "$got" = 'piko-ca/{"example.com/lb":"internal"}' ]; then
		pass "a full spec is accepted as written"
	else
		fail "full spec" "$got"
	fi
	# Rejected by the apiserver, each with its message.
	reject() { # what, expected text, spec (YAML flow)
		local what=$1 want=$2 spec=$3 out
		if out=$(printf 'apiVersion: piko.dev/v1alpha1\nkind: PikoCluster\nmetadata: {name: bad}\nspec: %s\n' \
			"$spec" | k apply -f - 2>&1); then
			k delete pikocluster bad --ignore-not-found >/dev/null 2>&1 || true
			fail "rejects $what" "accepted"
		elif grep -qF "$want" <<<"$out"; then
			pass "rejects $what"
		else
			fail "rejects $what" "$out"
		fi
	}
	reject "negative replicas" "spec.replicas in body should be greater than or equal to 0" \
		'{replicas: -1}'
	reject "a bad duration" "spec.gracePeriod in body should match" '{gracePeriod: soon}'
	reject "admin auth (CEL)" "admin auth is not supported" \
		'{auth: {admin: {hmacSecretRef: {name: s, key: k}}}}'
	reject "an auth block without a key (CEL)" "an auth block needs a key" \
		'{auth: {upstream: {audience: piko}}}'
	reject "mTLS without a certificate" "spec.tls.proxy.secretName: Required value" \
		'{tls: {proxy: {clientCASecretName: ca}}}'
	reject "minAvailable >= replicas (CEL)" "must be lower than replicas" \
		'{replicas: 2, podDisruptionBudget: {minAvailable: 2}}'
	# The controller's RBAC (crds/controller.yaml): what it needs, and no more.
	can() { # expected yes/no, verb, resource, [flags...]
		local want=$1 got
		shift
		got=$(k auth can-i --as=system:serviceaccount:piko-system:piko-controller "$@" 2>/dev/null) ||
			true
		if [ "$got" = "$want" ]; then
			pass "controller can-i $* = $want"
		else
			fail "controller can-i $*" "got '$got', want $want"
		fi
	}
	can yes watch pikoclusters.piko.dev --all-namespaces
	can yes patch pikoclusters.piko.dev --subresource=status -n default
	can no update pikoclusters.piko.dev -n default
	can no delete pikoclusters.piko.dev -n default
	can yes update pikoclusters.piko.dev --subresource=finalizers -n default
	can yes create statefulsets.apps -n default
	can yes delete services -n default
	can yes create poddisruptionbudgets.policy -n default
	can yes watch endpointslices.discovery.k8s.io --all-namespaces
	can yes create events -n default
	can yes update leases.coordination.k8s.io -n piko-system
	can no update leases.coordination.k8s.io -n default
	# Secrets: the cluster key's, read by name and created; nothing else.
	can yes get secrets -n default
	can yes create secrets -n default
	can no list secrets -n default
	can no watch secrets -n default
	can no update secrets -n default
	can no patch secrets -n default
	can no delete secrets -n default
	# Pods and Events are listed (why a cluster is Degraded), nothing more.
	can yes list pods -n default
	can no get pods -n default
	can no watch pods -n default
	can no delete pods -n default
	can yes list events -n default
	can no watch events -n default
	# The scale subresource.
	if got=$(k scale pikocluster/edge --replicas=5 2>&1) &&
		got=$(k get pikocluster edge -o jsonpath='{.spec.replicas}' 2>&1) && [ "$got" = 5 ]; then
		pass "kubectl scale pikocluster/edge --replicas=5"
	else
		fail "scale subresource" "$got"
	fi
fi

# 7. Tear down, and nothing is left running.
pids=$(awk '{ print $2 }' "$DIR/pids")
t=$(date +%s.%N)
if hack/k8s/down.sh "$DIR" 2>/dev/null; then
	up=0
	left=""
	for p in $pids; do
		# Gone, or a zombie its new parent has yet to reap, is stopped.
		st=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1) || st=""
		case $st in "" | Z | X) ;; *) left+=" $p" ;; esac
	done
	if [ -z "$left" ]; then
		pass "down.sh stopped everything in $(elapsed "$t")s"
	else
		fail "teardown" "still running:$left"
	fi
else
	fail "teardown" "down.sh failed"
fi

if [ $failed != 0 ]; then
	for f in "$DIR"/logs/*.log; do
		echo "---- last lines of $f"
		tail -n 15 "$f"
	done
	say "failed: ${failures[*]}"
fi
say "total $(elapsed "$T0")s"
echo "k8s smoke: $passed passed, $failed failed"
[ $failed = 0 ]
