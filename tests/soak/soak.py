#!/usr/bin/env python3
"""The soak: a sanitized piko under a steady mixed load for a long time.

Run by hack/soak.sh (docs/soak.md). Stdlib only. On loopback, free ports:

* a 2-node cluster (`piko server`, cluster key, upstream auth by an HMAC key);
* a threaded HTTP service and a TCP echo (services.py, their own processes);
* agents (tokens from `piko token create`):
    web1  http  web1-L on n1 (long-lived)  + web1-R on n1 (rotating)
    web2  http  web2-L on n2 (long-lived)  + web2-R on n1 (rotating)
    tcp1  tcp   tcp1-L on n1 (long-lived)  + tcp1-R on n2 (rotating)
    exp   http  exp on n2: a 60 s token, left to expire (the server closes
                the tunnel, the agent's reconnect is refused 401 and it exits
                1), then started again with a fresh token
  Rotating agents have 150 s tokens and are restarted in turn (one every
  --rotate-every seconds) with a fresh token: SIGTERM (graceful: no request
  may fail) or, one time in four, SIGKILL (traffic to that endpoint is
  held first, and resumes once both nodes have dropped the dead tunnel:
  a killed tunnel takes its in-flight streams with it by design);
* `piko forward tcp` to tcp1 through n1 and through n2 (long-lived);
* traffic, entering both nodes (n2 holds no web1 tunnel, n1 none of
  web2-L's: those requests cross the node link):
    keep-alive HTTP clients (POST /echo bodies, GET /data, content checked),
    new-connection HTTP clients (Connection: close; by header or Host),
    WebSocket echo sessions (open, 10-30 messages checked, close handshake),
    forward transfers of 1-4 MiB through the TCP echo (sha256 compared);
* every 10 s: VmRSS and open fds (/proc/PID/fd) of every process, written
  to samples.csv (traffic held for the sample, up to 3 s, so fd counts do
  not count requests in flight; rows say whether it was quiet).

At the end every piko process is stopped with SIGTERM and must exit 0 (a
SIGKILLed agent: killed; the expiring agent: 1 with its 401), no stderr of
any run may hold a sanitizer report, no request may have failed, and the
long-lived processes' RSS and fd slopes over the last 50 minutes (the last
5/6 of shorter runs) must not be significantly above the thresholds.
Exit 0 when clean, 1 otherwise.
"""

import argparse
import base64
import csv
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the tree
import services  # noqa: E402
from services import OP_BINARY, OP_CLOSE, OP_TEXT, FrameReader, accept_key, encode_frame  # noqa: E402

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: AddressSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")
ROTATING_TTL = 150
EXPIRING_TTL = 60
LONG_TTL_MARGIN = 3600

# Leak thresholds (docs/soak.md): after warm-up, a long-lived process's
# least-squares slope must not be significantly (2 standard errors) above:
RSS_SLOPE_MAX = 20.0  # KiB/min: 1.2 MiB/h; at ~40 req/s one leaked byte per request is ~2.3 KiB/min
FD_SLOPE_MAX = 0.05  # fds/min: 3 fds/h, where the quiet fd count should be flat


def parse_duration(s):
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", s)
    if not s or not m:
        raise argparse.ArgumentTypeError("duration like 1h, 10m, 90s, 1h30m: %r" % s)
    h, mi, se = (float(x or 0) for x in m.groups())
    return h * 3600 + mi * 60 + se


def now():
    return time.monotonic()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# --- bookkeeping ----------------------------------------------------------------------


class Stats:
    def __init__(self, t0):
        self.t0 = t0
        self.lock = threading.Lock()
        self.counts = {}
        self.errors = []
        self.nerrors = 0
        self.log = None

    def inc(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def error(self, kind, msg):
        line = "[%8.1fs] ERROR %s: %s" % (now() - self.t0, kind, msg)
        with self.lock:
            self.nerrors += 1
            self.counts["errors." + kind] = self.counts.get("errors." + kind, 0) + 1
            if len(self.errors) < 500:
                self.errors.append(line)
        self.note(line)

    def note(self, line):
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            if self.log:
                self.log.write(line + "\n")
                self.log.flush()

    def info(self, msg):
        self.note("[%8.1fs] %s" % (now() - self.t0, msg))


def child_env():
    env = dict(os.environ)
    # A small quarantine (freed memory kept poisoned to catch use after
    # free): RSS grows until the quarantine is full, by about 17 KiB per
    # forwarded connection, so ASan's default of 256 MiB (or even 16 MiB:
    # ~90 KiB/min for a forward at this load, all hour long) would be a
    # slope that is no leak. 1 MiB (and 64 KiB per thread) fills within the
    # warm-up of even the least busy process.
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:quarantine_size_mb=1:"
                   "thread_local_quarantine_size_kb=64:malloc_context_size=20")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    env.setdefault("LSAN_OPTIONS", "")
    return env


