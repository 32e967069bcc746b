#!/usr/bin/env bash
# Tests of the Helm chart charts/piko-agent (a Deployment of `piko agent
# start`), against a real control plane (hack/k8s/up.sh, torn down on exit),
# with the helm and kubectl that hack/k8s/build.sh builds:
#
#   tests/k8s/helm_agent.sh [BUILD_DIR]     (default build)
#
# Without a cluster (while the control plane starts):
#   - helm lint --strict with each ci/*-values.yaml (the defaults alone are
#     refused: server.url and a listener are required);
#   - values.schema.json refuses: no server.url, a server.url that is not
#     http(s)://, no listeners, a bad protocol, an endpointId with '/', an
#     unknown key (top level and in a listener), a token together with an
#     existing Secret, an access log with both header lists; a terminationGracePeriodSeconds not above the grace
#     period fails the render;
#   - the listeners are rendered into the ConfigMap's agent.yaml exactly
#     (parsed and compared as data), with server.enabled on the metrics port;
#   - the token: from a value (a chart Secret) or from an existing Secret,
#     reaching the agent as PIKO_TOKEN and --connect.token=$(PIKO_TOKEN); the
#     token itself never appears in the ConfigMap, the Deployment or the args;
#   - the CA bundle: inline (a ConfigMap), existing Secret or ConfigMap,
#     mounted at /etc/piko/tls and named by connect.tls.root_cas;
#   - the pod: PodSecurity "restricted" fields, no service account token,
#     probes /ready and /health on the port named metrics, the termination
#     grace period above the agent's.
# Against the control plane:
#   - helm template | kubectl apply --dry-run=server (ci values) in a
#     namespace enforcing PodSecurity restricted: accepted, no warning (and
#     a warning once the container's securityContext is emptied);
#   - helm install: the objects as expected; the ReplicaSet's pod is
#     admitted under PodSecurity restricted (it stays Pending: no kubelet);
#   - helm upgrade with a listener added: the ConfigMap has it and the
#     Deployment's checksum/config annotation changed (a rollout);
#   - helm uninstall: the release's objects go.
# When BUILD_DIR/bin/piko exists: the agent.yaml the chart renders, run by
# the real binary (`piko agent start --config.path <it>` with the
# Deployment's args) against a `piko server` on loopback with a token:
# /ready becomes 200 and a request reaches the service through it.
# Exit 0 when all passed, else 1 (naming what failed).
# PK_K8S_KEEP=1 keeps the temporary directory (kept anyway on failure).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${1:-build}
CHART=$ROOT/charts/piko-agent
NS=apps
REL=edge-agent
WAIT=${PK_K8S_WAIT:-30} # bound on each wait, seconds
PIKO=$ROOT/$BUILD/bin/piko

