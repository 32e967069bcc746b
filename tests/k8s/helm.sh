#!/usr/bin/env bash
# Tests of the Helm chart charts/piko-controller against a real control plane
# (hack/k8s/up.sh, torn down on exit), with the helm that hack/k8s/build.sh
# builds:
#
#   tests/k8s/helm.sh [BUILD_DIR]     (default build)
#
# Without a cluster (while the control plane starts):
#   - helm lint --strict, with the default values and each ci/*-values.yaml;
#   - values.schema.json refuses bad values (negative or string replicas, an
#     unknown log level, a bad duration, an unknown key): lint and template
#     fail naming the field; kubeVersion refuses Kubernetes 1.29;
#   - rendering: the CRD only with crds.enabled and the keep annotation only
#     with crds.keep; the PDB only with replicas > 1; --namespace only with
#     watchNamespace; the ServiceMonitor only when the API is there;
#   - helm package stores the CRD's contents (files/ holds a symbolic link
#     to crds/piko.dev_pikoclusters.yaml).
# Against the control plane:
#   - no drift: the rendered CRD equals crds/piko.dev_pikoclusters.yaml field
#     for field (from the source tree and from the package), and the rendered
#     RBAC rules equal crds/controller.yaml's;
#   - helm template | kubectl apply --dry-run=server (defaults, ci values);
#   - helm install into piko-system: Deployment (args, env, probes, security
#     context), ServiceAccount, RBAC, Service, PDB and CRD (kept) as expected;
#     kubectl auth can-i as the ServiceAccount; a PikoCluster is accepted and
#     defaulted;
#   - when BUILD_DIR/bin/piko-controller exists: that binary, run with the
#     Deployment's own args as the chart's ServiceAccount (a token), syncs its
#     caches, takes the Lease in the release namespace and reconciles the
#     PikoCluster, with nothing forbidden (the pods of the Deployment never
#     run: there is no kubelet);
#   - helm upgrade (1 replica, debug, one namespace, ServiceMonitor once its
#     API exists): the PDB goes, the args and the ServiceMonitor follow;
#   - helm uninstall: the release's objects go, the CRD and the PikoCluster
#     stay (crds.keep); a new install adopts the kept CRD; with crds.keep
#     false an uninstall deletes it.
# Exit 0 when all passed, else 1 (naming what failed, with the logs' tails).
# PK_K8S_KEEP=1 keeps the temporary directory (kept anyway on failure).
# Two runs at once do not meet: own directory, helm homes, ports.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${1:-build}
CHART=$ROOT/charts/piko-controller
CRD_FILE=$ROOT/crds/piko.dev_pikoclusters.yaml
NS=piko-system
REL=piko-controller
SA=piko-controller
WAIT=${PK_K8S_WAIT:-30} # bound on each wait, seconds

