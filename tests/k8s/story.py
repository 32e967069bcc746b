#!/usr/bin/env python3
"""The user's story, end to end on real pods (issue "Kubernetes for real").

Run by tests/k8s/story.sh inside hack/k8s/sandbox.sh (network, mount and PID
namespaces of its own), never directly:

    story.py --piko BIN --testapp IMAGE.tar IMAGE.tar...

Starts a control plane (hack/k8s/up.sh) and a real node (hack/k8s/node-up.sh)
with our images imported, then follows the README's Kubernetes walkthrough
step by step, asserting what a user sees (kubectl output, HTTP statuses and
bodies, bytes through `piko forward`, exit codes):

  1. `kubectl apply -f crds/`: the controller's Deployment runs
     2 pods and one of them holds the Lease;
  2. a PikoCluster of 3: 3 server pods Running and Ready, `kubectl get
     pikoclusters` shows Ready True, Formed True, 3 3, every node's /status/cluster/nodes lists
     all 3 as active;
  3. a web server and a TCP echo server in namespace `app`, and
     `helm install` of charts/piko-agent beside them: requests from the node
     through the PikoCluster's Service (ClusterIP, kube-proxy) reach the web
     server; `piko forward` from the node reaches the echo server;
  4. under a steady request load through the Service, with the agents
     connected: a change of spec.server.logLevel (a rolling update of the 3
     nodes), scale to 5, scale to 2, a server pod deleted by hand, a server
     pod evicted (as `kubectl drain` does): the failed requests of each are
     printed and must be 0;
  5. the same PikoCluster in a namespace that enforces PodSecurity
     `restricted` becomes Ready;
  6. `kubectl delete pikocluster`: its pods and Services are gone.

Prints one "story: ..." line per check and the figures (time to 3 Ready
pods, failed requests per event). Exit 0 only if every check passed.
"""
import argparse
import base64
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NS_CTL = "piko-system"
NS = "piko"
NS_APP = "app"
WEB_BODY = "hello from the web service in namespace app\n"
T0 = time.monotonic()