T0=$(date +%s.%N)
passed=0 failed=0 skipped=0 failures=()
say() { echo "k8s-helm-agent: $*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
pass() { passed=$((passed + 1)); say "ok   $1"; }
fail() {
	failed=$((failed + 1))
	failures+=("$1")
	say "FAIL $1${2:+: $2}"
}
skip() { skipped=$((skipped + 1)); say "skip $1${2:+: $2}"; }
check() { # what, got, want
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', want '$3'"; fi
}

bins=$(hack/k8s/build.sh) || { say "FAIL build: hack/k8s/build.sh failed"; exit 1; }
KUBECTL=$(awk '$1 == "kubectl" { print $2 }' <<<"$bins")
HELM=$(awk '$1 == "helm" { print $2 }' <<<"$bins")

DIR=$(mktemp -d "${TMPDIR:-/tmp}/pikoc-k8s-helm-agent.XXXXXX")
mkdir -p "$DIR/logs" "$DIR/helm"
export HELM_CACHE_HOME=$DIR/helm/cache HELM_CONFIG_HOME=$DIR/helm/config
export HELM_DATA_HOME=$DIR/helm/data KUBECACHEDIR=$DIR/kube-cache
export KUBECONFIG=$DIR/kubeconfig

up_pid="" up=0 bg_pids=()
finish() {
	local rc=$?
	for p in "${bg_pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${bg_pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
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

say "starting the control plane in $DIR"
t_up=$(date +%s.%N)
hack/k8s/up.sh "$DIR" >"$DIR/up.out" 2>"$DIR/up.err" &
up_pid=$!

k() { "$KUBECTL" --request-timeout=15s "$@"; }
tpl() { "$HELM" template "$REL" "$CHART" -n "$NS" "$@"; }
MIN=(-f "$CHART/ci/minimal-values.yaml")

# ---- 1. Without a cluster

for f in "$CHART"/ci/*-values.yaml; do
	if out=$("$HELM" lint --strict "$CHART" -f "$f" 2>&1); then
		pass "helm lint --strict -f ci/${f##*/}"
	else
		fail "helm lint --strict -f ci/${f##*/}" "$out"
	fi
done

# Bad values: lint and template both fail, the message naming the field.
refuse() { # what, expected text, helm flags...
	local what=$1 want=$2 out
	shift 2
	if out=$("$HELM" lint --strict "$CHART" "$@" 2>&1); then
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
L0=(--set 'listeners[0].endpointId=a,listeners[0].addr=svc:80')
refuse "no server.url" "missing property 'url'" "${L0[@]}"
refuse "server.url ws://x" "at '/server/url'" "${L0[@]}" --set server.url=ws://x:8001
refuse "server.url without a scheme" "at '/server/url'" "${L0[@]}" --set server.url=piko:8001
refuse "no listeners" "at '/listeners': minItems" --set server.url=http://piko:8001
refuse "protocol udp" "at '/listeners/0/protocol'" "${MIN[@]}" --set 'listeners[0].protocol=udp'
refuse "an endpointId with '/'" "at '/listeners/0/endpointId'" "${MIN[@]}" --set 'listeners[0].endpointId=a/b'
refuse "a listener without addr" "missing property 'addr'" --set server.url=http://piko:8001 \
	--set 'listeners[0].endpointId=a'
refuse "an unknown key (replica)" "additional properties 'replica' not allowed" "${MIN[@]}" --set replica=2
refuse "an unknown listener key (endpoint)" "additional properties 'endpoint' not allowed" \
	"${MIN[@]}" --set 'listeners[0].endpoint=x'
refuse "a bad listener timeout" "at '/listeners/0/timeout'" "${MIN[@]}" --set 'listeners[0].timeout=soon'
refuse "an access log with both header lists" "at '/listeners/0/accessLog/requestHeaders'" \
	"${MIN[@]}" --set 'listeners[0].accessLog.requestHeaders.allowList={a}' \
	--set 'listeners[0].accessLog.requestHeaders.blockList={b}'
refuse "auth.token with auth.existingSecret" "at '/auth'" "${MIN[@]}" --set auth.token=t \
	--set auth.existingSecret=s
if out=$(tpl "${MIN[@]}" --set terminationGracePeriodSeconds=60 2>&1); then
	fail "terminationGracePeriodSeconds 60 with gracePeriodSeconds 60" "accepted"
elif grep -qF 'must exceed gracePeriodSeconds' <<<"$out"; then
	pass "terminationGracePeriodSeconds must exceed gracePeriodSeconds (60 with 60 refused)"
else
	fail "terminationGracePeriodSeconds check" "$out"
fi

# Rendering, parsed as data (python3-yaml).
py() { python3 -c "$1" "${@:2}"; }
# file, kind, name -> the object as JSON
obj() {
	py '
import json, sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == sys.argv[2] and d["metadata"]["name"] == sys.argv[3]:
        print(json.dumps(d)); break
' "$@"
}
# file -> the ConfigMap agent.yaml as canonical JSON
agent_yaml() {
	py '
import json, sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == sys.argv[2]:
        print(json.dumps(yaml.safe_load(d["data"]["agent.yaml"]), sort_keys=True)); break
' "$1" "$REL-piko-agent"
}
canon() { py 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin), sort_keys=True))'; }