class Proc:
    """A process slot: successive runs (incarnations) of one role."""

    def __init__(self, soak, name, role, kind="piko"):
        self.soak = soak
        self.name = name
        self.role = role  # server, agent-L, agent-R, agent-exp, forward, service
        self.kind = kind  # piko or service (ours, not the product)
        self.runs = []  # dicts: pid, argv, stderr, stdout, t_start, t_end, rc, how
        self.p = None
        self.lock = threading.Lock()
        self.token_exp = None

    def start(self, argv):
        n = len(self.runs) + 1
        base = os.path.join(self.soak.out, "%s.%d" % (self.name, n))
        run = {"n": n, "argv": argv, "stderr": base + ".stderr", "stdout": base + ".stdout",
               "t_start": now() - self.soak.t0, "t_end": None, "rc": None, "how": None}
        with open(run["stderr"], "wb") as err, open(run["stdout"], "wb") as out:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      env=child_env(), start_new_session=True)
        run["pid"] = self.p.pid
        self.runs.append(run)
        return self.p

    @property
    def alive(self):
        return self.p is not None and self.p.poll() is None

    @property
    def run(self):
        return self.runs[-1] if self.runs else None

    def stderr_text(self, run=None):
        run = run or self.run
        try:
            with open(run["stderr"], "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self, run=None):
        run = run or self.run
        try:
            with open(run["stdout"], "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def reap(self, how, timeout):
        """Waits for the current run to exit (bounded); records rc/how."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.soak.stats.error("stop", "%s (pid %d) still running %.0fs after %s; SIGKILL"
                                  % (self.name, self.p.pid, timeout, how))
            self.p.kill()
            rc = self.p.wait(timeout=30)
            how = how + "+timeout"
        self.run["rc"] = rc
        self.run["how"] = self.run["how"] or how
        self.run["t_end"] = now() - self.soak.t0
        return rc

    def stop(self, timeout=90):
        if self.p is None or self.run["t_end"] is not None:
            return self.run and self.run["rc"]
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        return self.reap("term", timeout)


# --- HTTP helpers -----------------------------------------------------------------------


def http_json(port, path, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError("GET %s: %d %r" % (path, r.status, body[:200]))
        return json.loads(body.decode() or "null")
    finally:
        c.close()


def wait_until(pred, timeout, interval=0.1, what="condition"):
    deadline = now() + timeout
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried
            last = e
        if now() >= deadline:
            raise TimeoutError("timed out after %.0fs waiting for %s (last error %r)"
                               % (timeout, what, last))
        time.sleep(interval)


# --- the gate: holds traffic for drains and samples ------------------------------------


class Gate:
    def __init__(self, endpoints):
        self.cv = threading.Condition()
        self.paused = {}  # endpoint -> number of holders
        self.inflight = {e: 0 for e in endpoints}

    def enter(self, ep, stop):
        with self.cv:
            while self.paused.get(ep) and not stop.is_set():
                self.cv.wait(0.5)
            self.inflight[ep] += 1

    def leave(self, ep):
        with self.cv:
            self.inflight[ep] -= 1
            self.cv.notify_all()

    def hold(self, eps, timeout):
        """Stops new work on eps; waits (bounded) for work in flight to end.
        Returns whether it did."""
        deadline = now() + timeout
        with self.cv:
            for e in eps:
                self.paused[e] = self.paused.get(e, 0) + 1
            while any(self.inflight[e] for e in eps):
                left = deadline - now()
                if left <= 0:
                    return False
                self.cv.wait(left)
            return True

    def release(self, eps):
        with self.cv:
            for e in eps:
                self.paused[e] -= 1
            self.cv.notify_all()


# --- the soak -----------------------------------------------------------------------------


class Soak:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.duration = args.duration
        self.out = args.out or tempfile.mkdtemp(prefix="piko-soak-")
        os.makedirs(self.out, exist_ok=True)
        self.t0 = now()
        self.stats = Stats(self.t0)
        self.stats.log = open(os.path.join(self.out, "soak.log"), "w")
        self.stop_traffic = threading.Event()
        self.stop_all = threading.Event()
        self.procs = []
        self.topology = threading.Lock()  # one agent change at a time; samples wait
        self.samples = []  # (t, name, run n, pid, rss, fds, quiet)
        self.rng = random.Random(args.seed)
        self.endpoints = ["web1", "web2", "tcp1", "exp"]
        self.gate = Gate(self.endpoints)
        self.threads = []
        self.token_runs = []  # (rc, stderr) of piko token create

    # --- processes ---

    def proc(self, name, role, kind="piko"):
        p = Proc(self, name, role, kind)
        self.procs.append(p)
        return p

    def start_service(self, mode):
        p = self.proc("svc-" + mode, "service", kind="service")
        p.start([sys.executable, "-u", os.path.join(HERE, "services.py"), mode])
        m = wait_until(lambda: re.search(r"listening on [0-9.]+:(\d+)", p.stdout_text()), 10,
                       what="service %s" % mode)
        return p, int(m.group(1))

    def start_servers(self):
        self.secret = os.urandom(24).hex()
        self.key_file = os.path.join(self.out, "upstream.key")
        with open(self.key_file, "w") as f:
            f.write(self.secret)
        cluster_key = os.path.join(self.out, "cluster.key")
        with open(cluster_key, "w") as f:
            f.write(os.urandom(32).hex())
        self.nodes = []
        for i in (1, 2):
            self.nodes.append({"id": "soak-n%d" % i, "proxy": free_port(), "upstream": free_port(),
                               "admin": free_port(), "cluster": free_port()})
        join = ",".join("127.0.0.1:%d" % n["cluster"] for n in self.nodes)
        for n in self.nodes:
            p = self.proc(n["id"], "server")
            n["proc"] = p
            p.start([self.bin, "server",
                     "--proxy.bind-addr", "127.0.0.1:%d" % n["proxy"],
                     "--upstream.bind-addr", "127.0.0.1:%d" % n["upstream"],
                     "--admin.bind-addr", "127.0.0.1:%d" % n["admin"],
                     "--cluster.bind-addr", "127.0.0.1:%d" % n["cluster"],
                     "--cluster.node-id", n["id"], "--cluster.join", join,
                     "--cluster.auth.key-file", cluster_key,
                     "--upstream.auth.hmac-secret-key", self.secret,
                     "--proxy.access-log.level", "debug", "--log.level", "info"])
        for n in self.nodes:
            def ready(n=n):
                if n["proc"].p.poll() is not None:
                    raise SystemExit("%s exited %d:\n%s" % (n["id"], n["proc"].p.poll(),
                                                            n["proc"].stderr_text()[-3000:]))
                c = http.client.HTTPConnection("127.0.0.1", n["admin"], timeout=2)
                try:
                    c.request("GET", "/ready")
                    return c.getresponse().status == 200
                finally:
                    c.close()
            wait_until(ready, 60, what="%s ready" % n["id"])
        want = sorted(n["id"] for n in self.nodes)

        def formed():
            for n in self.nodes:
                got = http_json(n["admin"], "/status/cluster/nodes")
                if sorted(x["id"] for x in got) != want or any(
                        x["status"] != "active" for x in got):
                    return False
            return True
        wait_until(formed, 60, what="cluster formed")
        self.stats.info("cluster up: %s" % ", ".join(
            "%s proxy %d upstream %d admin %d" % (n["id"], n["proxy"], n["upstream"], n["admin"])
            for n in self.nodes))

    def mint(self, ep, ttl):
        r = subprocess.run([self.bin, "token", "create", "--key-file", self.key_file,
                            "--endpoint", ep, "--ttl", "%ds" % ttl],
                           stdin=subprocess.DEVNULL, capture_output=True, env=child_env(),
                           timeout=60)
        err = r.stderr.decode("utf-8", "replace")
        self.token_runs.append((r.returncode, err))
        self.stats.inc("tokens.minted")
        if r.returncode != 0:
            raise RuntimeError("piko token create: exit %d: %s" % (r.returncode, err[-2000:]))
        return r.stdout.decode().strip(), time.time() + ttl

    def agent_argv(self, a, token):
        node = self.nodes[a.node]
        url = "http://127.0.0.1:%d" % node["upstream"]
        if a.proto == "http":
            argv = [self.bin, "agent", "http", a.ep, "127.0.0.1:%d" % self.http_port,
                    "--access-log.level", "debug"]
        else:
            argv = [self.bin, "agent", "tcp", a.ep, "127.0.0.1:%d" % self.echo_port]
        return argv + ["--connect.url", url, "--connect.token", token, "--log.level", "info"]

    def count(self, node, ep):
        """Tunnels of ep on node, as node says."""
        return (http_json(self.nodes[node]["admin"], "/status/upstream/endpoints") or {}).get(ep, 0)

    def peer_count(self, node, ep):
        """Tunnels of ep on node, as the other node says."""
        other = self.nodes[1 - node]
        doc = http_json(other["admin"], "/status/cluster/nodes/%s" % self.nodes[node]["id"])
        return (doc.get("endpoints") or {}).get(ep, 0)

    def wait_count(self, node, ep, n, peer=False, timeout=30):
        wait_until(lambda: self.count(node, ep) == n and (
            not peer or self.peer_count(node, ep) == n), timeout,
            what="%s: %d tunnel(s) of %s%s" % (self.nodes[node]["id"], n, ep,
                                                " (seen by the peer too)" if peer else ""))

    def start_agent(self, a, ttl):
        token, exp = self.mint(a.ep, ttl)
        a.token_exp = exp
        before = self.count(a.node, a.ep)
        a.start(self.agent_argv(a, token))
        self.wait_count(a.node, a.ep, before + 1, peer=True, timeout=60)
        self.stats.inc("agents.started")

    def make_agent(self, name, role, proto, ep, node):
        a = self.proc(name, role)
        a.proto, a.ep, a.node = proto, ep, node
        return a

    def start_forward(self, name, node):
        f = self.proc(name, "forward")
        port = free_port()
        f.port = port
        f.start([self.bin, "forward", "tcp", "127.0.0.1:%d" % port, "tcp1",
                 "--connect.url", "http://127.0.0.1:%d" % self.nodes[node]["proxy"],
                 "--log.level", "info"])
        wait_until(lambda: "forwarding" in f.stderr_text() + f.stdout_text(), 30,
                   what="%s listening" % name)
        return f

    def setup(self):
        self.svc_http, self.http_port = self.start_service("http")
        self.svc_echo, self.echo_port = self.start_service("echo")
        self.start_servers()
        long_ttl = int(self.duration) + LONG_TTL_MARGIN
        self.agents_long = [
            self.make_agent("web1-L", "agent-L", "http", "web1", 0),
            self.make_agent("web2-L", "agent-L", "http", "web2", 1),
            self.make_agent("tcp1-L", "agent-L", "tcp", "tcp1", 0),
        ]
        self.agents_rot = [
            self.make_agent("web1-R", "agent-R", "http", "web1", 0),
            self.make_agent("web2-R", "agent-R", "http", "web2", 0),
            self.make_agent("tcp1-R", "agent-R", "tcp", "tcp1", 1),
        ]
        self.agent_exp = self.make_agent("exp", "agent-exp", "http", "exp", 1)
        for a in self.agents_long:
            self.start_agent(a, long_ttl)
        for a in self.agents_rot:
            self.start_agent(a, ROTATING_TTL)
        self.forwards = [self.start_forward("fwd-n1", 0), self.start_forward("fwd-n2", 1)]
        self.stats.info("agents and forwards up; output in %s" % self.out)

    # --- traffic ---

    def pace(self, rate, fn):
        """Runs fn() about rate times a second until traffic stops."""
        def loop():
            period = 1.0 / rate
            nxt = now()
            while not self.stop_traffic.is_set():
                try:
                    fn()
                except Exception:  # noqa: BLE001 - a bug in the driver: report it
                    self.stats.error("driver", traceback.format_exc())
                nxt += period * self.rng.uniform(0.5, 1.5)
                d = nxt - now()
                if d > 0:
                    self.stop_traffic.wait(d)
                else:
                    nxt = now()
        t = threading.Thread(target=loop, daemon=True)
        self.threads.append(t)
        t.start()

    def http_exchange(self, conn, ep, kind, by_host=False, close=False):
        """One checked request on conn; returns None or an error string."""
        h = {}
        if by_host:
            h["Host"] = "%s.soak.test" % ep
        else:
            h["x-piko-endpoint"] = ep
        if close:
            h["Connection"] = "close"
        if kind == "echo":
            body = os.urandom(self.rng.choice((0, 1, 100, 4096, 30000, 65536, 200000)))
            h["Content-Type"] = "application/octet-stream"
            conn.request("POST", "/echo", body=body, headers=h)
            r = conn.getresponse()
            got = r.read()
            if r.status != 200:
                return "POST /echo %s: status %d body %r" % (ep, r.status, got[:200])
            if got != body or r.getheader("X-Sha256") != hashlib.sha256(body).hexdigest():
                return "POST /echo %s: %d bytes sent, %d back, content differs" % (
                    ep, len(body), len(got))
            self.stats.inc("http.bytes", 2 * len(body))
        else:
            n = self.rng.choice((0, 10, 5000, 65536, 300000))
            seed = self.rng.randrange(1 << 30)
            conn.request("GET", "/data?n=%d&seed=%d" % (n, seed), headers=h)
            r = conn.getresponse()
            got = r.read()
            if r.status != 200:
                return "GET /data %s: status %d body %r" % (ep, r.status, got[:200])
            if got != services.data(n, seed):
                return "GET /data %s: %d bytes expected, %d got, content differs" % (
                    ep, n, len(got))
            self.stats.inc("http.bytes", len(got))
        return None

    def keepalive_client(self, node):
        state = {"conn": None}

        def one():
            ep = self.rng.choice(("web1", "web2"))
            kind = self.rng.choice(("echo", "echo", "data"))
            self.gate.enter(ep, self.stop_traffic)
            try:
                if state["conn"] is None:
                    state["conn"] = http.client.HTTPConnection(
                        "127.0.0.1", self.nodes[node]["proxy"], timeout=60)
                    self.stats.inc("http.keepalive.connections")
                err = self.http_exchange(state["conn"], ep, kind)
            except Exception as e:  # noqa: BLE001
                err = "%s %s via %s: %r" % (kind, ep, self.nodes[node]["id"], e)
                state["conn"].close()
                state["conn"] = None
            finally:
                self.gate.leave(ep)
            self.stats.inc("http.keepalive.requests")
            if err:
                self.stats.error("http-keepalive", err)
        return one

    def newconn_client(self):
        def one():
            node = self.rng.randrange(2)
            ep = self.rng.choice(("web1", "web2"))
            kind = self.rng.choice(("echo", "data"))
            by_host = self.rng.random() < 0.3
            self.gate.enter(ep, self.stop_traffic)
            conn = http.client.HTTPConnection("127.0.0.1", self.nodes[node]["proxy"], timeout=60)
            try:
                err = self.http_exchange(conn, ep, kind, by_host=by_host, close=True)
            except Exception as e:  # noqa: BLE001
                err = "%s %s via %s: %r" % (kind, ep, self.nodes[node]["id"], e)
            finally:
                conn.close()
                self.gate.leave(ep)
            self.stats.inc("http.newconn.requests")
            if err:
                self.stats.error("http-newconn", err)
        return one

    def ws_session(self):
        node = self.rng.randrange(2)
        ep = self.rng.choice(("web1", "web2"))
        self.gate.enter(ep, self.stop_traffic)
        s = None
        try:
            s = socket.create_connection(("127.0.0.1", self.nodes[node]["proxy"]), timeout=60)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(("GET /ws?s=%d HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\nx-piko-endpoint: %s\r\n\r\n"
                       % (self.rng.randrange(1 << 20), key, ep)).encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    raise EOFError("closed before the upgrade answer (%r)" % buf[:200])
                buf += d
            head, rest = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            if not lines[0].startswith("HTTP/1.1 101"):
                raise RuntimeError("upgrade answered %r" % head[:300])
            hdrs = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip()
                    for ln in lines[1:] if ":" in ln}
            if hdrs.get("sec-websocket-accept") != accept_key(key):
                raise RuntimeError("bad Sec-WebSocket-Accept %r" % hdrs.get("sec-websocket-accept"))
            rd = FrameReader(s.recv, rest)
            nmsg = self.rng.randint(10, 30)
            for i in range(nmsg):
                if self.rng.random() < 0.3:
                    op = OP_TEXT
                    payload = ("msg %d " % i + "é" * self.rng.randint(0, 2000)).encode()
                else:
                    op = OP_BINARY
                    payload = os.urandom(self.rng.choice((0, 1, 125, 126, 1000, 65535, 65536, 100000)))
                s.sendall(encode_frame(op, payload, True))
                rop, got, masked = rd.message()
                if rop != op or got != payload or masked:
                    raise RuntimeError("message %d (%d bytes, op %d) came back as op %d, %d bytes%s"
                                       % (i, len(payload), op, rop, len(got),
                                          ", masked" if masked else ""))
                self.stats.inc("ws.messages")
            s.sendall(encode_frame(OP_CLOSE, struct.pack("!H", 1000), True))
            rop, got, _ = rd.message()
            if rop != OP_CLOSE or got[:2] != struct.pack("!H", 1000):
                raise RuntimeError("close answered with op %d %r" % (rop, got[:20]))
            s.settimeout(30)
            while s.recv(65536):
                pass  # the far end closes after the close handshake
            err = None
        except Exception as e:  # noqa: BLE001
            err = "session %s via %s: %r" % (ep, self.nodes[node]["id"], e)
        finally:
            if s:
                s.close()
            self.gate.leave(ep)
        self.stats.inc("ws.sessions")
        if err:
            self.stats.error("websocket", err)

    def transfer(self):
        f = self.forwards[self.rng.randrange(len(self.forwards))]
        n = self.rng.randint(1 << 20, 4 << 20)
        payload = os.urandom(n)
        want = hashlib.sha256(payload).hexdigest()
        self.gate.enter("tcp1", self.stop_traffic)
        s = None
        err = None
        try:
            s = socket.create_connection(("127.0.0.1", f.port), timeout=60)
            send_err = []

            def sender():
                try:
                    mv = memoryview(payload)
                    for off in range(0, n, 256 * 1024):
                        s.sendall(mv[off: off + 256 * 1024])
                    s.shutdown(socket.SHUT_WR)
                except OSError as e:
                    send_err.append(e)
            t = threading.Thread(target=sender, daemon=True)
            t.start()
            h = hashlib.sha256()
            got = 0
            while True:
                d = s.recv(262144)
                if not d:
                    break
                h.update(d)
                got += len(d)
            t.join(60)
            if send_err:
                err = "send: %r" % send_err[0]
            elif got != n or h.hexdigest() != want:
                err = "%d bytes sent, %d back, sha256 %s" % (
                    n, got, "equal" if h.hexdigest() == want else "differs")
            else:
                self.stats.inc("tcp.bytes", 2 * n)
        except Exception as e:  # noqa: BLE001
            err = repr(e)
        finally:
            if s:
                s.close()
            self.gate.leave("tcp1")
        self.stats.inc("tcp.transfers")
        if err:
            self.stats.error("forward-transfer", "%s: %s" % (f.name, err))

    def start_traffic(self):
        r = self.args.rate
        for node in (0, 1):
            self.pace(9 * r, self.keepalive_client(node))
        for _ in range(2):
            self.pace(9 * r, self.newconn_client())
        self.pace(0.5 * r, self.ws_session)
        self.pace(r / 3.0, self.transfer)

    # --- agents coming and going ---

    def rotate_one(self, a):
        kill = self.rng.random() < self.args.kill_fraction
        with self.topology:
            before = self.count(a.node, a.ep)
            if kill:
                if not self.gate.hold([a.ep], 60):
                    self.stats.error("drain", "%s: traffic not drained in 60s" % a.ep)
                try:
                    a.p.kill()
                    a.run["how"] = "kill"
                    a.reap("kill", 30)
                    self.wait_count(a.node, a.ep, before - 1, peer=True)
                finally:
                    self.gate.release([a.ep])
                self.stats.inc("agents.restarts.sigkill")
            else:
                a.p.send_signal(signal.SIGTERM)
                rc = a.reap("term", 90)
                if rc != 0:
                    self.stats.error("agent-exit", "%s run %d exited %r on SIGTERM:\n%s" % (
                        a.name, a.run["n"], rc, a.stderr_text()[-2000:]))
                self.wait_count(a.node, a.ep, before - 1)
                self.stats.inc("agents.restarts.sigterm")
            self.start_agent(a, ROTATING_TTL)

    def rotator(self):
        i = 0
        nxt = now() + self.args.rotate_every
        while not self.stop_traffic.wait(max(0.0, nxt - now())):
            a = self.agents_rot[i % len(self.agents_rot)]
            i += 1
            try:
                self.rotate_one(a)
            except Exception:  # noqa: BLE001
                self.stats.error("rotate", "%s: %s" % (a.name, traceback.format_exc()))
            nxt = now() + self.args.rotate_every * self.rng.uniform(0.7, 1.3)

    def expirer(self):
        """The exp agent: started with a short token, which the server
        enforces: the tunnel closes at expiry, the reconnect is refused
        (401) and the agent exits 1. Then a fresh token."""
        a = self.agent_exp
        while not self.stop_traffic.is_set():
            try:
                with self.topology:
                    self.start_agent(a, EXPIRING_TTL)
                deadline = now() + (a.token_exp - time.time()) + 60
                while a.p.poll() is None and now() < deadline and not self.stop_traffic.is_set():
                    time.sleep(0.5)
                if a.p.poll() is None:
                    if self.stop_traffic.is_set():
                        return  # stopped with the others
                    self.stats.error("expiry", "exp agent still running 60s after its token expired")
                    a.stop()
                    continue
                late = time.time() - a.token_exp
                rc = a.reap("expired", 10)
                err = a.stderr_text()
                if rc == 1 and re.search(r"connect: 401", err) and late > -2:
                    self.stats.inc("agents.token_expiries")
                    self.stats.info("exp agent run %d: token expired, exit 1 %.1fs after expiry"
                                    % (a.run["n"], late))
                else:
                    self.stats.error("expiry", "exp agent run %d exited %r %.1fs after its token's "
                                     "expiry:\n%s" % (a.run["n"], rc, late, err[-2000:]))
                self.wait_count(a.node, a.ep, 0, peer=True)
            except Exception:  # noqa: BLE001
                self.stats.error("expiry", traceback.format_exc())
                time.sleep(5)

    def monitor(self):
        """Any piko process that dies on its own is an error (and an agent
        is started again)."""
        while not self.stop_traffic.wait(1.0):
            for p in self.procs:
                if p.role == "agent-exp" or p.p is None or p.run["t_end"] is not None:
                    continue
                if p.p.poll() is None:
                    continue
                with self.topology:
                    if p.run["t_end"] is not None or p.p.poll() is None:
                        continue
                    rc = p.reap("died", 1)
                    self.stats.error("died", "%s run %d (pid %d) exited %r on its own:\n%s" % (
                        p.name, p.run["n"], p.run["pid"], rc, p.stderr_text()[-3000:]))
                    if p.role in ("agent-L", "agent-R"):
                        try:
                            self.start_agent(p, ROTATING_TTL if p.role == "agent-R"
                                             else int(self.duration) + LONG_TTL_MARGIN)
                        except Exception:  # noqa: BLE001
                            self.stats.error("died", traceback.format_exc())
                    elif p.role == "server":
                        self.stats.error("died", "a server died: stopping the soak")
                        self.stop_traffic.set()

    # --- samples ---

    def sample_once(self, quiet_wait=3.0):
        t = now() - self.t0
        got_topology = self.topology.acquire(timeout=60)
        quiet = self.gate.hold(self.endpoints, quiet_wait)
        try:
            if quiet:
                time.sleep(0.3)  # let the far ends close what just finished
            rows = []
            for p in self.procs:
                if not p.alive:
                    continue
                pid = p.p.pid
                try:
                    with open("/proc/%d/status" % pid) as f:
                        rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
                    fds = len(os.listdir("/proc/%d/fd" % pid))
                    with open("/proc/%d/stat" % pid) as f:
                        st = f.read().rsplit(")", 1)[1].split()
                    cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
                except (OSError, AttributeError, IndexError, ValueError):
                    continue
                rows.append((round(t, 1), p.name, p.role, p.run["n"], pid, rss, fds,
                             int(quiet and got_topology), round(cpu, 2)))
        finally:
            self.gate.release(self.endpoints)
            if got_topology:
                self.topology.release()
        self.samples.extend(rows)
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerows(rows)
        self.stats.inc("samples")

    def sampler(self):
        nxt = now()
        while not self.stop_all.is_set():
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001
                self.stats.error("driver", traceback.format_exc())
            nxt += self.args.sample_every
            self.stop_all.wait(max(0.0, nxt - now()))

    def progress(self):
        while not self.stop_traffic.wait(60):
            c = dict(self.stats.counts)
            self.stats.info(
                "progress: http %d+%d ws %d (%d msgs) tcp %d restarts %d/%d expiries %d errors %d"
                % (c.get("http.keepalive.requests", 0), c.get("http.newconn.requests", 0),
                   c.get("ws.sessions", 0), c.get("ws.messages", 0), c.get("tcp.transfers", 0),
                   c.get("agents.restarts.sigterm", 0), c.get("agents.restarts.sigkill", 0),
                   c.get("agents.token_expiries", 0), self.stats.nerrors))

    # --- the run ---

    def run(self):
        self.csv_path = os.path.join(self.out, "samples.csv")
        with open(self.csv_path, "w", newline="") as f:
            csv.writer(f).writerow(["t_s", "process", "role", "run", "pid", "rss_kib", "fds",
                                    "quiet", "cpu_s"])
        try:
            self.setup()
        except BaseException:
            self.stats.error("setup", traceback.format_exc())
            self.shutdown()
            return self.report()
        self.t_load = now()
        self.start_traffic()
        bg = [threading.Thread(target=f, daemon=True)
              for f in (self.rotator, self.expirer, self.monitor, self.progress)]
        for t in bg:
            t.start()
        smp = threading.Thread(target=self.sampler, daemon=True)
        smp.start()
        end = self.t_load + self.duration
        try:
            while now() < end and not self.stop_traffic.is_set():
                time.sleep(min(1.0, max(0.0, end - now())))
        except KeyboardInterrupt:
            self.stats.error("interrupted", "SIGINT: stopping early")
        self.stats.info("duration reached: stopping the load")
        self.stop_traffic.set()
        for t in self.threads + bg:
            t.join(120)
            if t.is_alive():
                self.stats.error("driver", "a load thread did not finish within 120s")
        self.stop_all.set()
        smp.join(60)
        self.sample_once(quiet_wait=10)  # a last quiet sample
        self.shutdown()
        return self.report()

    def shutdown(self):
        """SIGTERM, in order: forwards, agents, servers (n2, then n1)."""
        self.stop_traffic.set()
        self.stop_all.set()
        order = [p for p in self.procs if p.role == "forward"] + \
                [p for p in self.procs if p.role.startswith("agent")] + \
                list(reversed([p for p in self.procs if p.role == "server"]))
        for p in order:
            if p.p is None or p.run["t_end"] is not None:
                continue
            if (p.role == "agent-exp" and p.p.poll() == 1
                    and "connect: 401" in p.stderr_text()):
                p.reap("expired", 1)  # its token ran out as the load stopped
                continue
            rc = p.stop(90)
            if rc != 0:
                self.stats.error("exit", "%s run %d (pid %d) exited %r on SIGTERM:\n%s" % (
                    p.name, p.run["n"], p.run["pid"], rc, p.stderr_text()[-3000:]))
        for p in self.procs:
            if p.kind == "service" and p.alive:
                p.p.kill()
                p.reap("kill", 10)

    # --- the verdict ---

    @staticmethod
    def slope(points):
        """Least squares y = a + b t (t in minutes): (b, standard error of b)."""
        n = len(points)
        if n < 3:
            return None, None
        mt = sum(t for t, _ in points) / n
        my = sum(y for _, y in points) / n
        sxx = sum((t - mt) ** 2 for t, _ in points)
        if sxx == 0:
            return None, None
        b = sum((t - mt) * (y - my) for t, y in points) / sxx
        a = my - b * mt
        resid = sum((y - a - b * t) ** 2 for t, y in points)
        se = (resid / (n - 2) / sxx) ** 0.5
        return b, se

    def report(self):
        st = self.stats
        # sanitizer reports and exit codes of every run
        leaks = []
        for p in self.procs:
            if p.kind != "piko":
                continue
            for run in p.runs:
                text = p.stderr_text(run)
                for m in SANITIZER_MARKERS:
                    i = text.find(m)
                    if i >= 0:
                        leaks.append("%s run %d (pid %d): %s" % (p.name, run["n"], run["pid"],
                                                                 run["stderr"]))
                        st.error("sanitizer", "%s run %d: %s:\n%s" % (
                            p.name, run["n"], run["stderr"], text[max(0, i - 200): i + 4000]))
                        break
                ok = {"term": 0, "kill": -signal.SIGKILL, "expired": 1}.get(run["how"])
                if run["rc"] is None:
                    st.error("exit", "%s run %d never reaped" % (p.name, run["n"]))
                elif run["how"] != "died" and ok is not None and run["rc"] != ok:
                    st.error("exit", "%s run %d (%s) exited %r, expected %r" % (
                        p.name, run["n"], run["how"], run["rc"], ok))
        for rc, err in self.token_runs:
            for m in SANITIZER_MARKERS:
                if m in err:
                    leaks.append("piko token create")
                    st.error("sanitizer", "piko token create:\n%s" % err[-4000:])
                    break
        # slopes over the last 50 minutes, or 5/6 of a shorter run
        t_end = max([s[0] for s in self.samples] or [0])
        load_start = getattr(self, "t_load", self.t0) - self.t0
        window = min(50 * 60.0, (t_end - load_start) * 5 / 6)
        w0 = t_end - window
        judged = (t_end - load_start) >= self.args.judge_after * 60
        table = []
        for p in self.procs:
            rows = [s for s in self.samples if s[1] == p.name]
            if not rows:
                continue
            long_lived = len(p.runs) == 1
            cpu = 0.0
            for n in sorted({r[3] for r in rows}):
                cpu += max(r[8] for r in rows if r[3] == n)
            row = {"process": p.name, "role": p.role, "kind": p.kind, "runs": len(p.runs),
                   "cpu_s": round(cpu, 1),
                   "rss_start": rows[0][5], "rss_end": rows[-1][5],
                   "rss_max": max(r[5] for r in rows),
                   "fds_start": rows[0][6], "fds_end": rows[-1][6],
                   "fds_max": max(r[6] for r in rows)}
            if long_lived:
                win = [r for r in rows if r[0] >= w0]
                quiet = [r for r in win if r[7]]
                rs, rse = self.slope([(r[0] / 60, r[5]) for r in win])
                fs, fse = self.slope([(r[0] / 60, r[6]) for r in (quiet if len(quiet) >= 3 else win)])
                row.update(rss_slope=rs, rss_se=rse, fd_slope=fs, fd_se=fse, points=len(win),
                           quiet_points=len(quiet))
                verdict = []
                if not judged:
                    pass
                elif p.kind == "piko" and rs is not None and rs - 2 * rse > RSS_SLOPE_MAX:
                    verdict.append("RSS slope")
                if judged and p.kind == "piko" and fs is not None and fs - 2 * fse > FD_SLOPE_MAX:
                    verdict.append("fd slope")
                row["verdict"] = ", ".join(verdict) or (
                    "info" if p.kind != "piko" else "ok" if judged else "not judged (short run)")
                for v in verdict:
                    st.error("slope", "%s: %s above threshold (RSS %.1f±%.1f KiB/min, fds "
                             "%.3f±%.3f /min)" % (p.name, v, rs, rse, fs, fse))
            else:
                row["verdict"] = "restarted (%d runs): no slope" % len(p.runs)
            table.append(row)
        c = dict(st.counts)
        wall = max(1.0, t_end - load_start)
        ours = sum(r["cpu_s"] for r in table)
        drv = sum(os.times()[:2])
        summary = {"duration_s": self.duration, "window_min": window / 60, "counts": c,
                   "slopes_judged": judged, "cpu_s_processes": ours, "cpu_s_driver": drv,
                   "wall_s": wall,
                   "errors": st.nerrors, "error_lines": st.errors[:50], "sanitizer_reports": leaks,
                   "processes": table, "out": self.out,
                   "thresholds": {"rss_kib_per_min": RSS_SLOPE_MAX, "fds_per_min": FD_SLOPE_MAX}}
        with open(os.path.join(self.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1, default=str)

        def fmt(v, se, d):
            return "-" if v is None else ("%.*f ±%.*f" % (d, v, d, se))
        lines = ["", "=== soak summary (%s; slopes over the last %.1f min) ===" % (
            self.out, window / 60),
            "%-9s %-9s %4s %7s %9s %9s %9s %16s %5s %5s %14s  %s" % (
                "process", "role", "runs", "CPU s", "RSS0 KiB", "RSS1 KiB", "RSSmax",
                "RSS KiB/min", "fd0", "fd1", "fds/min", "verdict")]
        for r in table:
            lines.append("%-9s %-9s %4d %7.1f %9d %9d %9d %16s %5d %5d %14s  %s" % (
                r["process"], r["role"], r["runs"], r["cpu_s"], r["rss_start"], r["rss_end"],
                r["rss_max"],
                fmt(r.get("rss_slope"), r.get("rss_se"), 1), r["fds_start"], r["fds_end"],
                fmt(r.get("fd_slope"), r.get("fd_se"), 3), r["verdict"]))
        lines.append("")
        lines.append("HTTP keep-alive %d, new-connection %d (%.1f MiB); WebSocket sessions %d "
                     "(%d messages); forward transfers %d (%.1f MiB)" % (
                         c.get("http.keepalive.requests", 0), c.get("http.newconn.requests", 0),
                         c.get("http.bytes", 0) / 2**20, c.get("ws.sessions", 0),
                         c.get("ws.messages", 0), c.get("tcp.transfers", 0),
                         c.get("tcp.bytes", 0) / 2**20))
        lines.append("agent restarts: %d SIGTERM, %d SIGKILL; token expiries enforced: %d; "
                     "tokens minted: %d; agent starts: %d; samples: %d" % (
                         c.get("agents.restarts.sigterm", 0), c.get("agents.restarts.sigkill", 0),
                         c.get("agents.token_expiries", 0), c.get("tokens.minted", 0),
                         c.get("agents.started", 0), c.get("samples", 0)))
        lines.append("CPU: processes %.0f s + driver %.0f s over %.0f s: %.2f cores (process CPU "
                     "counted to their last sample)" % (ours, drv, wall, (ours + drv) / wall))
        if not judged:
            lines.append("slopes not judged: the run is shorter than --judge-after %.0f min"
                         % self.args.judge_after)
        lines.append("sanitizer reports: %s" % ("none" if not leaks else "; ".join(leaks)))
        by_kind = {k[7:]: v for k, v in c.items() if k.startswith("errors.")}
        lines.append("errors: %d %s" % (st.nerrors, by_kind or ""))
        lines.append("RESULT: %s" % ("PASS" if st.nerrors == 0 else "FAIL"))
        for ln in lines:
            st.note(ln)
        return 0 if st.nerrors == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("duration", type=parse_duration, help="e.g. 1h, 10m, 90s")
    ap.add_argument("--bin", required=True, help="the (sanitized) piko binary")
    ap.add_argument("--out", help="output directory (default: a new one in /tmp)")
    ap.add_argument("--rate", type=float, default=1.0,
                    help="load multiplier (1: ~36 HTTP requests/s, a WebSocket session every "
                         "2 s, a forward transfer every 3 s)")
    ap.add_argument("--rotate-every", type=float, default=20.0,
                    help="seconds between rotating-agent restarts (default 20)")
    ap.add_argument("--kill-fraction", type=float, default=0.25,
                    help="share of restarts done with SIGKILL (default 0.25)")
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--judge-after", type=float, default=30.0,
                    help="judge RSS/fd slopes only on runs at least this many minutes long "
                         "(shorter runs are still warming up; default 30)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    soak = Soak(args)
    soak.stats.info("soak of %s for %.0fs, output in %s" % (soak.bin, args.duration, soak.out))
    sys.exit(soak.run())


if __name__ == "__main__":
    main()