T0=$(date +%s.%N)
passed=0 failed=0 skipped=0 failures=()
say() { echo "k8s-helm: $*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
pass() { passed=$((passed + 1)); say "ok   $1"; }
fail() {
	failed=$((failed + 1))
	failures+=("$1")
	say "FAIL $1${2:+: $2}"
}
skip() { skipped=$((skipped + 1)); say "skip $1${2:+: $2}"; }
# Pass when got equals want.
check() { # what, got, want
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', want '$3'"; fi
}

bins=$(hack/k8s/build.sh) || { say "FAIL build: hack/k8s/build.sh failed"; exit 1; }
KUBECTL=$(awk '$1 == "kubectl" { print $2 }' <<<"$bins")
HELM=$(awk '$1 == "helm" { print $2 }' <<<"$bins")
CTL=$ROOT/$BUILD/bin/piko-controller

DIR=$(mktemp -d "${TMPDIR:-/tmp}/pikoc-k8s-helm.XXXXXX")
mkdir -p "$DIR/logs" "$DIR/helm"
# helm's and kubectl's caches and config in the run's own directory.
export HELM_CACHE_HOME=$DIR/helm/cache HELM_CONFIG_HOME=$DIR/helm/config
export HELM_DATA_HOME=$DIR/helm/data KUBECACHEDIR=$DIR/kube-cache
export KUBECONFIG=$DIR/kubeconfig

up_pid="" up=0 ctl_pid=""
finish() {
	local rc=$?
	if [ -n "$ctl_pid" ] && kill -0 "$ctl_pid" 2>/dev/null; then
		kill -KILL "$ctl_pid" 2>/dev/null || true
		wait "$ctl_pid" 2>/dev/null || true
	fi
	# up.sh still starting: its own INT/TERM trap stops what it started.
	if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
		kill -TERM "$up_pid" 2>/dev/null || true
		wait "$up_pid" 2>/dev/null || true
	fi
	if [ $up = 1 ] || [ -s "$DIR/pids" ]; then
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

# The control plane starts in the background while the offline checks run.
say "starting the control plane in $DIR"
t_up=$(date +%s.%N)
hack/k8s/up.sh "$DIR" >"$DIR/up.out" 2>"$DIR/up.err" &
up_pid=$!

# helm without the INFO line it logs for the symbolic link in files/.
helm_() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }
k() { "$KUBECTL" --request-timeout=15s "$@"; }
tpl() { helm_ template "$REL" "$CHART" -n "$NS" "$@"; }

# ---- 1. Without a cluster

if out=$(helm_ lint --strict "$CHART" 2>&1); then
	pass "helm lint --strict (default values)"
else
	fail "helm lint --strict" "$out"
fi
for f in "$CHART"/ci/*-values.yaml; do
	if out=$(helm_ lint --strict "$CHART" -f "$f" 2>&1); then
		pass "helm lint --strict -f ci/${f##*/}"
	else
		fail "helm lint --strict -f ci/${f##*/}" "$out"
	fi
done

# Bad values: lint and template both fail, the message naming the field.
refuse() { # what, expected text, helm flags...
	local what=$1 want=$2 out
	shift 2
	if out=$(helm_ lint --strict "$CHART" "$@" 2>&1); then
		fail "schema refuses $what (lint)" "accepted"
	elif ! grep -qF -- "$want" <<<"$out"; then
		fail "schema refuses $what (lint)" "$out"
	elif out=$(tpl "$@" 2>&1); then
		fail "schema refuses $what (template)" "accepted"
	elif ! grep -qF -- "$want" <<<"$out"; then
		fail "schema refuses $what (template)" "$out"
	else
		pass "schema refuses $what: $(grep -F -- "$want" <<<"$out" | head -1 | sed 's/^[- ]*//')"
	fi
}
refuse "replicas: -1" "at '/replicas': minimum" --set replicas=-1
refuse "replicas: a string" "at '/replicas': got string, want integer" --set-string replicas=2
refuse "logLevel: trace" "at '/logLevel'" --set logLevel=trace
refuse "resync: soon" "at '/resync'" --set resync=soon
refuse "an unknown key (replica)" "additional properties 'replica' not allowed" --set replica=1
refuse "health.port: 0" "at '/health/port'" --set health.port=0
if out=$(tpl --kube-version 1.29.0 2>&1); then
	fail "kubeVersion refuses 1.29" "accepted"
elif grep -q 'requires kubeVersion' <<<"$out"; then
	pass "kubeVersion (>=1.30) refuses Kubernetes 1.29"
else
	fail "kubeVersion refuses 1.29" "$out"
fi

# What is rendered, by values.
kinds() { grep -E '^kind: ' | awk '{ print $2 }' | sort | tr '\n' ' ' | sed 's/ $//'; }
if out=$(tpl 2>&1); then
	check "default render: the kinds" "$(kinds <<<"$out")" \
		"ClusterRole ClusterRoleBinding CustomResourceDefinition Deployment PodDisruptionBudget Role RoleBinding Service ServiceAccount"
else
	fail "default render" "$out"
fi
if out=$(tpl --set crds.enabled=false --set replicas=1 2>&1); then
	check "crds.enabled=false, replicas=1: no CRD, no PDB" "$(kinds <<<"$out")" \
		"ClusterRole ClusterRoleBinding Deployment Role RoleBinding Service ServiceAccount"
else
	fail "crds.enabled=false render" "$out"
