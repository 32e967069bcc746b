"""Helpers for the cluster integration tests (test_cluster.py).

* ClusterCase: a TcpTestCase that starts N `piko server` nodes joined to each
  other (every node gets the full list of cluster addresses), waits until
  every node's /status/cluster/nodes lists every node as active, and reads
  the status API and metrics.
* TcpLB: a small front TCP load balancer (threads, bounded): each new
  connection goes to the next backend, round robin, among those whose admin
  /ready answered 200 at the last poll (every 100 ms); a backend that refuses
  the connection is skipped (no byte was sent yet), as HAProxy's redispatch
  does. Used in front of proxy ports (clients) and upstream ports (agents).
* LoadGen: a steady load generator: N requests/s, each on a fresh connection
  with `Connection: close`; records status or exception per request.
* cluster_token(): the cluster-key proof (HS256 JWT, iss "piko-cluster").
"""

import http.client
import json
import re
import socket
import threading
import time

from harness import Server, T, free_port, request, wait_for
from jwt_util import now as jwt_now, token as jwt_token
from tcp_services import TcpTestCase

CLUSTER_ISSUER = "piko-cluster"


PUSH_AUDIENCE = "piko-member-push"


def link_audience(cluster_addr):
    """The audience of a dialler's proof: the address it dials."""
    return "piko-link:" + cluster_addr


def cluster_token(key, iat=None, exp=None, sub="itest", aud=PUSH_AUDIENCE):
    """A cluster-key proof: HS256, iss piko-cluster, iat now, exp now+60,
    for aud (default: the member push)."""
    iat = jwt_now() if iat is None else iat
    exp = iat + 60 if exp is None else exp
    return jwt_token({"iss": CLUSTER_ISSUER, "sub": sub, "aud": aud, "iat": iat, "exp": exp},
                     "HS256", key)


# --- status API and metrics ---------------------------------------------------------


def get_json(server, path, headers=None, timeout=None):
    r = request(server.admin_port, "GET", path, headers=headers or server.admin_headers,
                timeout=timeout or T(5))
    if r.status != 200:
        raise AssertionError("GET %s on %s: %r" % (path, server.name, r))
    return r.json()


def nodes(server):
    """/status/cluster/nodes as {id: entry}."""
    return {n["id"]: n for n in get_json(server, "/status/cluster/nodes")}


def metric_value(server, name, labels=None, default=None):
    """The value of one sample of a metric (labels: a subset to match)."""
    text = server.metrics()
    for m in re.finditer(r"^%s(?:\{([^}]*)\})? ([0-9.eE+-]+)$" % re.escape(name), text, re.M):
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            return float(m.group(2))
    if default is not None:
        return default
    raise AssertionError("metric %s%r not in /metrics of %s" % (name, labels or {}, server.name))


def wait_healthy(server, timeout=None):
    """Until admin /health answers 200 (the node runs; /ready may still be
    503 while it links its members)."""
    def ok():
        if server.poll() is not None:
            raise AssertionError("%s exited with %d\n%s" % (server.name, server.poll(),
                                                           server.describe()))
        return request(server.admin_port, "GET", "/health", headers=server.admin_headers,
                       timeout=T(2)).status == 200
    wait_for(ok, timeout or T(10), what="%s /health 200" % server.name)


# --- the test case --------------------------------------------------------------------


class ClusterServer(Server):
    """A server with a node id; `.node_id` and `.cluster_addr` known upfront."""

    def __init__(self, workdir, node_id, cluster_ip="127.0.0.1", **kw):
        self.node_id = node_id
        self.cluster_ip = cluster_ip
        super().__init__(workdir, **kw)
        self.name = "server-" + node_id

    def _build_argv(self):
        super()._build_argv()
        if self.cluster_ip != "127.0.0.1":
            i = self.argv.index("--cluster.bind-addr")
            self.argv[i + 1] = "%s:%d" % (self.cluster_ip, self.cluster_port)

    @property
    def cluster_addr(self):
        return "%s:%d" % (self.cluster_ip, self.cluster_port)