if tpl -f "$CHART/ci/full-values.yaml" >"$DIR/full.yaml" 2>"$DIR/logs/full.err"; then
	want=$(canon <<'EOF'
connect:
  url: https://piko.example.com:8001/base
  timeout: 1m
  tenant_id: tenant-a
  tls:
    root_cas: /etc/piko/tls/ca.crt
listeners:
  - endpoint_id: web
    protocol: http
    addr: http://web.apps.svc:8080/api
    timeout: 30s
    access_log:
      level: warn
      request_headers: {block_list: [authorization, cookie]}
      response_headers: {allow_list: [content-type]}
  - endpoint_id: db
    protocol: tcp
    addr: postgres.apps.svc:5432
    timeout: 10s
    access_log: {disable: true}
  - endpoint_id: "3000"
    protocol: http
    addr: "3000"
    timeout: 10s
log:
  level: debug
grace_period: 30s
server:
  enabled: true
  bind_addr: ":9090"
EOF
)
	check "ci/full-values.yaml: the ConfigMap's agent.yaml is exactly the listeners and settings" \
		"$(agent_yaml "$DIR/full.yaml")" "$want"
	dep=$(obj "$DIR/full.yaml" Deployment "$REL-piko-agent")
	check "full: args, token env from the existing Secret, CA volume, grace period" \
		"$(py '
import json, sys
d = json.loads(sys.argv[1]); s = d["spec"]["template"]["spec"]; c = s["containers"][0]
env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in c["env"]}
print(c["args"], env["PIKO_TOKEN"], [v.get("configMap") for v in s["volumes"]],
      [m["mountPath"] for m in c["volumeMounts"]], s["terminationGracePeriodSeconds"],
      c["ports"][0], c["image"])
' "$dep")" \
		"['agent', 'start', '--config.path=/etc/piko/agent.yaml', '--connect.token=\$(PIKO_TOKEN)', '--log.subsystems=client'] {'name': 'piko-agent-token', 'key': 'jwt'} [{'name': '$REL-piko-agent'}, {'name': '$REL-piko-agent-ca'}] ['/etc/piko/agent.yaml', '/etc/piko/tls'] 45 {'name': 'metrics', 'containerPort': 9090, 'protocol': 'TCP'} ghcr.io/pikoc/piko:0.1.0@sha256:0000000000000000000000000000000000000000000000000000000000000000"
	check "full: the inline CA bundle is a ConfigMap (key ca.crt)" \
		"$(obj "$DIR/full.yaml" ConfigMap "$REL-piko-agent-ca" | py 'import json, sys; print(json.load(sys.stdin)["data"]["ca.crt"].splitlines()[0])')" \
		"-----BEGIN CERTIFICATE-----"
	check "full: no chart Secret with an existing one" "$(grep -c '^kind: Secret' "$DIR/full.yaml" || true)" 0
else
	fail "render ci/full-values.yaml" "$(cat "$DIR/logs/full.err")"
fi

# Defaults (ci/minimal-values.yaml): the pod.
if tpl "${MIN[@]}" >"$DIR/min.yaml" 2>"$DIR/logs/min.err"; then
	check "minimal: agent.yaml" "$(agent_yaml "$DIR/min.yaml")" "$(canon <<'EOF'
connect: {url: "http://piko.piko-system.svc:8001", timeout: 30s}
listeners: [{endpoint_id: my-endpoint, protocol: http, addr: "my-service:80", timeout: 10s}]
log: {level: info}
grace_period: 60s
server: {enabled: true, bind_addr: ":5000"}
EOF
)"
	dep=$(obj "$DIR/min.yaml" Deployment "$REL-piko-agent")
	check "minimal: PodSecurity restricted fields, no SA token, resources, probes, grace 75 > 60" \
		"$(py '