fi
crd_keep() { # helm flags... -> the CRD's resource-policy annotation, or "none"
	local out
	out=$(tpl --show-only templates/crd.yaml "$@" 2>&1) || { echo "error: $out"; return; }
	grep -oE 'helm.sh/resource-policy: [a-z]+' <<<"$out" || echo none
}
check "crds.keep (default): the CRD has helm.sh/resource-policy: keep" "$(crd_keep)" \
	"helm.sh/resource-policy: keep"
check "crds.keep=false: no resource policy on the CRD" "$(crd_keep --set crds.keep=false)" none
args() { # helm flags... -> the Deployment's args, one line
	tpl --show-only templates/deployment.yaml "$@" 2>&1 |
		sed -n '/^ *args:/,/^ *env:/p' | grep -oE '"--[^"]*"' | tr -d '"' | tr '\n' ' ' | sed 's/ $//'
}
check "default args" "$(args)" \
	"--lease-namespace=$NS --lease-name=$REL --health-addr=0.0.0.0:8081 --log.level=info --resync=10m"
check "args with watchNamespace, logLevel, resync, health.port, extraArgs" \
	"$(args --set watchNamespace=apps,logLevel=warn,resync=1h,health.port=9000 --set 'extraArgs={--peer-push=1m}')" \
	"--lease-namespace=$NS --lease-name=$REL --health-addr=0.0.0.0:9000 --log.level=warn --namespace=apps --resync=1h --peer-push=1m"
sm_count() { tpl --set metrics.serviceMonitor.enabled=true "$@" 2>&1 | grep -c '^kind: ServiceMonitor' || true; }
check "serviceMonitor.enabled without the API: no ServiceMonitor" "$(sm_count)" 0
check "serviceMonitor.enabled with monitoring.coreos.com/v1: a ServiceMonitor" \
	"$(sm_count --api-versions monitoring.coreos.com/v1/ServiceMonitor)" 1

# The package holds the CRD itself, not a link.
mkdir -p "$DIR/pkg"
if out=$(helm_ package "$CHART" -d "$DIR/pkg" 2>&1) &&
	PKG=$(ls "$DIR"/pkg/piko-controller-0.1.0.tgz 2>&1) &&
	out=$(tar -xzOf "$PKG" piko-controller/files/piko.dev_pikoclusters.yaml 2>&1 | cmp - "$CRD_FILE" 2>&1) &&
	out=$(tar -tvzf "$PKG" piko-controller/files/piko.dev_pikoclusters.yaml 2>&1) && [ "${out:0:1}" = - ]; then
	pass "helm package: piko-controller-0.1.0.tgz holds crds/piko.dev_pikoclusters.yaml's contents"
else
	fail "helm package" "$out"
	PKG=""
fi

# ---- 2. The control plane

if ! wait "$up_pid"; then
	up_pid=""
	say "FAIL up: hack/k8s/up.sh could not bring the control plane up"
	cat "$DIR/up.err" >&2
	exit 1
fi
up_pid="" up=1
sed 's/^/  /' "$DIR/up.out"
say "control plane up after $(elapsed "$t_up")s (the offline checks ran meanwhile)"
# shellcheck disable=SC1091
. "$DIR/env"

