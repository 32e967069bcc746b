"""`piko test cluster` (protocol reference §4.7): N server nodes as child
processes on loopback behind three TCP load balancers (proxy, upstream,
admin), each new connection going to a random ready node.

The agent's tunnel lands on one random node and client requests on random
nodes, so most requests cross the cluster's node links. A node killed with
SIGKILL is restarted on the same ports (with a new ID) and the cluster heals;
SIGTERM stops every node and the command exits 0 with no node left."""

import json
import os
import re
import signal
import socket
import time

from harness import (CONFIG, PikoTestCase, Proc, StartupError, T, free_port, proxy_request,
                     request, sha256, wait_for)
import upstream as upstream_mod

NODES = 3
ENDPOINT = "tc-ep"


def children_of(pid):
    """PIDs whose parent is pid (as `pgrep -P pid`, from /proc)."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            kids.append(int(name))
    return sorted(kids)


def alive(pid):
    """Running (a zombie counts as gone: it is only waiting to be reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def node_index(pid):
    """The <i> of --cluster.node-id-prefix node-<i>- on a node's command line."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        args = f.read().split(b"\0")
    return int(args[args.index(b"--cluster.node-id-prefix") + 1].decode()[5:-1])


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=T(2)).close()
    except ConnectionRefusedError:
        return True
    return False


class TestCluster(Proc):
    """`piko test cluster` with its three front ports picked here."""

    def __init__(self, workdir, nodes=NODES):
        self.nodes = nodes
        self.proxy_port = self.upstream_port = self.admin_port = None
        super().__init__("test-cluster", workdir, [])
        self._pick()

    def _pick(self):
        self.proxy_port, self.upstream_port, self.admin_port = (
            free_port(), free_port(), free_port())
        self.argv = [CONFIG.bin, "test", "cluster", "--nodes", str(self.nodes),
                     "--proxy.bind-addr", "127.0.0.1:%d" % self.proxy_port,
                     "--upstream.bind-addr", "127.0.0.1:%d" % self.upstream_port,
                     "--admin.bind-addr", "127.0.0.1:%d" % self.admin_port]

    @property
    def upstream_url(self):
        return "http://127.0.0.1:%d" % self.upstream_port

    def start(self):
        for attempt in range(3):
            self._spawn()
            time.sleep(0.2)
            if self.poll() is None or "failed to listen" not in self.stderr() or attempt == 2:
                return self
            self._pick()  # another process took a front port: new ones
        return self

    def nodes_listing(self):
        r = request(self.admin_port, "GET", "/status/cluster/nodes", timeout=T(5))
        if r.status != 200:
            return None
        return r.json()

    def node_ports(self, name):
        """Every node's <name>-addr port from the "node started" records."""
        ports = set()
        for line in self.stderr().splitlines():
            if '"node started"' in line:
                ports.add(int(json.loads(line)[name + "-addr"].rsplit(":", 1)[1]))
        return ports


class TestClusterCommand(PikoTestCase):

    def cluster(self):
        c = TestCluster(self.tmpdir)
        self.procs.append(c)
        c.start()
        self.wait_healthy(c)
        # The front balancer answers from any node (from all of them while
        # none is known ready yet): ask each node itself that it has linked
        # the others before the test relies on any node's view.
        def converged():
            for port in c.node_ports("admin"):
                r = request(port, "GET", "/status/cluster/nodes", timeout=T(5))
                if r.status != 200:
                    return False
                nodes = r.json()
                if len(nodes) != NODES or any(n["status"] != "active" for n in nodes):
                    return False
            return len(c.node_ports("admin")) == NODES
        wait_for(converged, T(20), interval=0.1, what="every node to list %d nodes" % NODES)
        return c

    def healthy(self, c, want_ids=None):
        """Three answers in a row (random nodes) list NODES active nodes."""
        for _ in range(3):
            if c.poll() is not None:
                raise StartupError("test cluster exited with %d\n%s" % (c.poll(), c.describe()))
            if request(c.admin_port, "GET", "/ready", timeout=T(5)).status != 200:
                return False
            nodes = c.nodes_listing()
            if not nodes or len(nodes) != NODES:
                return False
            if any(n["status"] != "active" for n in nodes):
                return False
            if want_ids and not want_ids({n["id"] for n in nodes}):
                return False
        return True

    def wait_healthy(self, c, want_ids=None, timeout=None):
        wait_for(lambda: self.healthy(c, want_ids), timeout or T(20), interval=0.1,
                 what="the test cluster to list %d active nodes" % NODES)

    def serve(self, c):
        """Upstream service + agent through the front upstream port."""
        up = self.upstream()
        ag = self.agent(c, ENDPOINT, up.addr, connect_url=c.upstream_url, log_level="info")
        return up, ag

    def get_ok(self, c):
        r = proxy_request(c, ENDPOINT, "GET", "/", timeout=T(10))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"ok\n", r)

    def test_serves_across_nodes_and_stops(self):
        c = self.cluster()
        ids = {n["id"] for n in c.nodes_listing()}
        self.assertEqual({i.rsplit("-", 1)[0] for i in ids},
                         {"node-%d" % i for i in range(NODES)}, ids)
        up, ag = self.serve(c)
        for _ in range(20):
            self.get_ok(c)
        # a body far above the balancers' send queues (backpressure), and an
        # upload echoed back (both directions at once)
        size = 8 * 1024 * 1024
        r = proxy_request(c, ENDPOINT, "GET", "/big?bytes=%d" % size, timeout=T(30))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sha256(r.body), sha256(upstream_mod.big_payload(size)))
        body = os.urandom(4 * 1024 * 1024)
        r = proxy_request(c, ENDPOINT, "POST", "/echo", body=body, timeout=T(30))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sha256(r.body), sha256(body))
        # one tunnel in the whole cluster, seen by whichever node answers
        nodes = c.nodes_listing()
        self.assertEqual(sum(n["upstreams"] for n in nodes), 1, nodes)
        # two thirds of the requests land on a node without the tunnel and
        # are forwarded over a node link (all 20 on one node: 3^-19)
        forwarded = 0
        for port in c.node_ports("admin"):
            text = request(port, "GET", "/metrics", timeout=T(5)).body.decode()
            forwarded += sum(float(m) for m in re.findall(
                r"^piko_upstreams_remote_requests_total\{[^}]*\} (\S+)$", text, re.M))
        self.assertGreater(forwarded, 0)

        kids = children_of(c.pid)
        self.assertEqual(len(kids), NODES, kids)
        node_ports = (c.node_ports("proxy") | c.node_ports("upstream") | c.node_ports("admin")
                      | c.node_ports("cluster"))
        self.assertEqual(len(node_ports), 4 * NODES, c.stderr())
        t0 = time.monotonic()
        c.stop(timeout=T(30), expect_code=0)
        self.assertLess(time.monotonic() - t0, T(30))
        self.assertEqual([k for k in kids if alive(k)], [], "nodes left running")
        for port in node_ports | {c.proxy_port, c.upstream_port, c.admin_port}:
            self.assertTrue(refused(port), "port %d still listening" % port)
        self.assertIn('"stopped"', c.stderr())

    def test_restarts_a_killed_node(self):
        c = self.cluster()
        up, ag = self.serve(c)
        self.get_ok(c)
        before = {n["id"].rsplit("-", 1)[0]: n["id"] for n in c.nodes_listing()}
        kids = children_of(c.pid)
        self.assertEqual(len(kids), NODES, kids)
        victim = kids[0]
        idx = node_index(victim)
        old_id = before["node-%d" % idx]

        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not alive(victim), T(5), what="the killed node to be reaped")
        # healed: three active nodes, the killed one back under a new ID
        self.wait_healthy(
            c, want_ids=lambda ids: old_id not in ids and len({i.rsplit("-", 1)[0] for i in ids})
            == NODES, timeout=T(15))
        now = children_of(c.pid)
        self.assertEqual(len(now), NODES, now)
        self.assertNotIn(victim, now)
        self.assertRegex(c.stderr(), r'"node exited unexpectedly; restarting it","node":"%d",'
                         r'"pid":"%d","status":"signal 9' % (idx, victim))

        # the agent's tunnel may have been on the killed node: it comes back
        # through the front upstream port, and requests flow again
        def routable():
            r = proxy_request(c, ENDPOINT, "GET", "/", timeout=T(5))
            return r.status == 200 and r.body == b"ok\n"
        wait_for(routable, T(20), interval=0.2, what="requests to reach the agent again")
        for _ in range(10):
            self.get_ok(c)

        # SIGHUP is accepted (no reload) and changes nothing
        c.signal(signal.SIGHUP)
        wait_for(lambda: "reload not supported" in c.stderr(), T(5), what="the SIGHUP record")
        self.assertIsNone(c.poll())
        self.assertEqual(len(children_of(c.pid)), NODES)

        c.stop(timeout=T(30), expect_code=0)
        self.assertEqual([k for k in now if alive(k)], [], "nodes left running")