import json, sys
d = json.loads(sys.argv[1]); s = d["spec"]["template"]["spec"]; c = s["containers"][0]
p, sc = s["securityContext"], c["securityContext"]
print(p["runAsNonRoot"], p["runAsUser"], p["seccompProfile"]["type"], sc["allowPrivilegeEscalation"],
      sc["capabilities"]["drop"], sc["readOnlyRootFilesystem"], s["automountServiceAccountToken"],
      c["resources"]["requests"], c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"],
      s["terminationGracePeriodSeconds"], c["args"], "env" in c, c["image"], c["imagePullPolicy"])
' "$dep")" \
		"True 65532 RuntimeDefault False ['ALL'] True False {'cpu': '10m', 'memory': '16Mi'} {'path': '/ready', 'port': 'metrics'} {'path': '/health', 'port': 'metrics'} 75 ['agent', 'start', '--config.path=/etc/piko/agent.yaml'] False ghcr.io/pikoc/piko:0.1.0 IfNotPresent"
	check "minimal: kinds (no Secret without a token, no CA ConfigMap)" \
		"$(grep -E '^kind: ' "$DIR/min.yaml" | awk '{ print $2 }' | sort | tr '\n' ' ')" "ConfigMap Deployment "
else
	fail "render ci/minimal-values.yaml" "$(cat "$DIR/logs/min.err")"
fi

# The token from a value: a chart Secret, PIKO_TOKEN from it, never in the
# clear anywhere else.
TOKEN=tok-$RANDOM$RANDOM-very-secret
if tpl "${MIN[@]}" --set auth.token="$TOKEN" >"$DIR/token.yaml" 2>"$DIR/logs/token.err"; then
	sec=$(obj "$DIR/token.yaml" Secret "$REL-piko-agent-token")
	check "auth.token: a chart Secret holds it (base64)" \
		"$(py 'import json, sys, base64; print(base64.b64decode(json.loads(sys.argv[1])["data"]["token"]).decode())' "$sec")" "$TOKEN"
	check "auth.token: the token appears only in the Secret (not in the ConfigMap, Deployment or args)" \
		"$(grep -c -- "$TOKEN" "$DIR/token.yaml" || true) $(obj "$DIR/token.yaml" Deployment "$REL-piko-agent" | grep -c -- "$TOKEN" || true) $(obj "$DIR/token.yaml" ConfigMap "$REL-piko-agent" | grep -c -- "$TOKEN" || true)" \
		"0 0 0"
	check "auth.token: PIKO_TOKEN from the chart Secret, --connect.token=\$(PIKO_TOKEN)" \
		"$(obj "$DIR/token.yaml" Deployment "$REL-piko-agent" | py '
import json, sys
c = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]
print(c["env"][0]["name"], c["env"][0]["valueFrom"]["secretKeyRef"], c["args"][3])')" \
		"PIKO_TOKEN {'name': '$REL-piko-agent-token', 'key': 'token'} --connect.token=\$(PIKO_TOKEN)"
else
	fail "render with auth.token" "$(cat "$DIR/logs/token.err")"
fi

# CAs from an existing Secret or ConfigMap.
vol() { # helm flags... -> the ca volume as JSON
	tpl "${MIN[@]}" "$@" --show-only templates/deployment.yaml | py '
import json, sys, yaml
s = yaml.safe_load(sys.stdin)["spec"]["template"]["spec"]
print(json.dumps([v for v in s["volumes"] if v["name"] == "ca"], sort_keys=True))'
}
check "tls.existingSecret: the Secret's key mounted" "$(vol --set tls.existingSecret=corp-ca --set tls.key=bundle.pem)" \
	'[{"name": "ca", "secret": {"items": [{"key": "bundle.pem", "path": "bundle.pem"}], "secretName": "corp-ca"}}]'
