#!/usr/bin/env python3
"""piko-controller's memory against a REAL control plane (hack/k8s/up.sh), run
by tests/k8s/controller_memory.sh (issue 13 item 6: "memory that does not
grow with what the controller does not read").

    controller_memory.py CONTROLLER_BINARY [COUNTS]     (COUNTS default 20,100,300)

The controller runs with the admin kubeconfig (RBAC is the e2e's concern);
kube-controller-manager runs without its StatefulSet controller (no pods, as
in the e2e: with no kubelet they would stay Pending anyway), but with its
EndpointSlice controller, so every Service has its (empty) EndpointSlice.

For 0 (the baseline: caches synced, nothing to watch) and then each count,
the PikoClusters are created up to that count (server-side apply, batches of
50, replicas 3), and once every cluster's children exist (ConfigMap, 2
Services, StatefulSet, PDB, and the EndpointSlices of both Services) and the
controller is idle (no write for PK_MEM_IDLE seconds, default 4: no
POST, PATCH or DELETE in rest_client_requests_total, the Lease's PUTs aside;
workqueue_depth at most the count, as a cluster whose pods are not ready is
requeued every 15 s), prints VmRSS (/proc/PID/status), the cache's
own size when the controller exposes it (piko_controller_cache_bytes,
piko_controller_cache_objects), and KiB per PikoCluster. Then checks:
  - the slope of RSS between the first and the last count is at most
    PK_MEM_MAX_KIB_PER (30) KiB per PikoCluster;
  - RSS at the last count minus the baseline at 0 is at most
    PK_MEM_MAX_MIB (20) MiB (the baseline is the process with its libraries,
    TLS and buffers; what grows with clusters is what the issue bounds);
  - steady state writes nothing: piko_controller_applies_total, and every
    write but the Lease's, unchanged over 10 s once idle, at every count.
Exit 1 if a check failed. Every wait is bounded (PK_MEM_WAIT seconds per
count, default 240).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CTL = sys.argv[1]
COUNTS = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "20,100,300").split(",")]
WAIT = float(os.environ.get("PK_MEM_WAIT", "240"))
IDLE_S = float(os.environ.get("PK_MEM_IDLE", "4"))
MAX_KIB_PER = float(os.environ.get("PK_MEM_MAX_KIB_PER", "30"))
MAX_MIB = float(os.environ.get("PK_MEM_MAX_MIB", "20"))
NS = "mem"
BATCH = 50
failed = []


def say(msg):
    print(f"controller-memory: {msg}", flush=True)


def check(name, cond, why=""):
    say(f"{'ok  ' if cond else 'FAIL'} {name}{'' if cond or not why else ': ' + why}")
    if not cond:
        failed.append(name)
    return cond


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


DIR = tempfile.mkdtemp(prefix="pikoc-ctl-mem.")
# The Service range: up.sh's /24 holds 254 ClusterIPs, and each PikoCluster has
# one ClusterIP Service (the headless one takes none).
env = dict(os.environ, PK_K8S_CONTROLLERS="*,-statefulset",
           PK_K8S_APISERVER_FLAGS="--service-cluster-ip-range=10.0.0.0/20")
t0 = time.time()
up = subprocess.run([f"{ROOT}/hack/k8s/up.sh", DIR], env=env, capture_output=True, text=True)
if up.returncode != 0:
    say("FAIL control plane did not start:\n" + up.stderr[-3000:])
    sys.exit(1)
say(f"control plane up in {time.time() - t0:.1f} s")
kenv = dict(os.environ, KUBECONFIG=f"{DIR}/kubeconfig")
for line in open(f"{DIR}/env"):
    m = re.match(r"(?:export )?PATH=(.*)", line.strip())
    if m:
        kenv["PATH"] = os.path.expandvars(m.group(1).strip("'\""))
proc = None


def kubectl(*args, input=None, check_rc=True):
    r = subprocess.run(["kubectl", *args], env=kenv, capture_output=True, text=True,
                       input=input, timeout=120)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip()[-1000:]}")
    return r


def count(kind):
    r = kubectl("get", kind, "-n", NS, "-o", "name", "--chunk-size=1000", "-l",
                "app.kubernetes.io/managed-by=piko-controller", check_rc=False)
    return len(r.stdout.split()) if r.returncode == 0 else -1


def metrics():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, val = line.rsplit(" ", 1)
        name = head.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(val)
        m = re.search(r'method="(\w+)"', head)
        if name == "rest_client_requests_total" and m and m.group(1) != "GET" and \
                m.group(1) != "PUT":  # PUT: the Lease's renewals
            out["writes"] = out.get("writes", 0.0) + float(val)
    return out


def rss_kib():
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_for(fn, timeout, step=0.5):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = fn()
        except Exception:  # a transient apiserver error is retried
            v = None
        if v:
            return v
        time.sleep(step)
    return None


def idle(n):
    """True once the controller sent no write (apply, status, Secret, Event,
    delete) for IDLE_S and its work queue holds no more than the n clusters'
    own requeues (a cluster whose pods are not ready is looked at again
    every 15 s, and workqueue_depth counts those waiting keys)."""
    m0 = metrics()
    if not m0 or m0.get("workqueue_depth", n + 1) > n:
        return False
    time.sleep(IDLE_S)
    m1 = metrics()
    return m1.get("workqueue_depth", n + 1) <= n and m1.get("writes") == m0.get("writes")


def create(lo, hi):
    for b in range(lo, hi, BATCH):
        items = [{"apiVersion": "piko.dev/v1alpha1", "kind": "PikoCluster",
                  "metadata": {"name": f"c{i:04d}", "namespace": NS},
                  "spec": {"replicas": 3}} for i in range(b, min(hi, b + BATCH))]
        kubectl("apply", "--server-side", "--field-manager=memory-test", "-f", "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def children_exist(n):
    want = {"configmaps": n, "services": 2 * n, "statefulsets": n,
            "poddisruptionbudgets": n, "endpointslices": 2 * n}
    have = {k: count(k) for k in want}
    return have == want and have


def start_controller():
    global proc, PORT
    PORT = free_port()
    log = open(f"{DIR}/logs/controller.log", "a+")
    proc = subprocess.Popen([CTL, "--kubeconfig", f"{DIR}/kubeconfig", "--identity", "mem",
                             "--health-addr", f"127.0.0.1:{PORT}"],
                            stdout=log, stderr=subprocess.STDOUT)
    return check("controller ready", wait_for(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz",
                                       timeout=2).status == 200, 60)) and \
        wait_for(lambda: metrics().get("leader_election_master_status") == 1, 60)


def main():
    kubectl("apply", "-f", f"{ROOT}/crds/")
    kubectl("wait", "--for=condition=Established", "crd/pikoclusters.piko.dev", "--timeout=30s")
    kubectl("create", "namespace", NS)
    # The controller's own Deployment (in crds/) has no pods here (no
    # scheduler): this process is the only controller.
    if not start_controller():
        return
    wait_for(lambda: idle(0), 30)
    rows = []
    have = 0
    for n in [0] + COUNTS:
        t = time.time()
        create(have, n)
        have = n
        t_applied = time.time() - t
        ok = wait_for(lambda: children_exist(n), WAIT, 1.0)
        t_children = time.time() - t
        if not check(f"{n}: every cluster's children exist", ok, json.dumps(children_exist(n))):
            break
        if not check(f"{n}: the controller is idle", wait_for(lambda: idle(n), WAIT, 0.5)):
            break
        t_idle = time.time() - t
        m0 = metrics()
        time.sleep(10)
        m = metrics()
        rss = rss_kib()
        applied = m.get("piko_controller_applies_total", 0) - \
            m0.get("piko_controller_applies_total", 0)
        writes = m.get("writes", 0) - m0.get("writes", 0)
        check(f"{n}: steady state writes nothing (over 10 s: {applied:g} applies, "
              f"{writes:g} writes of any kind but the Lease's)", applied == 0 and writes == 0)
        rows.append((n, rss, m.get("piko_controller_cache_bytes"),
                     m.get("piko_controller_cache_objects")))
        say(f"{n} clusters: applied in {t_applied:.1f} s, children in {t_children:.1f} s, "
            f"idle in {t_idle:.1f} s; VmRSS {rss / 1024:.1f} MiB"
            + (f", cache {rows[-1][2] / 1024:.0f} KiB in {rows[-1][3]:g} objects"
               if rows[-1][2] is not None else "")
            + (f", {(rss - rows[0][1]) / n:.1f} KiB per PikoCluster over the baseline"
               if n else " (baseline)"))
    if len(rows) < len(COUNTS) + 1:
        return
    say("   count   VmRSS MiB   over base MiB   KiB/cluster" +
        ("   cache KiB" if rows[-1][2] is not None else ""))
    for n, rss, cb, _ in rows:
        say(f"   {n:5d}   {rss / 1024:9.1f}   {(rss - rows[0][1]) / 1024:13.1f}   "
            + (f"{(rss - rows[0][1]) / n:11.1f}" if n else f"{'-':>11}")
            + (f"   {cb / 1024:9.0f}" if cb is not None else ""))
    (n1, r1, _, _), (n2, r2, _, _) = rows[1], rows[-1]
    slope = (r2 - r1) / (n2 - n1) if n2 > n1 else 0
    check(f"slope {n1}->{n2}: {slope:.1f} KiB per PikoCluster (<= {MAX_KIB_PER:g})",
          slope <= MAX_KIB_PER)
    over = (r2 - rows[0][1]) / 1024
    # Not asserted: the same clusters read by a controller that starts with
    # them there (its first LISTs, pages of objects parsed at once, rather
    # than one watch event at a time).
    proc.terminate()
    proc.wait(timeout=20)
    t = time.time()
    if start_controller() and wait_for(lambda: idle(n2), WAIT, 0.5):
        time.sleep(10)
        say(f"figure: restarted with {n2} clusters: idle in {time.time() - t - 10:.1f} s, "
            f"VmRSS {rss_kib() / 1024:.1f} MiB")
    check(f"at {n2}: {over:.1f} MiB over the 0-cluster baseline of "
          f"{rows[0][1] / 1024:.1f} MiB (<= {MAX_MIB:g}; total VmRSS {r2 / 1024:.1f} MiB)",
          over <= MAX_MIB)


try:
    main()
except Exception as e:  # noqa: BLE001 - report and tear down
    failed.append(repr(e))
    say(f"FAIL {e!r}")
finally:
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    subprocess.run([f"{ROOT}/hack/k8s/down.sh", DIR], capture_output=True)
    say(f"total {time.time() - t0:.0f} s")
    if failed:
        say(f"{len(failed)} FAILED: {', '.join(failed)} (logs in {DIR}/logs)")
        sys.exit(1)
    say("all ok")
    subprocess.run(["rm", "-rf", DIR])