def say(msg):
    print(f"story: [{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)
    say(f"ok: {what}")


def run(*cmd, input=None, check_rc=True, timeout=120):
    p = subprocess.run(
        cmd, input=input, capture_output=True, text=True, timeout=timeout, env=ENV
    )
    if check_rc and p.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


def kubectl(*args, **kw):
    return run("kubectl", "--request-timeout=20s", *args, **kw)


def kjson(*args):
    return json.loads(kubectl(*args, "-o", "json").stdout)


def wait(what, fn, timeout=120, every=0.5):
    """Poll fn() until it returns a true value; return it. Bounded."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            v = fn()
            if v:
                return v
        except (Failed, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
            last = e
        time.sleep(every)
    raise Failed(f"timed out after {timeout}s waiting for {what}" + (f" (last: {last})" if last else ""))


def apply(doc):
    kubectl("apply", "--server-side", "--field-manager=story", "-f", "-", input=json.dumps(doc))


def http_get(url, headers=None, timeout=5):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def http_put(url, body, timeout=5):
    req = urllib.request.Request(url, data=body.encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# ---- what the cluster looks like


def server_pods(ns=NS, name=NS):
    items = kjson("get", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={name}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod):
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def cluster_formed(n, ns=NS, name=NS):
    """n server pods Ready, and each node lists all n as active."""
    pods = server_pods(ns, name)
    if len(pods) != n or not all(ready(p) for p in pods):
        return False
    for p in pods:
        st, body = http_get(f"http://{p['status']['podIP']}:8002/status/cluster/nodes", timeout=3)
        if st != 200:
            return False
        active = [x for x in json.loads(body) if x.get("status") == "active"]
        if len(active) != n:
            return False
    return pods


def pikocluster_row(ns=NS):
    """NAME READY FORMED REPLICAS AVAILABLE, as `kubectl get pikoclusters` shows them."""
    out = kubectl("get", "pikoclusters", "-n", ns, "--no-headers").stdout.split()
    return out[:5]


# ---- load through the PikoCluster's Service


class Load:
    """Steady requests (new connection each, so kube-proxy spreads them over
    the nodes) to the web endpoint; counts failures with their reasons."""

    def __init__(self, url, rate=20):
        self.url, self.period = url, 1.0 / rate
        self.ok = self.failed = 0
        self.reasons = {}
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            try:
                st, body = http_get(self.url, {"x-piko-endpoint": "web"}, timeout=5)
                good = st == 200 and body == WEB_BODY
                why = f"{st} {body.strip()[:60]}"
            except Exception as e:  # a refused or cut connection is a failure
                good, why = False, type(e).__name__ + ": " + str(e)[:60]
            if good:
                self.ok += 1
            else:
                self.failed += 1
                self.reasons[why] = self.reasons.get(why, 0) + 1
            nxt += self.period
            time.sleep(max(0.0, nxt - time.monotonic()))

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join(10)


def under_load(what, url, action, converged, results, settle=3):
    with Load(url) as load:
        time.sleep(2)
        t = time.monotonic()
        action()
        wait(f"{what} to converge", converged, timeout=180, every=1)
        secs = time.monotonic() - t
        time.sleep(settle)
    results.append((what, load.ok, load.failed, secs))
    say(
        f"{what}: {load.ok + load.failed} requests, {load.failed} failed, converged in {secs:.1f}s"
        + (f" {load.reasons}" if load.failed else "")
    )


# ---- the story


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--piko", required=True)
    ap.add_argument("--testapp", required=True)
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()

    sandbox = os.environ.get("PK_K8S_SANDBOX")
    if not sandbox:
        sys.exit("story.py runs inside hack/k8s/sandbox.sh (tests/k8s/story.sh)")
    d = os.path.join(sandbox, "k8s")
    up = subprocess.run([f"{REPO}/hack/k8s/up.sh", d], capture_output=True, text=True)
    if up.returncode != 0:
        raise Failed(f"hack/k8s/up.sh failed:\n{up.stderr[-3000:]}")
    node = subprocess.run(
        [f"{REPO}/hack/k8s/node-up.sh", d, *a.images, a.testapp], capture_output=True, text=True
    )
    if node.returncode != 0:
        raise Failed(f"hack/k8s/node-up.sh failed:\n{node.stderr[-3000:]}")
    say("test bed: " + " ".join(up.stdout.split()[-2:]) + ", " + " ".join(node.stdout.split()[-2:]))
    env = {}
    with open(os.path.join(d, "env")) as f:
        for line in f:
            line = line.strip().removeprefix("export ")
            if "=" in line:
                k, v = line.split("=", 1)
                env[k] = v.strip('"')
    ENV["KUBECONFIG"] = env["KUBECONFIG"]
    ENV["PATH"] = env["PK_K8S_BIN"] + ":" + ENV["PATH"]
    ENV["HOME"] = os.path.join(sandbox, "home")  # helm's cache and config
    try:
        story(a)
    except Exception:
        diagnose(d)
        raise
    finally:
        # The operator first: a running controller re-creates what the
        # teardown deletes (reference kubernetes.md §3.5b).
        kubectl("delete", "-f", f"{REPO}/crds/controller.yaml", "--wait=false", check_rc=False)
        subprocess.run([f"{REPO}/hack/k8s/down.sh", d], capture_output=True)


def story(a):
    # 1. The operator.
    kubectl("apply", "-f", f"{REPO}/crds/")
    wait(
        "the controller's 2 pods Ready",
        lambda: kjson("get", "deploy", "piko-controller", "-n", NS_CTL)["status"].get("readyReplicas") == 2,
    )
    pods = [p["metadata"]["name"] for p in kjson("get", "pods", "-n", NS_CTL)["items"]]
    holder = wait(
        "a leader",
        lambda: kjson("get", "lease", "piko-controller", "-n", NS_CTL)["spec"].get("holderIdentity"),
    )
    check(any(holder.startswith(p) for p in pods), f"the Lease is held by one of the controller's pods ({holder})")

    # 2. A PikoCluster of 3.
    t = time.monotonic()
    kubectl("apply", "-f", "-", input=README_CLUSTER)
    pods = wait("3 server pods Ready", lambda: len(server_pods()) == 3 and all(ready(p) for p in server_pods()))
    secs_ready = time.monotonic() - t
    say(f"3 server pods Ready {secs_ready:.1f}s after kubectl apply")
    check(wait("kubectl get pikoclusters: True True 3 3",
               lambda: pikocluster_row() == [NS, "True", "True", "3", "3"], timeout=60),
          "kubectl get pikoclusters shows Ready True, Formed True, 3 replicas, 3 available")
    pods = wait("every node to list all 3 as active", lambda: cluster_formed(3), timeout=60)
    check(len(pods) == 3, "/status/cluster/nodes on each of the 3 nodes lists all 3 as active")
    ips = sorted(p["status"]["podIP"] for p in pods)

    # Secure by default: the controller made the cluster key, the nodes
    # load it, and refuse what is not signed with it.
    key = kjson("get", "secret", f"{NS}-cluster-key", "-n", NS)
    check(key["metadata"]["ownerReferences"][0]["kind"] == "PikoCluster" and key["data"].get("key"),
          "the cluster key Secret piko-cluster-key exists, owned by the PikoCluster")
    refused = [http_put(f"http://{ip}:8002/piko/v1/cluster/members",
                        '{"cluster":"piko","generation":1,"members":[]}') for ip in ips]
    check(all(st == 401 for st in refused), f"an unsigned member push is refused by every node ({refused})")

    def pushed():
        for ip in ips:
            st, body = http_get(f"http://{ip}:8002/status/cluster/members", timeout=3)
            m = json.loads(body) if st == 200 else []
            if sorted(x["addr"].rsplit(":", 1)[0] for x in m if "push" in x.get("sources", [])) != ips:
                return False
        return True

    check(wait("the controller's member set on every node", pushed, timeout=60),
          "the controller's member set (all 3) reached every node")
    svc = kjson("get", "svc", NS, "-n", NS)["spec"]["clusterIP"]
    proxy = f"http://{svc}:8000"

    # 3. An application, and the agent beside it.
    kubectl("create", "namespace", NS_APP)
    for doc in app_manifests():
        apply(doc)
    wait("web and echo Deployments available", lambda: all(
        kjson("get", "deploy", n, "-n", NS_APP)["status"].get("availableReplicas") == 1 for n in ("web", "echo")))
    # The README's step 4: a token for the agent's endpoints, minted from
    # the upstream key the controller generated, in a Secret of the app's.
    box = os.environ["PK_K8S_SANDBOX"]
    secret = kjson("get", "secret", f"{NS}-upstream-key", "-n", NS)
    keyfile = os.path.join(box, "upstream.key")
    with open(keyfile, "wb") as f:
        f.write(base64.b64decode(secret["data"]["key"]))
    token = run(a.piko, "token", "create", "--key-file", keyfile, "--endpoint", "web",
                "--endpoint", "echo", "--ttl", "720h").stdout.strip()
    kubectl("create", "secret", "generic", "agent-token", "-n", NS_APP, f"--from-literal=token={token}")
    values = os.path.join(box, "agent-values.json")
    with open(values, "w") as f:
        json.dump(
            {
                "replicas": 2,
                "server": {"url": f"http://{NS}.{NS}.svc:8001"},
                "auth": {"existingSecret": "agent-token"},
                "listeners": [
                    {"endpointId": "web", "protocol": "http", "addr": "web.app.svc:80"},
                    {"endpointId": "echo", "protocol": "tcp", "addr": "echo.app.svc:9000"},
                ],
            },
            f,
        )
    run("helm", "install", "agent", f"{REPO}/charts/piko-agent", "-n", NS_APP, "-f", values,
        "--wait", "--timeout", "120s", timeout=180)
    check(True, "helm install charts/piko-agent with a token minted by piko token create: its pods Ready (tunnels up)")
    # And the generated key is enforced: an upstream without a token is refused.
    c = socket.create_connection((svc, 8001), 5)
    c.settimeout(5)
    c.sendall(b"GET /piko/v1/upstream/web HTTP/1.1\r\nHost: piko\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    line = c.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
    c.close()
    check(line.startswith("HTTP/1.1 401"), f"an upstream connection without a token is refused ({line!r})")

    got = [http_get(proxy + "/", {"x-piko-endpoint": "web"}) for _ in range(30)]
    good = sum(1 for st, body in got if st == 200 and body == WEB_BODY)
    check(good == 30, f"30 of 30 requests through the Service reach the web server ({good} did; "
                      f"others: {[g for g in got if g[0] != 200][:3]})")
    # By the Host header's first label too, as a browser would send it.
    st, body = http_get(proxy + "/", {"Host": "web.example.com"})
    check(st == 200 and body == WEB_BODY, f"routing by Host web.example.com: {st}")

    forward_echo(a.piko, proxy)

    # 4. Changes under load: a rolling update of 3 nodes, scale 3 -> 5 -> 2,
    # a pod deleted by hand, a pod evicted (what `kubectl drain` does to
    # each pod, through the PodDisruptionBudget).
    results = []
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in server_pods()}
    under_load("rolling update of 3 (logLevel debug)", proxy,
               lambda: kubectl("patch", "pikocluster", NS, "-n", NS, "--type=merge",
                               "-p", '{"spec":{"server":{"logLevel":"debug"}}}'),
               lambda: rolled(before) and cluster_formed(3), results)
    under_load("scale 3 to 5", proxy, lambda: kubectl("scale", "pikocluster", NS, "-n", NS, "--replicas=5"),
               lambda: cluster_formed(5) and pikocluster_row() == [NS, "True", "True", "5", "5"], results)
    under_load("scale 5 to 2", proxy, lambda: kubectl("scale", "pikocluster", NS, "-n", NS, "--replicas=2"),
               lambda: cluster_formed(2) and pikocluster_row() == [NS, "True", "True", "2", "2"], results)
    victim = sorted(p["metadata"]["name"] for p in server_pods())[0]
    uid = uid_of(victim)
    under_load(f"pod {victim} deleted", proxy,
               lambda: kubectl("delete", "pod", victim, "-n", NS, "--wait=false"),
               lambda: pod_replaced(victim, uid) and cluster_formed(2), results)
    victim = sorted(p["metadata"]["name"] for p in server_pods())[-1]
    uid2 = uid_of(victim)
    eviction = json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                           "metadata": {"name": victim, "namespace": NS}})
    under_load(f"pod {victim} evicted (as by a drain)", proxy,
               lambda: kubectl("create", "--raw", f"/api/v1/namespaces/{NS}/pods/{victim}/eviction",
                               "-f", "-", input=eviction),
               lambda: pod_replaced(victim, uid2) and cluster_formed(2), results)
    say("failed requests: " + ", ".join(f"{w}: {f}/{o + f}" for w, o, f, _ in results))
    for w, o, f, _ in results:
        check(f == 0, f"{w}: 0 failed requests of {o + f}")
    check(http_get(proxy + "/", {"x-piko-endpoint": "web"}) == (200, WEB_BODY), "still serving after all five")

    # 5. PodSecurity restricted.
    kubectl("create", "namespace", "secure")
    kubectl("label", "namespace", "secure", "pod-security.kubernetes.io/enforce=restricted")
    apply(pikocluster("secure", 1, name="piko"))
    wait("the PikoCluster in the restricted namespace Ready",
         lambda: pikocluster_row("secure") == ["piko", "True", "True", "1", "1"], timeout=120)
    check(True, "a PikoCluster runs in a namespace enforcing PodSecurity restricted")

    # 6. Delete.
    kubectl("delete", "pikocluster", NS, "-n", NS)
    wait("the PikoCluster's pods and Services gone", lambda: not server_pods() and not [
        s for s in kjson("get", "svc", "-n", NS)["items"]], timeout=120)
    check(True, "kubectl delete pikocluster: pods and Services gone")
    run("helm", "uninstall", "agent", "-n", NS_APP, "--wait", "--timeout", "60s", timeout=90)
    say(f"figures: 3 Ready in {secs_ready:.1f}s; " + "; ".join(
        f"{w}: {f} failed of {o + f} ({s:.0f}s)" for w, o, f, s in results))


def diagnose(d):
    """What a user would look at when a step fails."""
    for cmd in (["get", "pods", "-A", "-o", "wide"], ["get", "events", "-A", "--sort-by=.lastTimestamp"],
                ["get", "pikoclusters", "-A", "-o", "yaml"]):
        p = kubectl(*cmd, check_rc=False)
        print(f"---- kubectl {' '.join(cmd)}\n{p.stdout[-6000:]}{p.stderr[-500:]}", flush=True)
    try:
        for pod in kjson("get", "pods", "-A")["items"]:
            if not ready(pod):
                ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
                p = kubectl("logs", "-n", ns, name, "--all-containers", "--tail=30", check_rc=False)
                print(f"---- logs {ns}/{name}\n{p.stdout}{p.stderr[-500:]}", flush=True)
    except Exception as e:
        print(f"---- (no pod logs: {e})")
    for name in ("kubelet", "containerd"):
        path = os.path.join(d, "logs", f"{name}.log")
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                lines = [l for l in f if l[:1] in "EW" or "level=error" in l or "level=warn" in l]
            print(f"---- {name}: last errors\n" + "".join(lines[-25:]), flush=True)


def pod_replaced(name, uid):
    """The StatefulSet re-created pod `name` (same name, new UID) and it is Ready."""
    for p in server_pods():
        if p["metadata"]["name"] == name and p["metadata"]["uid"] != uid and ready(p):
            return True
    return False


def uid_of(name):
    return kjson("get", "pod", name, "-n", NS)["metadata"]["uid"]


def rolled(before):
    pods = server_pods()
    return len(pods) == len(before) and all(
        ready(p) and before.get(p["metadata"]["name"]) not in (None, p["metadata"]["uid"]) for p in pods)


def forward_echo(piko, proxy):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    fwd = subprocess.Popen([piko, "forward", "tcp", f"127.0.0.1:{port}", "echo", "--connect.url", proxy],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait("piko forward listening", lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True,
             timeout=20)
        data = random.randbytes(256 * 1024)
        c = socket.create_connection(("127.0.0.1", port), 10)
        c.settimeout(20)
        threading.Thread(target=c.sendall, args=(data,), daemon=True).start()
        back = b""
        while len(back) < len(data):
            chunk = c.recv(65536)
            if not chunk:
                break
            back += chunk
        c.close()
        check(back == data, f"piko forward tcp: 256 KiB echoed back byte for byte ({len(back)} bytes)")
    finally:
        fwd.terminate()
        fwd.wait(10)


# The README's step 3, as a user saves it.
README_CLUSTER = """apiVersion: v1
kind: Namespace
metadata: {name: piko}
---
apiVersion: piko.dev/v1alpha1
kind: PikoCluster
metadata: {name: piko, namespace: piko}
spec:
  replicas: 3
  auth: {upstream: {generate: true}}   # agents need a token signed by a key made for this cluster
"""


def pikocluster(ns, replicas, name=NS):
    return {
        "apiVersion": "piko.dev/v1alpha1",
        "kind": "PikoCluster",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "server": {"logLevel": "info"}},
    }


def app_manifests():
    """A web server (busybox httpd) and a TCP echo server (busybox nc), the
    test application image (tests/k8s/testapp.sh)."""
    img = "localhost/pikoc-test/app:1"
    sc = {
        "runAsNonRoot": True, "runAsUser": 65532, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }

    def deploy(name, args, port):
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS_APP},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{
                            "name": name, "image": img, "imagePullPolicy": "Never", "args": args,
                            "ports": [{"containerPort": port}], "securityContext": sc,
                            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
                        }],
                    },
                },
            },
        }

    def service(name, port, target):
        return {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS_APP},
            "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": target}]},
        }

    return [
        deploy("web", ["httpd", "-f", "-p", "8080", "-h", "/www"], 8080),
        service("web", 80, 8080),
        deploy("echo", ["nc", "-ll", "-p", "9000", "-e", "/bin/busybox", "cat"], 9000),
        service("echo", 9000, 9000),
    ]


ENV = dict(os.environ)

if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        say(f"FAILED: {e}")
        sys.exit(1)
    say("all checks passed")