check "tls.existingConfigMap: the ConfigMap's key mounted" "$(vol --set tls.existingConfigMap=corp-ca)" \
	'[{"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "corp-ca"}, "name": "ca"}]'
check "tls.existingSecret: connect.tls.root_cas names the file" \
	"$(tpl "${MIN[@]}" --set tls.existingSecret=corp-ca --set tls.key=bundle.pem >"$DIR/ca.yaml" 2>&1 && agent_yaml "$DIR/ca.yaml" | py 'import json, sys; print(json.load(sys.stdin)["connect"]["tls"])')" \
	"{'root_cas': '/etc/piko/tls/bundle.pem'}"

# ---- 2. The real binary runs the rendered agent.yaml

if [ ! -x "$PIKO" ]; then
	skip "the real agent runs the chart's agent.yaml" "$PIKO not built"
else
	ports=$(python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
	read -r P_PROXY P_UP P_ADMIN P_CLUSTER P_AGENT P_SVC <<<"$ports"
	SECRET=hmac-$RANDOM$RANDOM
	JWT=$(py '
import base64, hashlib, hmac, json, sys, time
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b(json.dumps({"exp": int(time.time()) + 3600}).encode())
s = b(hmac.new(sys.argv[1].encode(), (h + "." + p).encode(), hashlib.sha256).digest())
print(h + "." + p + "." + s)' "$SECRET")
	"$PIKO" server --proxy.bind-addr "127.0.0.1:$P_PROXY" --upstream.bind-addr "127.0.0.1:$P_UP" \
		--admin.bind-addr "127.0.0.1:$P_ADMIN" --cluster.bind-addr "127.0.0.1:$P_CLUSTER" \
		--upstream.auth.hmac-secret-key "$SECRET" >"$DIR/logs/server.log" 2>&1 &
	bg_pids+=($!)
	(cd "$DIR" && mkdir -p svc && echo hello-from-svc >svc/index.html &&
		exec python3 -m http.server "$P_SVC" --bind 127.0.0.1 --directory svc) >"$DIR/logs/svc.log" 2>&1 &
	bg_pids+=($!)
	# The chart's rendering for this server, the agent.yaml and args taken
	# from it; the token reaches the agent as PIKO_TOKEN, as in the pod.
	tpl --set server.url="http://127.0.0.1:$P_UP" --set metrics.port="$P_AGENT" \
		--set 'listeners[0].endpointId=web,listeners[0].addr=127.0.0.1:'"$P_SVC" \
		--set 'listeners[1].endpointId=raw,listeners[1].protocol=tcp,listeners[1].addr=127.0.0.1:'"$P_SVC" \
		--set auth.token="$JWT" --set logLevel=debug >"$DIR/run.yaml" 2>"$DIR/logs/run.err" || true
	py '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ConfigMap" and "agent.yaml" in d.get("data", {}):
        open(sys.argv[2], "w").write(d["data"]["agent.yaml"])
    if d and d["kind"] == "Deployment":
        open(sys.argv[3], "w").write("\n".join(d["spec"]["template"]["spec"]["containers"][0]["args"]) + "\n")
' "$DIR/run.yaml" "$DIR/agent.yaml" "$DIR/args" 2>"$DIR/logs/extract.err" || true
	mapfile -t args <"$DIR/args"
	# The pod's mount point and $(PIKO_TOKEN) as the kubelet expands them.
	args=("${args[@]/#--config.path=*/--config.path=$DIR/agent.yaml}")
	args=("${args[@]//\$(PIKO_TOKEN)/$JWT}")
	PIKO_TOKEN=$JWT "$PIKO" "${args[@]}" >"$DIR/logs/agent.log" 2>&1 &
	agent_pid=$!
	bg_pids+=($agent_pid)
	ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$P_AGENT/ready")" = 200 ]; }
	end=$((SECONDS + WAIT))
	until ready || [ $SECONDS -ge $end ] || ! kill -0 "$agent_pid" 2>/dev/null; do sleep 0.2; done
	if ready; then
		pass "piko ${args[*]//$JWT/<token>}: the chart's agent.yaml is accepted, /ready 200 (both tunnels up, token checked)"
	else
		fail "the real agent with the chart's agent.yaml" \
			"/ready: $(curl -s --max-time 2 "http://127.0.0.1:$P_AGENT/ready" 2>&1); $(tail -5 "$DIR/logs/agent.log")"
	fi
	check "a request through the server reaches the service over the chart-configured agent" \
		"$(curl -s --max-time 5 -H 'x-piko-endpoint: web' "http://127.0.0.1:$P_PROXY/index.html")" hello-from-svc
	check "/metrics on the metrics port counts it" \
		"$(curl -s --max-time 5 "http://127.0.0.1:$P_AGENT/metrics" | grep -c '^piko_agent_requests_total{endpoint="web",method="GET",status="200"} 1$')" 1
	check "/health 200" "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$P_AGENT/health")" 200
	kill -TERM "$agent_pid" 2>/dev/null || true
	rc=0
	wait "$agent_pid" || rc=$?
	check "SIGTERM: the agent exits 0" "$rc" 0