class ClusterCase(TcpTestCase):
    def cluster_server(self, node_id, *args, start=True, cluster_port=None, **kw):
        """One node on pre-picked ports (a restart reuses them)."""
        ports = (free_port(), free_port(), free_port())
        s = ClusterServer(self.tmpdir, node_id, args=args, ports=ports,
                          cluster_port=cluster_port or free_port(), **kw)
        self.procs.append(s)
        if start:
            s.start()
        return s

    def start_cluster(self, n, *args, ids=None, join=True, wait=True, extra=None, ready=True):
        """n nodes; with join, each is given every node's cluster address
        (its own included) with --cluster.join. extra: {index: [args]}.
        Waits until each answers /ready 200 (ready=False: /health 200 only,
        for nodes that cannot link every member and so are not ready for
        the first 10 s), and with wait until every node lists all n as
        active."""
        ids = ids or ["node-%s" % chr(ord("a") + i) for i in range(n)]
        cports = [free_port() for _ in range(n)]
        join_list = ",".join("127.0.0.1:%d" % p for p in cports)
        servers = []
        for i in range(n):
            a = ["--cluster.node-id", ids[i]] + list(args) + list((extra or {}).get(i, ()))
            if join:
                a += ["--cluster.join", join_list]
            servers.append(self.cluster_server(ids[i], *a, start=False, cluster_port=cports[i]))
        for s in servers:
            s.start(wait=False)
        for s in servers:
            if ready:
                s.wait_ready()
            else:
                wait_healthy(s)
        if wait:
            self.wait_cluster(servers)
        return servers

    def wait_cluster(self, servers, expect=None, timeout=None):
        """Until every server's /status/cluster/nodes lists exactly the ids
        of `expect` (default: the servers), all status active."""
        want = sorted(s.node_id for s in (expect if expect is not None else servers))
        last = {}

        def ok():
            good = True
            for s in servers:
                got = nodes(s)
                last[s.node_id] = {k: v["status"] for k, v in got.items()}
                if sorted(got) != want or any(v["status"] != "active" for v in got.values()):
                    good = False
            return good

        try:
            wait_for(ok, timeout or T(10), interval=0.05, what="cluster of %r" % want)
        except AssertionError as e:
            members = {}
            for s in servers:
                try:
                    members[s.node_id] = get_json(s, "/status/cluster/members")
                except (AssertionError, OSError, http.client.HTTPException) as x:
                    members[s.node_id] = repr(x)
            raise AssertionError("%s; last /status/cluster/nodes: %r; members: %r"
                                 % (e, last, members))

    def wait_remote_endpoint(self, servers, holder, endpoint, count=1, timeout=None):
        """Until /status/cluster/nodes/<holder> on each of servers shows
        endpoint with count."""
        last = {}

        def ok():
            for s in servers:
                doc = get_json(s, "/status/cluster/nodes/%s" % holder.node_id)
                last[s.node_id] = doc
                if (doc.get("endpoints") or {}).get(endpoint) != count:
                    return False
            return True

        try:
            wait_for(ok, timeout or T(10), what="%s on %s seen by %r" % (
                endpoint, holder.node_id, [s.node_id for s in servers]))
        except AssertionError as e:
            raise AssertionError("%s; last: %r" % (e, last))

    def lb(self, servers, port_attr, name):
        b = TcpLB(servers, port_attr, name)
        self.addCleanup(b.close)
        return b

    def put_members(self, server, members, generation, cluster="itest/c", token=None):
        body = json.dumps({"cluster": cluster, "generation": generation, "members": [
            {"id": s.node_id, "addr": s.cluster_addr, "ready": True} for s in members]})
        h = {"Content-Type": "application/json"}
        if token:
            h["Authorization"] = "Bearer " + token
        return request(server.admin_port, "PUT", "/piko/v1/cluster/members", headers=h,
                       body=body.encode(), timeout=T(5))


