"""piko server --workers N (dataplane/workers.c, docs/multicore.md).

One supervisor binds the ports and forks N workers, each a whole node on
its own event loop. The kernel spreads connections over the workers
(SO_REUSEPORT), so a request often lands on a worker without the
endpoint's tunnel and crosses a loopback link to the one that holds it; to
its user the server is still one server: every request answered, counted
once in /metrics (each worker's series labelled worker="<i>") and logged
once."""

import os
import re
import signal
import threading
import time

import socket

from cluster_util import cluster_token
from harness import PikoTestCase, T, free_port, request, wait_for
from tcp_ws import client_handshake

REQUESTS = 40


def children(pid):
    """The supervisor's worker pids (Linux's /proc children list)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return sorted(int(p) for p in f.read().split())
    except OSError:
        return []


def samples(text, name):
    """[(labels dict, value)] of every series of metric `name`."""
    out = []
    for m in re.finditer(r"^%s(?:\{([^}]*)\})? (\S+)$" % re.escape(name), text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        out.append((labels, float(m.group(2))))
    return out


def total(text, name, **want):
    """The sum over the workers of metric `name`'s series with labels `want`."""
    return sum(v for labels, v in samples(text, name)
               if all(labels.get(k) == x for k, x in want.items()))


class WorkersTest(PikoTestCase):
    def start_stack(self, *args):
        self.up = self.upstream()
        self.srv = self.server("--workers", "2", *args)
        self.ag = self.agent(self.srv, "wk", self.up.addr)

    def get_all(self, n):
        """n GETs, each on a new connection (so each is placed by the
        kernel's hash afresh); returns their statuses and bodies."""
        out = []
        for i in range(n):
            r = self.srv.proxy("wk", "GET", "/headers?i=%d" % i)
            out.append((r.status, r.body))
        return out

    def test_every_request_is_answered_and_counted_once(self):
        self.start_stack()
        self.assertEqual(len(children(self.srv.pid)), 2)
        before = self.srv.metrics()
        logged = self.srv.stderr().count('"proxy.access"')
        got = self.get_all(REQUESTS)
        self.assertEqual([s for s, _ in got], [200] * REQUESTS, got)
        for i, (_, body) in enumerate(got):
            self.assertIn(b'"path": "/headers?i=%d"' % i, body)
        after = self.srv.metrics()
        ok = dict(status="200", method="GET")
        # One count per request, on the worker it entered: the worker
        # holding the tunnel does not count the requests it was handed.
        self.assertEqual(total(after, "piko_proxy_requests_total", **ok)
                         - total(before, "piko_proxy_requests_total", **ok), REQUESTS)
        # Some of them crossed to the other worker: 40 fresh connections
        # all hashed to one worker would be a 2^-39 chance.
        crossed = (total(after, "piko_upstreams_remote_requests_total")
                   - total(before, "piko_upstreams_remote_requests_total"))
        self.assertGreater(crossed, 0, after)
        self.assertLess(crossed, REQUESTS, after)
        # Each worker reports its own: one tunnel in all.
        up = samples(after, "piko_upstreams_connected_upstreams")
        self.assertEqual(sorted(labels["worker"] for labels, _ in up), ["0", "1"], up)
        self.assertEqual(sum(v for _, v in up), 1, up)
        # and one access log line each
        wait_for(lambda: self.srv.stderr().count('"proxy.access"') >= logged + REQUESTS,
                 T(5), what="access log lines")
        time.sleep(0.2)
        self.assertEqual(self.srv.stderr().count('"proxy.access"'), logged + REQUESTS)

    def test_a_request_in_flight_counts_once(self):
        self.start_stack()
        # 10 slow requests on fresh connections: some cross to the other
        # worker, which must not count them in flight as well (none
        # crossing: a 2^-10 chance, and then this test cannot tell)
        statuses = []

        def slow():
            statuses.append(self.srv.proxy("wk", "GET", "/slow?ms=1500", timeout=T(20)).status)
        threads = [threading.Thread(target=slow) for _ in range(10)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: total(self.srv.metrics(), "piko_proxy_requests_in_flight") >= 10,
                     T(5), interval=0.1, what="10 requests in flight")
            text = self.srv.metrics()
            self.assertEqual(total(text, "piko_proxy_requests_in_flight"), 10, text)
        finally:
            for t in threads:
                t.join()
        self.assertEqual(statuses, [200] * 10)
        self.assertEqual(total(self.srv.metrics(), "piko_proxy_requests_in_flight"), 0)

    def test_the_admin_port_is_the_whole_servers(self):
        self.start_stack()
        nodes = request(self.srv.admin_port, "GET", "/status/cluster/nodes").json()
        ids = sorted(n["id"] for n in nodes)
        self.assertEqual(len(ids), 2, nodes)
        self.assertTrue(ids[0].endswith("-w0") and ids[1].endswith("-w1"), ids)
        self.assertEqual(ids[0][:-3], ids[1][:-3])
        self.assertEqual(self.srv.admin("/ready").status, 200)
        # the workers link at once: none refused the other as a stranger
        self.assertNotIn("not a member", self.srv.stderr())
        # HELP and TYPE once per family, as a scraper requires, and each
        # worker's own gauges (two start times, not their sum)
        text = self.srv.metrics()
        types = re.findall(r"^# TYPE (\S+) ", text, re.M)
        self.assertEqual(len(types), len(set(types)))
        self.assertIn("piko_proxy_requests_total", types)
        starts = samples(text, "process_start_time_seconds")
        self.assertEqual(sorted(labels["worker"] for labels, _ in starts), ["0", "1"], text)
        for _, v in starts:
            self.assertLess(abs(v - time.time()), 600)
        # ?forward= to a worker (the status CLI's --forward) is answered by
        # that worker alone, once, even when it names worker 0 itself: the
        # two views add up to the server's one tunnel
        views = []
        for node in ids:
            r = request(self.srv.admin_port, "GET", "/metrics?forward=" + node, timeout=T(10))
            self.assertEqual(r.status, 200, r)
            self.assertNotIn(b'worker="', r.body)
            r = request(self.srv.admin_port, "GET",
                        "/status/upstream/endpoints?forward=" + node, timeout=T(10))
            self.assertEqual(r.status, 200, r)
            views.append(r.json().get("wk", 0))
        self.assertEqual(sorted(views), [0, 1])
        # a client's own secret header is not passed on: the gather works
        r = request(self.srv.admin_port, "GET", "/metrics",
                    headers={"X-Piko-Worker-Secret": "guess"}, timeout=T(10))
        self.assertEqual(r.status, 200, r)
        self.assertIn(b'worker="1"', r.body)
        # the other workers' loopback admin ports answer worker 0 alone
        w1 = [n for n in nodes if n["id"] == ids[1]][0]
        port = int(w1["admin_addr"].rsplit(":", 1)[1])
        self.assertNotEqual(port, self.srv.admin_port)
        for path in ("/health", "/metrics", "/status/upstream/endpoints"):
            r = request(port, "GET", path)
            self.assertEqual(r.status, 403, r)
            r = request(port, "GET", path, headers={"X-Piko-Worker-Secret": "guess"})
            self.assertEqual(r.status, 403, r)

    def test_the_status_api_counts_every_workers_tunnels(self):
        self.start_stack()
        # 8 more tunnels for the endpoint, bare upgrades: each lands on a
        # worker by the kernel's hash (all 8 on worker 0: a 2^-8 chance)
        socks = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", self.srv.upstream_port), timeout=T(10))
            socks.append(s)
            hs = client_handshake(s, "/piko/v1/upstream/wk", "127.0.0.1")
            self.assertEqual(hs.status, 101)
        try:
            wait_for(lambda: request(self.srv.admin_port, "GET",
                                     "/status/upstream/endpoints").json() == {"wk": 9},
                     T(10), what="9 tunnels for wk across the workers")
            text = self.srv.metrics()
            self.assertEqual(total(text, "piko_upstreams_connected_upstreams"), 9, text)
        finally:
            for s in socks:
                s.close()

    def test_a_killed_worker_is_started_again(self):
        self.start_stack()
        first = children(self.srv.pid)
        self.assertEqual(len(first), 2)
        os.kill(first[1], signal.SIGKILL)
        wait_for(lambda: len(children(self.srv.pid)) == 2 and children(self.srv.pid) != first,
                 T(10), what="a new worker")
        self.assertIn(first[0], children(self.srv.pid))
        self.assertIn("worker died, starting it again", self.srv.stderr())
        # The tunnel (reconnected if it was on the killed worker) serves
        # every request again, wherever it lands.
        wait_for(lambda: [s for s, _ in self.get_all(8)] == [200] * 8, T(20),
                 interval=0.2, what="every request answered after the restart")
        got = self.get_all(REQUESTS)
        self.assertEqual([s for s, _ in got], [200] * REQUESTS, got)
        wait_for(lambda: self.srv.admin("/metrics").status == 200, T(10),
                 what="/metrics of both workers")

    def test_a_worker_stopped_by_hand_is_started_again(self):
        # Its drain shuts its listening sockets for the supervisor's
        # copies too, so the agent's fresh tunnel cannot land in a queue
        # nobody accepts (which would hold the drain to grace_period / 2).
        self.start_stack("--grace-period", "40s")
        first = children(self.srv.pid)
        os.kill(first[0], signal.SIGTERM)  # it drains and exits 0
        wait_for(lambda: len(children(self.srv.pid)) == 2 and first[0] not in
                 children(self.srv.pid), T(15), what="worker 0 started again (< 20 s drain)")
        self.assertIsNone(self.srv.poll())
        wait_for(lambda: self.srv.admin("/ready").status == 200, T(15),
                 what="the new worker 0 ready")
        wait_for(lambda: [s for s, _ in self.get_all(8)] == [200] * 8, T(20),
                 interval=0.2, what="every request answered")

    def test_sigterm_while_the_workers_start_is_a_clean_stop(self):
        for _ in range(3):
            srv = self.server("--workers", "2", start=False)
            srv._spawn()
            # the supervisor has its signals blocked from this line on,
            # and forks the workers right after it
            wait_for(lambda: "starting workers" in srv.stderr(), T(10), interval=0.005,
                     what="the supervisor starting")
            srv.stop()  # SIGTERM while the workers start; asserts exit code 0
            self.assertNotIn('"signal 15"', srv.stderr())
            self.assertNotIn('"signal 2"', srv.stderr())

    def test_sigterm_stops_every_worker(self):
        self.start_stack()
        kids = children(self.srv.pid)
        self.assertEqual(len(kids), 2)
        self.ag.stop()
        self.srv.stop()  # asserts exit code 0
        for pid in kids:
            self.assertFalse(os.path.exists("/proc/%d/status" % pid)
                             and "zombie" not in open("/proc/%d/status" % pid).read(),
                             "worker %d outlived the server" % pid)
        self.assertEqual(self.srv.stderr().count('"worker stopped"'), 2)

    def test_bad_worker_counts_are_refused(self):
        for args, msg in [
            (["--workers", "0"], "workers must be between 1 and 64"),
            (["--workers", "65"], "workers must be between 1 and 64"),
            (["--workers", "2", "--cluster.join", "127.0.0.1:1"],
             "workers > 1 cannot be combined with cluster.join or cluster.tls yet"),
        ]:
            srv = self.server(*args, start=False)
            srv._spawn()
            self.assertEqual(srv.wait(T(10)), 1, srv.describe())
            self.assertIn(msg, srv.stderr())

    def test_a_port_in_use_is_refused(self):
        # The proxy and upstream ports on one address: a single node fails
        # to bind the second; SO_REUSEPORT must not let the workers share it.
        srv = self.server("--workers", "2", start=False)
        srv.argv = [a if a != "127.0.0.1:%d" % srv.upstream_port
                    else "127.0.0.1:%d" % srv.proxy_port for a in srv.argv]
        srv._spawn()
        self.assertEqual(srv.wait(T(10)), 1, srv.describe())
        self.assertIn("Address already in use", srv.stderr())
        self.assertIn('"port-name":"upstream"', srv.stderr())
        # and another server's ports
        first = self.server("--workers", "2")
        second = self.server("--workers", "2", ports=(first.proxy_port, free_port(),
                                                     free_port()), start=False)
        second._spawn()
        self.assertEqual(second.wait(T(10)), 1, second.describe())
        self.assertIn("Address already in use", second.stderr())

    def test_the_member_push_is_refused(self):
        self.start_stack("--cluster.auth.key", "k3y")
        r = request(self.srv.admin_port, "PUT", "/piko/v1/cluster/members",
                    headers={"Authorization": "Bearer " + cluster_token("k3y"),
                             "Content-Type": "application/json"},
                    body=b'{"members":["127.0.0.1:1"]}')
        self.assertEqual(r.status, 409, r)
        self.assertIn(b"cannot join other nodes yet", r.body)