fi

# ---- 3. The control plane

if ! wait "$up_pid"; then
	up_pid=""
	say "FAIL up: hack/k8s/up.sh could not bring the control plane up"
	cat "$DIR/up.err" >&2
	exit 1
fi
up_pid="" up=1
say "control plane up after $(elapsed "$t_up")s (the offline checks ran meanwhile)"
# shellcheck disable=SC1091
. "$DIR/env"

eventually() { # command... (until it succeeds, up to WAIT seconds)
	local end=$((SECONDS + WAIT))
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.3
	done
}

# A namespace that enforces PodSecurity restricted (and warns about it).
if out=$(k create namespace "$NS" 2>&1) &&
	out=$(k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted \
		pod-security.kubernetes.io/warn=restricted 2>&1) &&
	out=$(k create secret generic piko-agent-token -n "$NS" --from-literal=jwt=x 2>&1); then
	pass "namespace $NS enforces PodSecurity restricted"
else
	fail "namespace $NS" "$out"
fi
for f in "$CHART"/ci/*-values.yaml; do
	if out=$(tpl -f "$f" 2>"$DIR/logs/render.err" | k apply --dry-run=server -f - 2>&1) &&
		! grep -qi 'warning' <<<"$out"; then
		pass "helm template -f ci/${f##*/} | kubectl apply --dry-run=server: $(wc -l <<<"$out") objects, no PodSecurity warning"
	else
		fail "server dry run -f ci/${f##*/}" "$out $(cat "$DIR/logs/render.err")"
	fi
done

# ... and the check has teeth: without the container securityContext the
# same dry run is warned about.
if out=$(tpl "${MIN[@]}" --set securityContext=null 2>"$DIR/logs/render.err" |
	k apply --dry-run=server -f - 2>&1) && grep -q 'would violate PodSecurity "restricted' <<<"$out"; then
	pass "without securityContext the dry run warns: $(grep -o 'would violate PodSecurity[^:]*' <<<"$out" | head -1)"
else
	fail "PodSecurity warning without securityContext" "$out"
fi

jp() { k get "$1" -n "$NS" -o jsonpath="$2" 2>&1; }
D=deployment/$REL-piko-agent
CM=configmap/$REL-piko-agent
t=$(date +%s.%N)
if out=$("$HELM" install "$REL" "$CHART" -n "$NS" "${MIN[@]}" --set auth.token="$TOKEN" --timeout 60s 2>&1); then
	pass "helm install $REL into $NS ($(elapsed "$t")s)"
	grep -q 'my-endpoint (http) -> my-service:80' <<<"$out" || fail "install NOTES" "$out"
else
	fail "helm install" "$out"