# No drift: the CRD as the chart renders it (from the tree and from the
# package) and the RBAC rules, against crds/ (kubectl parses both sides;
# jsonpath prints maps with sorted keys).
spec_of() { k create --dry-run=client -o jsonpath='{.metadata.name} {.spec}' -f "$1"; }
want_crd=$(spec_of "$CRD_FILE")
for src in "$CHART" ${PKG:+"$PKG"}; do
	name=source
	[ "$src" = "$CHART" ] || name=package
	if got=$(helm_ template "$REL" "$src" -n "$NS" --show-only templates/crd.yaml 2>&1 >"$DIR/crd-$name.yaml") &&
		got=$(spec_of "$DIR/crd-$name.yaml" 2>&1) && [ "$got" = "$want_crd" ] && [ ${#got} -gt 1000 ]; then
		pass "no drift: the CRD rendered from the $name equals crds/piko.dev_pikoclusters.yaml"
	else
		fail "CRD drift ($name)" "$(diff <(tr ',' '\n' <<<"$want_crd") <(tr ',' '\n' <<<"$got") | head -20)"
	fi
done
rules_of() { # file, kind (kubectl prints each object of a file on its own)
	k create --dry-run=client -o jsonpath='{.kind}{" "}{.rules}{"\n"}' -f "$1" |
		awk -v k="$2" '$1 == k { sub(/^[^ ]+ /, ""); print }'
}
tpl --show-only templates/rbac.yaml >"$DIR/rbac.yaml" 2>"$DIR/logs/rbac.err" || true
for kind in ClusterRole Role; do
	want=$(rules_of crds/controller.yaml "$kind" 2>&1) || true
	got=$(rules_of "$DIR/rbac.yaml" "$kind" 2>&1) || true
	if [ "$got" = "$want" ] && [ -n "$want" ]; then
		pass "no drift: the $kind's rules equal crds/controller.yaml's"
	else
		fail "$kind rules drift" "got $got, want $want"
	fi
done

# Server-side dry run of what helm template renders.
if out=$(k create namespace "$NS" 2>&1) && out=$(k create namespace apps 2>&1); then
	:
else
	fail "create namespaces" "$out"
fi
for f in "" "$CHART"/ci/*-values.yaml; do
	what=${f:+"-f ci/${f##*/}"}
	if out=$(tpl ${f:+-f "$f"} 2>"$DIR/render.err" | k apply --dry-run=server -f - 2>&1); then
		pass "helm template ${what:-(defaults)} | kubectl apply --dry-run=server -f -: $(wc -l <<<"$out") objects"
	else
		fail "server dry run ${what:-(defaults)}" "$out $(cat "$DIR/render.err")"
	fi
done

# helm install.
t=$(date +%s.%N)
if out=$(helm_ install "$REL" "$CHART" -n "$NS" --timeout 60s 2>&1); then
	pass "helm install $REL into $NS ($(elapsed "$t")s)"
	grep -q 'one leads through the Lease piko-system/piko-controller' <<<"$out" ||
		fail "install NOTES" "$out"
else
	fail "helm install" "$out"
fi
check "helm status: deployed, revision 1" \
	"$(helm_ status "$REL" -n "$NS" -o json 2>&1 | grep -oE '"status":"[a-z-]+"|"version":[0-9]+' | tr '\n' ' ')" \
	'"status":"deployed" "version":1 '

jp() { k get "$1" -n "$NS" -o jsonpath="$2" 2>&1; }
D=deployment/$REL
check "Deployment: replicas, service account, image" \
	"$(jp "$D" '{.spec.replicas} {.spec.template.spec.serviceAccountName} {.spec.template.spec.containers[0].image}')" \
	"2 $SA ghcr.io/pikoc/piko-controller:0.1.0"
check "Deployment: args" "$(jp "$D" '{.spec.template.spec.containers[0].args}')" \
	'["--lease-namespace=piko-system","--lease-name=piko-controller","--health-addr=0.0.0.0:8081","--log.level=info","--resync=10m"]'
check "Deployment: env POD_NAME from metadata.name" \
	"$(jp "$D" '{.spec.template.spec.containers[0].env[?(@.name=="POD_NAME")].valueFrom.fieldRef.fieldPath}')" \
	metadata.name
check "Deployment: probes /healthz and /readyz on port health (8081)" \
	"$(jp "$D" '{.spec.template.spec.containers[0].livenessProbe.httpGet.path} {.spec.template.spec.containers[0].readinessProbe.httpGet.path} {.spec.template.spec.containers[0].readinessProbe.httpGet.port} {.spec.template.spec.containers[0].ports[0].containerPort}')" \
	"/healthz /readyz health 8081"
check "Deployment: non-root, seccomp RuntimeDefault, read-only root, no privilege escalation, drop ALL" \
	"$(jp "$D" '{.spec.template.spec.securityContext.runAsNonRoot} {.spec.template.spec.securityContext.seccompProfile.type} {.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem} {.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation} {.spec.template.spec.containers[0].securityContext.capabilities.drop}')" \
	'true RuntimeDefault true false ["ALL"]'
check "ServiceAccount exists" "$(jp "serviceaccount/$SA" '{.metadata.name}')" "$SA"
check "ClusterRoleBinding: ClusterRole $REL to $NS/$SA" \
	"$(jp "clusterrolebinding/$REL" '{.roleRef.kind}/{.roleRef.name} {.subjects[0].kind} {.subjects[0].namespace}/{.subjects[0].name}')" \
	"ClusterRole/$REL ServiceAccount $NS/$SA"
check "RoleBinding (leader election) in $NS" \
	"$(jp "rolebinding/$REL-leader-election" '{.roleRef.kind}/{.roleRef.name} {.subjects[0].namespace}/{.subjects[0].name}')" \
	"Role/$REL-leader-election $NS/$SA"
sel=$(jp "$D" '{.spec.selector.matchLabels}')
check "metrics Service: port 8081 to port health, selecting the Deployment's pods" \
	"$(jp "service/$REL-metrics" '{.spec.ports[0].name} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector}')" \
	"metrics 8081 health $sel"
check "PodDisruptionBudget: maxUnavailable 1, the same selector" \
	"$(jp "poddisruptionbudget/$REL" '{.spec.maxUnavailable} {.spec.unhealthyPodEvictionPolicy} {.spec.selector.matchLabels}')" \
	"1 AlwaysAllow $sel"
check "CRD established, kept on uninstall, labelled by Helm" \
	"$(jp crd/pikoclusters.piko.dev '{.status.conditions[?(@.type=="Established")].status} {.metadata.annotations.helm\.sh/resource-policy} {.metadata.labels.app\.kubernetes\.io/managed-by} {.metadata.annotations.meta\.helm\.sh/release-namespace}')" \
	"True keep Helm $NS"

# What the ServiceAccount may do.
can() { # expected yes/no, verb, resource, [flags...]
	local want=$1 got
	shift
	got=$(k auth can-i --as="system:serviceaccount:$NS:$SA" "$@" 2>/dev/null) || true
	check "can-i $*: $want" "$got" "$want"
}
can yes watch pikoclusters.piko.dev --all-namespaces
can yes patch pikoclusters.piko.dev --subresource=status -n apps
can yes update pikoclusters.piko.dev --subresource=finalizers -n apps
can no update pikoclusters.piko.dev -n apps
can no delete pikoclusters.piko.dev -n apps
can yes create statefulsets.apps -n apps
can yes delete configmaps -n apps
can yes watch endpointslices.discovery.k8s.io --all-namespaces
can yes create events.events.k8s.io -n apps
can yes update leases.coordination.k8s.io -n "$NS"
can no update leases.coordination.k8s.io -n apps
# Secrets: the cluster key's, read by name and created; nothing else.
can yes get secrets -n apps
can yes create secrets -n apps
can no list secrets -n apps
can no watch secrets -n apps
can no update secrets -n apps
can no patch secrets -n apps
can no delete secrets -n apps
# Pods and core Events: list only (why a cluster is Degraded).
can yes list pods -n apps
can no watch pods -n apps
can yes list events -n apps
can no watch events -n apps

# The CRD works: a PikoCluster is accepted and defaulted.
if out=$(printf 'apiVersion: piko.dev/v1alpha1\nkind: PikoCluster\nmetadata: {name: edge, namespace: apps}\nspec: {replicas: 2}\n' |
	k apply -f - 2>&1); then
	check "a PikoCluster is created and defaulted" \
		"$(k get pikocluster edge -n apps -o jsonpath='{.spec.replicas} {.spec.image} {.spec.gracePeriod}' 2>&1)" \
		"2 ghcr.io/pikoc/piko:0.1.0 60s"
else
	fail "create a PikoCluster" "$out"
fi

# The real controller with the Deployment's args, as the chart's
# ServiceAccount: the RBAC is not just plausible but sufficient.
free_port() { # below the ephemeral range, as up.sh chooses its own
	python3 - <<'EOF'
import random, socket
for _ in range(2000):
    p = random.SystemRandom().randrange(20000, 32000)
    try:
        socket.socket().bind(("127.0.0.1", p))
    except OSError:
        continue
    print(p)
    break
EOF
}
eventually() { # command... (until it succeeds, up to WAIT seconds)
	local end=$((SECONDS + WAIT))
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.3
	done
}
if [ ! -x "$CTL" ]; then
	skip "the controller with the chart's args and RBAC" "$CTL not built"
elif ! token=$(k create token "$SA" -n "$NS" --duration=1h 2>&1); then
	fail "token for $NS/$SA" "$token"
else
	cat >"$DIR/sa.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: helm-test
  cluster:
    server: $PK_K8S_APISERVER
    certificate-authority-data: $(base64 -w0 "$DIR/pki/ca.crt")
users:
- name: $SA
  user:
    token: $token
contexts:
- name: helm-test
  context: {cluster: helm-test, user: $SA}
current-context: helm-test
EOF
	chmod 600 "$DIR/sa.kubeconfig"
	port=$(free_port)
	mapfile -t ctl_args < <(k get "$D" -n "$NS" \
		-o jsonpath='{range .spec.template.spec.containers[0].args[*]}{@}{"\n"}{end}')
	ctl_args=("${ctl_args[@]/#--health-addr=*/--health-addr=127.0.0.1:$port}")
	POD_NAME=helm-test-pod "$CTL" --kubeconfig="$DIR/sa.kubeconfig" "${ctl_args[@]}" \
		>"$DIR/logs/controller.log" 2>&1 &
	ctl_pid=$!
	t=$(date +%s.%N)
	if eventually curl -sf --max-time 2 "http://127.0.0.1:$port/readyz"; then
		pass "controller with the Deployment's args (${ctl_args[*]}) as $NS/$SA: /readyz 200 in $(elapsed "$t")s"
	else
		fail "controller /readyz" "$(curl -s --max-time 2 "http://127.0.0.1:$port/readyz" 2>&1)"
	fi
	holder() { [[ $(jp lease/$REL '{.spec.holderIdentity}') == helm-test-pod_* ]]; }
	if eventually holder; then
		pass "it holds the Lease $NS/$REL"
	else
		fail "Lease $NS/$REL" "holder '$(jp lease/$REL '{.spec.holderIdentity}')'"
	fi
	reconciled() {
		[ -n "$(k get pikocluster edge -n apps -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}')" ] &&
			k get statefulset edge -n apps -o name && k get poddisruptionbudget edge -n apps -o name
	}
	if eventually reconciled; then
		pass "it reconciled apps/edge: StatefulSet and PDB created, status written ($(k get pikocluster edge -n apps \
			-o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'))"
	else
		fail "reconcile apps/edge" "$(k get pikocluster,statefulset,pdb -n apps 2>&1 | tr '\n' ' ')"
	fi
	if grep -qiE 'forbidden|" 403|:403|code=403' "$DIR/logs/controller.log"; then
		fail "controller log" "$(grep -iE -m3 'forbidden|403' "$DIR/logs/controller.log")"
	else
		pass "nothing forbidden in the controller's log"
	fi
	kill -TERM "$ctl_pid"
	end=$((SECONDS + 10))
	while kill -0 "$ctl_pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
	rc=0
	wait "$ctl_pid" || rc=$?
	ctl_pid=""
	check "SIGTERM: the controller exits 0" "$rc" 0
fi

# helm upgrade: 1 replica, debug logs, one namespace, and the ServiceMonitor
# once its API exists (a stand-in CRD for prometheus-operator's).
if out=$(k apply -f - 2>&1 <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
EOF
) && out=$(k wait --for=condition=Established --timeout="${WAIT}s" crd/servicemonitors.monitoring.coreos.com 2>&1); then
	:
else
	fail "ServiceMonitor stand-in CRD" "$out"
fi
t=$(date +%s.%N)
if out=$(helm_ upgrade "$REL" "$CHART" -n "$NS" --timeout 60s --set replicas=1 --set logLevel=debug \
	--set watchNamespace=apps --set metrics.serviceMonitor.enabled=true 2>&1); then
	pass "helm upgrade (replicas 1, debug, watchNamespace apps, ServiceMonitor) ($(elapsed "$t")s)"
else
	fail "helm upgrade" "$out"
fi
check "upgraded Deployment: 1 replica, args" \
	"$(jp "$D" '{.spec.replicas} {.spec.template.spec.containers[0].args}')" \
	'1 ["--lease-namespace=piko-system","--lease-name=piko-controller","--health-addr=0.0.0.0:8081","--log.level=debug","--namespace=apps","--resync=10m"]'
check "upgrade to 1 replica removed the controller's PDB" \
	"$(k get poddisruptionbudget -n "$NS" -l app.kubernetes.io/instance=$REL -o name 2>&1)" ""
check "ServiceMonitor rendered now that the API exists" \
	"$(jp "servicemonitor/$REL" '{.spec.endpoints[0].port} {.spec.selector.matchLabels.app\.kubernetes\.io/component}')" \
	"metrics metrics"
check "helm history: revision 2 deployed" \
	"$(helm_ status "$REL" -n "$NS" -o json 2>&1 | grep -oE '"status":"[a-z-]+"|"version":[0-9]+' | tr '\n' ' ')" \
	'"status":"deployed" "version":2 '

# helm uninstall: the release's objects go, the CRD and the PikoCluster stay.
t=$(date +%s.%N)
if out=$(helm_ uninstall "$REL" -n "$NS" --timeout 60s 2>&1); then
	pass "helm uninstall ($(elapsed "$t")s): $(grep -i 'kept' <<<"$out" | head -1)"
else
	fail "helm uninstall" "$out"
fi
gone() {
	[ -z "$(k get deployment,serviceaccount,service,role,rolebinding,servicemonitor -n "$NS" \
		-l app.kubernetes.io/instance=$REL -o name)" ] &&
		[ -z "$(k get clusterrole,clusterrolebinding -l app.kubernetes.io/instance=$REL -o name)" ]
}
if eventually gone; then
	pass "uninstall removed the Deployment, ServiceAccount, Service, RBAC and ServiceMonitor"
else
	fail "uninstall leftovers" "$(k get deployment,serviceaccount,service,role,rolebinding,servicemonitor -n "$NS" \
		-l app.kubernetes.io/instance=$REL -o name 2>&1 | tr '\n' ' ')"
fi
check "the CRD and the PikoCluster survive the uninstall (crds.keep)" \
	"$(k get pikocluster edge -n apps -o jsonpath='{.metadata.name} {.spec.replicas} {.metadata.deletionTimestamp}' 2>&1) $(jp crd/pikoclusters.piko.dev '{.metadata.deletionTimestamp}')" \
	"edge 2  "

# A new install adopts the kept CRD; with crds.keep=false, uninstall deletes it.
if out=$(helm_ install "$REL" "$CHART" -n "$NS" --timeout 60s --set crds.keep=false 2>&1); then
	pass "helm install again adopts the kept CRD (crds.keep=false this time)"
	check "the CRD lost its keep annotation" \
		"$(jp crd/pikoclusters.piko.dev '{.metadata.annotations.helm\.sh/resource-policy}')" ""
	if out=$(helm_ uninstall "$REL" -n "$NS" --timeout 60s 2>&1) &&
		eventually bash -c "! '$KUBECTL' --request-timeout=10s get crd pikoclusters.piko.dev -o name"; then
		pass "with crds.keep=false, helm uninstall deletes the CRD (and the PikoClusters)"
	else
		fail "uninstall with crds.keep=false" "$out $(jp crd/pikoclusters.piko.dev '{.metadata.name}')"
	fi
else
	fail "install again over the kept CRD" "$out"
fi

# ---- Teardown
t=$(date +%s.%N)
if hack/k8s/down.sh "$DIR" 2>/dev/null; then
	up=0
	pass "down.sh stopped the control plane in $(elapsed "$t")s"
else
	fail "teardown" "down.sh failed"
fi

if [ $failed != 0 ]; then
	for f in "$DIR"/logs/*.log; do
		[ -s "$f" ] || continue
		echo "---- last lines of $f"
		tail -n 15 "$f"
	done
	say "failed: ${failures[*]}"
fi
say "total $(elapsed "$T0")s"
echo "k8s helm: $passed passed, $failed failed, $skipped skipped"
[ $failed = 0 ]