# --- the front load balancer ------------------------------------------------------------


class TcpLB:
    """Accepts on 127.0.0.1:<free>; each connection is piped to one backend
    (getattr(server, port_attr)), round robin among servers whose admin
    /ready answered 200 at the last poll. `decisions` records
    (time, client port, backend index or None, note) per connection."""

    POLL = 0.1
    MAX_CONNS = 512

    def __init__(self, servers, port_attr, name="lb"):
        self.servers = list(servers)
        self.port_attr = port_attr
        self.name = name
        self.ready = [False] * len(self.servers)
        self.excluded = set()  # indices the test keeps out of rotation
        self.rr = 0
        self.lock = threading.Lock()
        self.decisions = []
        self.conns = set()
        self.slots = threading.BoundedSemaphore(self.MAX_CONNS)
        self.stopped = threading.Event()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1024)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self._poll_once()
        self._threads = [threading.Thread(target=self._poll, daemon=True),
                         threading.Thread(target=self._accept, daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _poll_once(self):
        for i, s in enumerate(self.servers):
            try:
                r = request(s.admin_port, "GET", "/ready", headers=s.admin_headers,
                            timeout=0.5)
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            self.ready[i] = ok

    def _poll(self):
        while not self.stopped.is_set():
            self._poll_once()
            self.stopped.wait(self.POLL)

    def wait_ready(self, server, ready=True, timeout=None):
        i = self.servers.index(server)
        wait_for(lambda: self.ready[i] == ready, timeout or T(5),
                 what="%s sees %s ready=%s" % (self.name, server.name, ready))

    def _pick(self, skip):
        with self.lock:
            n = len(self.servers)
            for k in range(n):
                i = (self.rr + k) % n
                if self.ready[i] and i not in skip and i not in self.excluded:
                    self.rr = i + 1
                    return i
        return None

    def _accept(self):
        while not self.stopped.is_set():
            try:
                c, addr = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if not self.slots.acquire(blocking=False):
                self.decisions.append((time.monotonic(), addr[1], None, "too many connections"))
                c.close()
                continue
            threading.Thread(target=self._connect, args=(c, addr[1]), daemon=True).start()

    def _connect(self, c, cport):
        skip = set()
        b = None
        idx = None
        notes = []
        while b is None:
            idx = self._pick(skip)
            if idx is None:
                break
            port = getattr(self.servers[idx], self.port_attr)
            try:
                b = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError as e:
                notes.append("%s: %r" % (self.servers[idx].name, e))
                skip.add(idx)
                self.ready[idx] = False  # until the next poll says otherwise
                b = None
        self.decisions.append((time.monotonic(), cport, idx, "; ".join(notes)))
        if b is None:
            c.close()
            self.slots.release()
            return
        b.settimeout(None)
        c.settimeout(None)
        for s in (b, c):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (c, b)
        with self.lock:
            self.conns.add(pair)
        done = []
        t = threading.Thread(target=self._pipe, args=(b, c, pair, done), daemon=True)
        t.start()
        self._pipe(c, b, pair, done)

    def _pipe(self, src, dst, pair, done):
        """src → dst until EOF (then half-close dst) or an error (then both
        closed, with a reset, so the far end sees it)."""
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    break
                dst.sendall(d)
        except OSError:
            for s in pair:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        with self.lock:
            done.append(1)
            last = len(done) == 2
            if last:
                self.conns.discard(pair)
        if last:
            for s in pair:
                try:
                    s.close()
                except OSError:
                    pass
            self.slots.release()

    def backend_of(self, client_port):
        """The backend index (or None) that a client port was sent to."""
        for t, cp, idx, note in reversed(self.decisions):
            if cp == client_port:
                return idx, note
        return None, "unknown"

    def close(self):
        self.stopped.set()
        try:
            self.ls.close()
        except OSError:
            pass
        with self.lock:
            pairs = list(self.conns)
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self._threads:
            t.join(2)


# --- the load generator -----------------------------------------------------------------------


class LoadGen:
    """`rate` GET requests/s to 127.0.0.1:port, each on a fresh connection
    with `Connection: close`, endpoints taken in turn; a request succeeds
    when it gets 200 with body `expect`. results: one dict per request (seq,
    t0, t1, endpoint, client port, status, error, ok)."""

    MAX_IN_FLIGHT = 256

    def __init__(self, port, rate, endpoints, path="/", expect=b"ok\n", timeout=None):
        self.port = port
        self.rate = float(rate)
        self.endpoints = list(endpoints)
        self.path = path
        self.expect = expect
        self.timeout = timeout or T(10)
        self.results = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.slots = threading.BoundedSemaphore(self.MAX_IN_FLIGHT)
        self.workers = []
        self.t_start = None
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.t_start = time.monotonic()
        self._t.start()
        return self

    def _run(self):
        seq = 0
        while not self.stopped.is_set():
            target = self.t_start + seq / self.rate
            delay = target - time.monotonic()
            if delay > 0 and self.stopped.wait(delay):
                break
            ep = self.endpoints[seq % len(self.endpoints)]
            if not self.slots.acquire(timeout=1.0):
                self._record({"seq": seq, "t0": time.monotonic(), "t1": time.monotonic(),
                              "endpoint": ep, "cport": None, "status": None,
                              "error": "load generator saturated", "ok": False})
            else:
                w = threading.Thread(target=self._one, args=(seq, ep), daemon=True)
                self.workers.append(w)
                w.start()
            seq += 1

    def _record(self, r):
        with self.lock:
            self.results.append(r)

    def _one(self, seq, ep):
        r = {"seq": seq, "t0": time.monotonic(), "endpoint": ep, "cport": None,
             "status": None, "error": None, "ok": False}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.connect()
            r["cport"] = conn.sock.getsockname()[1]
            conn.request("GET", self.path, headers={"x-piko-endpoint": ep,
                                                    "Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
            r["status"] = resp.status
            r["ok"] = resp.status == 200 and (self.expect is None or body == self.expect)
            if not r["ok"]:
                r["error"] = "body %r" % body[:200]
        except Exception as e:  # noqa: BLE001 - recorded
            r["error"] = repr(e)
        finally:
            conn.close()
            r["t1"] = time.monotonic()
            self._record(r)
            self.slots.release()

    def stop(self, timeout=None):
        """Stops issuing; waits (bounded) for the requests in flight."""
        self.stopped.set()
        self._t.join(5)
        deadline = time.monotonic() + (timeout or self.timeout + 5)
        for w in self.workers:
            w.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            return sorted(self.results, key=lambda r: r["seq"])

    def snapshot(self):
        with self.lock:
            return sorted(self.results, key=lambda r: r["seq"])


def describe_request(r, t_ref, events=(), lb=None):
    """One line on a request: time relative to t_ref, the entry backend
    (when an LB recorded it), the outcome, and the nearest preceding event."""
    where = ""
    if lb is not None and r.get("cport"):
        idx, note = lb.backend_of(r["cport"])
        where = " via %s%s" % ("none" if idx is None else lb.servers[idx].name,
                               " (%s)" % note if note else "")
    ev = ""
    before = [(t, what) for t, what in events if t <= r["t0"]]
    if before:
        t, what = before[-1]
        ev = "; %.3fs after %s" % (r["t0"] - t, what)
    return "#%d %s t=%+.3fs..%+.3fs%s: status %r error %s%s" % (
        r["seq"], r["endpoint"], r["t0"] - t_ref, r["t1"] - t_ref, where, r["status"],
        r["error"], ev)