fi
check "Deployment: replicas, image, args, probes" \
	"$(jp "$D" '{.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].args} {.spec.template.spec.containers[0].readinessProbe.httpGet.path} {.spec.template.spec.containers[0].livenessProbe.httpGet.path}')" \
	'1 ghcr.io/pikoc/piko:0.1.0 ["agent","start","--config.path=/etc/piko/agent.yaml","--connect.token=$(PIKO_TOKEN)"] /ready /health'
check "the token Secret exists, and the token is in no other object" \
	"$(jp "secret/$REL-piko-agent-token" '{.data.token}' | base64 -d) $(k get "$D" "$CM" -n "$NS" -o yaml | grep -c -- "$TOKEN" || true)" \
	"$TOKEN 0"
pod_admitted() { [ -n "$(k get pods -n "$NS" -l app.kubernetes.io/instance=$REL -o name)" ]; }
if eventually pod_admitted; then
	pass "the ReplicaSet's pod is admitted under PodSecurity restricted ($(k get pods -n "$NS" -l app.kubernetes.io/instance=$REL -o jsonpath='{.items[0].status.phase}'): no kubelet)"
else
	fail "pod admitted" "$(k get events -n "$NS" --field-selector reason=FailedCreate -o jsonpath='{.items[*].message}' 2>&1 | head -c 600)"
fi

sum1=$(jp "$D" '{.spec.template.metadata.annotations.checksum/config}')
gen1=$(jp "$D" '{.metadata.generation}')
t=$(date +%s.%N)
if out=$("$HELM" upgrade "$REL" "$CHART" -n "$NS" "${MIN[@]}" --set auth.token="$TOKEN" \
	--set 'listeners[1].endpointId=db,listeners[1].protocol=tcp,listeners[1].addr=postgres:5432' \
	--timeout 60s 2>&1); then
	pass "helm upgrade with a listener added ($(elapsed "$t")s)"
else
	fail "helm upgrade" "$out"
fi
check "upgraded ConfigMap: the new listener" \
	"$(jp "$CM" '{.data.agent\.yaml}' | canon | py 'import json, sys; print([(l["endpoint_id"], l["protocol"], l["addr"]) for l in json.load(sys.stdin)["listeners"]])')" \
	"[('my-endpoint', 'http', 'my-service:80'), ('db', 'tcp', 'postgres:5432')]"
sum2=$(jp "$D" '{.spec.template.metadata.annotations.checksum/config}')
if [ -n "$sum1" ] && [ -n "$sum2" ] && [ "$sum1" != "$sum2" ] && [ "$(jp "$D" '{.metadata.generation}')" -gt "$gen1" ]; then
	pass "the Deployment's checksum/config changed (${sum1:0:12} -> ${sum2:0:12}): the pods roll"
else
	fail "checksum/config" "before '$sum1' after '$sum2'"
fi
check "helm status: deployed, revision 2" \
	"$("$HELM" status "$REL" -n "$NS" -o json 2>&1 | grep -oE '"status":"[a-z-]+"|"version":[0-9]+' | tr '\n' ' ')" \
	'"status":"deployed" "version":2 '

t=$(date +%s.%N)
if out=$("$HELM" uninstall "$REL" -n "$NS" --timeout 60s 2>&1); then
	pass "helm uninstall ($(elapsed "$t")s)"
else
	fail "helm uninstall" "$out"
fi
gone() { [ -z "$(k get deployment,configmap,secret -n "$NS" -l app.kubernetes.io/instance=$REL -o name)" ]; }
if eventually gone; then
	pass "uninstall removed the Deployment, ConfigMap and Secret"
else
	fail "uninstall leftovers" "$(k get deployment,configmap,secret -n "$NS" -l app.kubernetes.io/instance=$REL -o name 2>&1 | tr '\n' ' ')"
fi

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
echo "k8s helm agent: $passed passed, $failed failed, $skipped skipped"
[ $failed = 0 ]
