"""The cluster (DESIGN §5): nodes linked to each other on their cluster
ports, requests routed to the node that holds the endpoint's upstream,
membership by --cluster.join (static and DNS) and by the member push, the
cluster key, a node killed under load, and a rolling restart under load.

All nodes run on loopback with ports picked at run time (helpers in
cluster_util.py: the cluster start-up, a front TCP load balancer, a steady
load generator)."""

import hashlib
import math
import os
import random
import shutil
import socket
import ssl
import subprocess
import time
import unittest

import yaml

from cluster_util import (ClusterCase, ClusterServer, LoadGen, cluster_token, describe_request,
                          link_audience,
                          get_json, metric_value, nodes, wait_healthy)
from harness import (CONFIG, Agent, Response, T, free_port, is_no_upstream, need_peer,
                     request, wait_for)
from jwt_util import now as jwt_now
from test_tls import Pki
from tcp_services import (ConfigProc, RssSampler, echo_transfer, find_logs, log_lines,
                          proc_status_kib)
from upstream import BIG_PATTERN
from tcp_ws import (OP_BINARY, OP_TEXT, WsConn, WsEchoService, accept_key, client_handshake,
                    read_body)

MiB = 1 << 20


class ClusterTestBase(ClusterCase):
    def ws_echo_through(self, server, endpoint, svc, count=50):
        s = socket.create_connection(("127.0.0.1", server.proxy_port), timeout=T(15))
        try:
            hs = client_handshake(s, "/ws?cluster=1", "127.0.0.1", [("x-piko-endpoint", endpoint)])
            if hs.status != 101:
                self.fail("WebSocket upgrade through %s: %d %r %r" % (
                    server.name, hs.status, hs.headers, read_body(s, hs.headers, hs.rest, T(5))))
            self.assertEqual(hs.header("Sec-WebSocket-Accept"), accept_key(hs.key))
            ws = WsConn(s, hs.rest)
            rng = random.Random(5)
            before = svc.echoed
            for i in range(count):
                op = OP_TEXT if i % 4 == 0 else OP_BINARY
                payload = (b"msg %d" % i) if op == OP_TEXT else rng.randbytes(
                    rng.randint(0, 100000))
                ws.send(op, payload)
                self.assertEqual(ws.recv_message(), (op, payload),
                                 "WebSocket message %d echoed through %s" % (i, server.name))
            ws.send_close(1000)
        finally:
            s.close()
        wait_for(lambda: svc.echoed == before + count, T(5),
                 what="service echoed %d messages" % count)
        self.assertEqual(svc.errors, [])

    def check_json_error(self, resp, status, what):
        """status, and a JSON body {"error": "<text>"} (checked in a subTest
        so that the rest of the test still runs when only the body is wrong)."""
        self.assertEqual(resp.status, status, "%s: %r" % (what, resp))
        with self.subTest(what + ": JSON error body"):
            ctype = resp.header("Content-Type", "")
            self.assertTrue(ctype.startswith("application/json"), "%s: %r" % (what, resp))
            try:
                doc = resp.json()
            except ValueError:
                doc = None
            self.assertTrue(isinstance(doc, dict) and set(doc) == {"error"} and
                            isinstance(doc["error"], str) and doc["error"],
                            "%s: body is not {\"error\": \"...\"}: %r" % (what, resp.body))

    def wait_streams_zero(self, servers, timeout=None):
        for s in servers:
            if s.alive:
                self.wait_open_streams(s, 0, timeout or T(10))

    def wait_in_flight_zero(self, servers, timeout=None):
        for s in servers:
            last = []

            def check():
                v = metric_value(s, "piko_proxy_requests_in_flight")
                last[:] = [v]
                return v == 0

            try:
                wait_for(check, timeout or T(10), interval=0.1,
                         what="piko_proxy_requests_in_flight == 0 on %s" % s.name)
            except AssertionError as e:
                self.fail("%s; last value %r" % (e, last))


class ClusterRoutingTest(ClusterTestBase):
    def test_requests_cross_nodes(self):
        """Agents on A; HTTP, a 5 MiB POST, WebSocket and forward tcp enter
        through B and C and reach them over the node links."""
        a, b, c = self.start_cluster(3)
        up = self.upstream()
        self.agent(a, "ep-http", up.addr)
        svc = WsEchoService()
        self.addCleanup(svc.close)
        self.agent(a, "ep-ws", svc.addr)
        tsvc = self.tcp_service()
        self.tcp_agent(a, "ep-tcp", tsvc.addr)
        for ep in ("ep-http", "ep-ws", "ep-tcp"):
            self.wait_remote_endpoint([b, c], a, ep)

        # HTTP GET through B and C
        for s in (b, c):
            r = s.proxy("ep-http", "GET", "/")
            self.assertEqual((r.status, r.body), (200, b"ok\n"), "GET through %s: %r"
                             % (s.name, r))

        # 5 MiB POST echoed intact
        body = random.Random(9).randbytes(5 * MiB + 3)
        want = hashlib.sha256(body).hexdigest()
        for s in (b, c):
            r = s.proxy("ep-http", "POST", "/echo/big", body=body,
                        headers={"Content-Type": "application/octet-stream"}, timeout=T(60))
            self.assertEqual(r.status, 200, "POST through %s: %r" % (s.name, r))
            self.assertEqual(r.header("X-Echo-Body-Sha256"), want,
                             "what the service received through %s" % s.name)
            self.assertEqual(len(r.body), len(body))
            self.assertEqual(hashlib.sha256(r.body).hexdigest(), want,
                             "the echo that came back through %s" % s.name)

        # WebSocket echo through B
        self.ws_echo_through(b, "ep-ws", svc)

        # piko forward tcp on C's proxy port → agent tcp on A
        fwd = self.forward(c, "ep-tcp")
        sock = self.echo_connect(fwd, "cluster")
        sock.settimeout(T(30))
        total = 3 * MiB + 5
        sent_h, recv_h, n, _ = echo_transfer(sock, total, 21, T(60))
        sock.close()
        self.assertEqual(n, total, "bytes echoed through forward → C → A → agent tcp")
        self.assertEqual(recv_h, sent_h, "sha256 of the echo through C → A")
        tsvc.wait_line(r"echo cluster bytes=%d sha256=%s" % (total, sent_h), T(10))

        # a request that already crossed a node looks at local upstreams only
        r = b.proxy("ep-http", "GET", "/", headers={"x-piko-forward": "true"})
        self.assertJsonError(r, 502, "no available upstreams")

        # the status API
        ids = sorted(s.node_id for s in (a, b, c))
        for s in (a, b, c):
            doc = get_json(s, "/status/cluster/nodes")
            self.assertEqual(sorted(n["id"] for n in doc), ids, doc)
            for n in doc:
                self.assertEqual(n["status"], "active", doc)
                self.assertEqual(set(n), {"id", "status", "proxy_addr", "admin_addr",
                                          "endpoints", "upstreams"}, n)
            na = {n["id"]: n for n in doc}[a.node_id]
            self.assertEqual(na["proxy_addr"], "127.0.0.1:%d" % a.proxy_port, na)
            self.assertEqual(na["admin_addr"], "127.0.0.1:%d" % a.admin_port, na)
            self.assertEqual((na["endpoints"], na["upstreams"]), (3, 3),
                             "A's entry on %s: %r" % (s.name, na))
        doc = get_json(b, "/status/cluster/nodes/%s" % a.node_id)
        self.assertEqual(doc["id"], a.node_id)
        self.assertEqual(doc["status"], "active")
        self.assertEqual(doc["endpoints"], {"ep-http": 1, "ep-ws": 1, "ep-tcp": 1}, doc)
        local = get_json(b, "/status/cluster/nodes/local")
        self.assertEqual((local["id"], local["endpoints"]), (b.node_id, None), local)
        self.assertEqual(get_json(a, "/status/upstream/endpoints"),
                         {"ep-http": 1, "ep-ws": 1, "ep-tcp": 1})
        r = b.admin("/status/cluster/nodes/no-such-node")
        self.assertEqual((r.status, r.body), (404, b""), r)
        for s in (a, b, c):
            self.assertEqual(metric_value(s, "piko_cluster_nodes", {"status": "active"}), 3)

        # B counted what it sent to A
        n_b = metric_value(b, "piko_upstreams_remote_requests_total", {"node_id": a.node_id})
        self.assertGreaterEqual(n_b, 3, "B forwarded a GET, a POST and the WebSocket to A")
        self.assertEqual(metric_value(a, "piko_upstreams_remote_requests_total",
                                      {"node_id": a.node_id}, default=0.0), 0)

        # (8) forwarded streams are all closed again
        self.wait_streams_zero((a, b, c))
        self.wait_in_flight_zero((a, b, c))

    def test_piko_agent_on_a_node(self):
        """The real Piko agent registers on A; a GET through C reaches it."""
        peer = need_peer(CONFIG.piko_peer, "the real Piko binary")
        a, b, c = self.start_cluster(3)
        up = self.upstream()
        ag = Agent(self.tmpdir, a, "go-ep", up.addr, bin=peer)
        ag.name = "piko-agent-go-ep"
        self.procs.append(ag)
        ag.start()
        self.wait_remote_endpoint([c], a, "go-ep")
        r = c.proxy("go-ep", "GET", "/headers?via=c")
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc["path"], "/headers?via=c")
        seen = {k.lower(): v for k, v in doc["headers"]}
        self.assertEqual(seen.get("x-piko-endpoint"), "go-ep", seen)
        self.wait_streams_zero((a, b, c))


class ClusterMembershipTest(ClusterTestBase):
    def test_membership_by_push(self):
        a, b, c = self.start_cluster(3, join=False, wait=False)
        for s in (a, b, c):
            self.assertEqual(sorted(nodes(s)), [s.node_id])
        for s in (a, b, c):
            r = self.put_members(s, (a, b, c), 2)
            self.assertEqual(r.status, 200, "PUT members to %s: %r" % (s.name, r))
        self.wait_cluster((a, b, c))
        doc = get_json(a, "/status/cluster/members")
        self.assertEqual(sorted(m["addr"] for m in doc),
                         sorted(s.cluster_addr for s in (a, b, c)), doc)
        for m in doc:
            self.assertEqual(m["sources"], ["push"], m)

        # an endpoint only C holds, reached through A
        up = self.upstream()
        self.agent(c, "ep-c", up.addr)
        self.wait_remote_endpoint([a, b], c, "ep-c")
        r = a.proxy("ep-c", "GET", "/")
        self.assertEqual((r.status, r.body), (200, b"ok\n"), r)

        # an older generation is refused and changes nothing
        before = get_json(a, "/piko/v1/cluster/members")
        self.assertEqual(before["generation"], 2, before)
        self.assertEqual(sorted(m["addr"] for m in before["members"]),
                         sorted(s.cluster_addr for s in (a, b, c)), before)
        r = self.put_members(a, (a, b), 1)
        self.check_json_error(r, 409, "PUT members with an older generation")
        self.assertEqual(get_json(a, "/piko/v1/cluster/members"), before)
        self.assertEqual(sorted(nodes(a)), sorted(s.node_id for s in (a, b, c)))

        # C leaves the set: dropped at once with its endpoints
        for s in (a, b):
            r = self.put_members(s, (a, b), 3)
            self.assertEqual(r.status, 200, "PUT members to %s: %r" % (s.name, r))
        self.wait_cluster((a, b), timeout=T(3))
        r = a.proxy("ep-c", "GET", "/")
        self.assertJsonError(r, 502, "no available upstreams")
        self.assertEqual(get_json(a, "/piko/v1/cluster/members")["generation"], 3)

    def test_cluster_key(self):
        key1 = self.write_file("key1", "the-right-cluster-key\n")
        key2 = self.write_file("key2", "another-cluster-key\n")
        a, b, c = self.start_cluster(3, wait=False, extra={
            0: ["--cluster.auth.key-file", key1], 1: ["--cluster.auth.key-file", key1],
            2: ["--cluster.auth.key-file", key2]}, ready=False)
        self.wait_cluster((a, b))
        # the node with the wrong key: its links are refused, on both ends
        for s in (a, b):
            wait_for(lambda s=s: find_logs(s, "node link refused"), T(5),
                     what="%s logged a refused link" % s.name)
        time.sleep(0.5)
        for s in (a, b):
            self.assertEqual(sorted(nodes(s)), sorted((a.node_id, b.node_id)))
        self.assertEqual(sorted(nodes(c)), [c.node_id])

        # raw link upgrades to A's cluster port
        secret = "the-right-cluster-key"

        def upgrade(headers):
            s = socket.create_connection(("127.0.0.1", a.cluster_port), timeout=T(5))
            try:
                hs = client_handshake(s, "/piko/v1/cluster/link", "127.0.0.1:%d"
                                      % a.cluster_port, headers)
                body = b"" if hs.status == 101 else read_body(s, hs.headers, hs.rest, T(5))
                return Response(hs.status, "", {k.title(): v for k, v in hs.headers}, body)
            finally:
                s.close()

        ident = [("x-piko-node-id", "intruder"), ("x-piko-cluster-addr", b.cluster_addr)]
        to_a = link_audience(a.cluster_addr)
        self.check_json_error(upgrade(ident), 401, "link upgrade without a token")
        expired = cluster_token(secret, iat=jwt_now() - 120, exp=jwt_now() - 60,
                                sub="intruder", aud=to_a)
        self.check_json_error(upgrade(ident + [("Authorization", "Bearer " + expired)]), 401,
                              "link upgrade with an expired token")
        wrong = cluster_token("another-cluster-key", sub="intruder", aud=to_a)
        self.check_json_error(upgrade(ident + [("Authorization", "Bearer " + wrong)]), 401,
                              "link upgrade with a token of another key")
        # a valid proof made for another use, another node or another signer
        for what, tok in (
                ("the member push", cluster_token(secret, sub="intruder")),
                ("another node", cluster_token(secret, sub="intruder",
                                               aud=link_audience(b.cluster_addr))),
                ("another signer", cluster_token(secret, sub="someone-else", aud=to_a))):
            self.check_json_error(upgrade(ident + [("Authorization", "Bearer " + tok)]), 401,
                                  "link upgrade with a proof for %s" % what)
        good = cluster_token(secret, sub="intruder", aud=to_a)
        self.check_json_error(upgrade([("x-piko-node-id", "intruder"),
                                       ("x-piko-cluster-addr", "127.0.0.1:1"),
                                       ("Authorization", "Bearer " + good)]), 403,
                              "link upgrade from a non-member")

        # the member push needs the key too
        auth = {"Authorization": "Bearer " + cluster_token(secret)}
        before = get_json(a, "/piko/v1/cluster/members", headers=auth)
        r = request(a.admin_port, "GET", "/piko/v1/cluster/members")
        self.check_json_error(r, 401, "GET members without a token")
        r = self.put_members(a, (a, b), 5)
        self.check_json_error(r, 401, "PUT members without a token")
        r = self.put_members(a, (a, b), 5, token=cluster_token(
            secret, iat=jwt_now() - 120, exp=jwt_now() - 60))
        self.check_json_error(r, 401, "PUT members with an expired token")
        r = self.put_members(a, (a, b), 5, token=cluster_token("another-cluster-key"))
        self.check_json_error(r, 401, "PUT members with a token of another key")
        r = self.put_members(a, (a, b), 5, token=good)
        self.check_json_error(r, 401, "PUT members with a link proof")
        self.assertEqual(get_json(a, "/piko/v1/cluster/members", headers=auth), before)
        r = self.put_members(a, (a, b), 5, token=cluster_token(secret))
        self.assertEqual(r.status, 200, r)
        after = get_json(a, "/piko/v1/cluster/members", headers=auth)
        self.assertEqual(after["generation"], 5, after)
        self.assertEqual(sorted(m["addr"] for m in after["members"]),
                         sorted((a.cluster_addr, b.cluster_addr)), after)
        self.wait_cluster((a, b))
        print("\n  cluster key: /ready of A, B, C %.1fs after start: %r" % (
            time.monotonic() - a.started_at,
            [request(s.admin_port, "GET", "/ready").status for s in (a, b, c)]))


HOSTS_NAME = "piko-peers.test"


class DnsServer(ClusterServer):
    """A node in a mount namespace of its own whose /etc/hosts is a file the
    test rewrites (bind mount: the same inode must be rewritten in place)."""

    def __init__(self, workdir, node_id, hosts_path, **kw):
        self.hosts_path = hosts_path
        super().__init__(workdir, node_id, **kw)

    def _build_argv(self):
        super()._build_argv()
        self.argv = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                     self.hosts_path] + self.argv


def write_hosts(path, ips):
    """Rewrites the file in place (same inode)."""
    text = "".join("%s %s\n" % (ip, HOSTS_NAME) for ip in ips)
    with open(path, "r+") as f:
        f.seek(0)
        f.write(text)
        f.truncate()


class ClusterDnsTest(ClusterTestBase):
    IPS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")

    def setUp(self):
        super().setUp()
        if not shutil.which("unshare"):
            self.skipTest("no unshare(1): cannot give the nodes a private /etc/hosts")
        hosts = self.write_file("hosts", "")
        write_hosts(hosts, self.IPS[:1])
        probe = subprocess.run(["unshare", "-m", "sh", "-c",
                                'mount --bind "$0" /etc/hosts && getent ahosts %s' % HOSTS_NAME,
                                hosts], capture_output=True, timeout=10)
        if probe.returncode != 0 or b"127.0.0.11" not in probe.stdout:
            self.skipTest("unshare -m with a bind-mounted /etc/hosts does not work here "
                          "(need root and mount namespaces): %r" % (probe,))
        for ip in self.IPS:
            s = socket.socket()
            try:
                s.bind((ip, 0))
            except OSError as e:
                self.skipTest("cannot bind %s (loopback addresses beyond 127.0.0.1): %r"
                              % (ip, e))
            finally:
                s.close()
        self.hosts = hosts

    def common_port(self):
        for _ in range(20):
            p = free_port()
            ok = True
            for ip in self.IPS:
                s = socket.socket()
                try:
                    s.bind((ip, p))
                except OSError:
                    ok = False
                finally:
                    s.close()
            if ok:
                return p
        self.fail("no port free on all of %r" % (self.IPS,))

    def test_membership_by_dns(self):
        write_hosts(self.hosts, self.IPS[:2])
        port = self.common_port()
        servers = []
        for i, ip in enumerate(self.IPS):
            s = DnsServer(self.tmpdir, "dns-%d" % (i + 1), self.hosts, cluster_ip=ip,
                          cluster_port=port, ports=(free_port(), free_port(), free_port()),
                          args=["--cluster.node-id", "dns-%d" % (i + 1),
                                "--cluster.join", "%s:%d" % (HOSTS_NAME, port),
                                "--cluster.join-interval", "1s"])
            self.procs.append(s)
            servers.append(s)
        for s in servers:
            s.start(wait=False)
        for s in servers:
            wait_healthy(s)  # node 3 links nobody: not ready for 10 s
        n1, n2, n3 = servers
        self.wait_cluster((n1, n2))
        time.sleep(1.5)  # one more resolution round: node 3 is still out
        for s in (n1, n2):
            self.assertEqual(sorted(nodes(s)), ["dns-1", "dns-2"])
        self.assertEqual(sorted(nodes(n3)), ["dns-3"])
        members = get_json(n1, "/status/cluster/members")
        self.assertEqual(sorted(m["addr"] for m in members),
                         ["127.0.0.11:%d" % port, "127.0.0.12:%d" % port], members)

        # the name now answers with node 3 too: it joins within join_interval
        t0 = time.monotonic()
        write_hosts(self.hosts, self.IPS)
        self.wait_cluster(servers, timeout=T(4))
        joined = time.monotonic() - t0
        self.assertLess(joined, T(3), "node 3 joined %.1fs after the name listed it" % joined)

        # and back: node 3 dropped by 1 and 2, nothing restarted
        t0 = time.monotonic()
        write_hosts(self.hosts, self.IPS[:2])
        self.wait_cluster((n1, n2), timeout=T(4))
        self.assertTrue(n3.alive)
        print("\n  dns: node 3 joined in %.2fs, dropped in %.2fs"
              % (joined, time.monotonic() - t0))


class ClusterFailureTest(ClusterTestBase):
    def test_node_killed_under_load(self):
        servers = self.start_cluster(3)
        up = self.upstream()
        ulb = self.lb(servers, "upstream_port", "upstream-lb")
        ag = self.agent(servers[0], "ep-kill", up.addr, connect_url=ulb.url)
        holder = wait_for(lambda: [s for s in servers if get_json(
            s, "/status/upstream/endpoints").get("ep-kill")], T(5), what="the tunnel's node")[0]
        entry = [s for s in servers if s is not holder][0]
        third = [s for s in servers if s is not holder and s is not entry][0]
        self.wait_remote_endpoint([entry, third], holder, "ep-kill")

        load = LoadGen(entry.proxy_port, 20, ["ep-kill"], timeout=T(5)).start()
        time.sleep(1.0)
        t_kill = time.monotonic()
        holder.kill()
        gone = {}
        deadline = t_kill + T(10)
        while time.monotonic() < deadline and len(gone) < 2:
            for s in (entry, third):
                if s.node_id not in gone and holder.node_id not in nodes(s):
                    gone[s.node_id] = time.monotonic() - t_kill
            time.sleep(0.05)
        # keep the load up until the agent is back and a little more
        wait_for(lambda: any(r["ok"] and r["t0"] > t_kill for r in load.snapshot()), T(10),
                 what="a request succeeding after the kill")
        time.sleep(2.0)
        results = load.stop()

        self.assertEqual(sorted(gone), sorted((entry.node_id, third.node_id)),
                         "%s still listed by %r" % (holder.node_id, gone))
        for nid, dt in gone.items():
            self.assertLess(dt, 3.0, "%s dropped %s after %.2fs" % (nid, holder.node_id, dt))

        fails = [r for r in results if not r["ok"]]
        events = [(t_kill, "kill -9 of %s" % holder.name)]
        lines = [describe_request(r, t_kill, events) for r in fails]
        # R: the first request started after the kill from which on all succeed
        recovered = None
        for r in results:
            if r["t0"] >= t_kill and all(x["ok"] for x in results if x["seq"] >= r["seq"]):
                recovered = r
                break
        print("\n  kill -9: %d requests, %d failed, recovered %.2fs after the kill; "
              "dropped from status after %r" % (
                  len(results), len(fails),
                  -1 if recovered is None else recovered["t0"] - t_kill, gone))
        for line in lines[:20]:
            print("  failed " + line)
        self.assertIsNotNone(recovered, "requests never recovered:\n" + "\n".join(lines))
        self.assertLess(recovered["t0"] - t_kill, T(10), "\n".join(lines))
        early = [r for r in fails if r["t0"] < t_kill - 0.3]
        self.assertEqual(early, [], "failures before the kill:\n" + "\n".join(lines))
        self.assertGreaterEqual(sum(1 for r in results if r["t0"] > recovered["t0"]), 20)
        self.wait_streams_zero((entry, third))

    def test_rolling_restart_under_load(self):
        servers = self.start_cluster(3, "--grace-period", "20s")
        up = self.upstream()
        ulb = self.lb(servers, "upstream_port", "upstream-lb")
        plb = self.lb(servers, "proxy_port", "proxy-lb")
        self.agent(servers[0], "roll-1", up.addr, connect_url=ulb.url)
        self.agent(servers[1], "roll-2", up.addr, connect_url=ulb.url)
        for ep in ("roll-1", "roll-2"):
            wait_for(lambda ep=ep: all(not is_no_upstream(s.proxy(ep, "GET", "/"))
                                       for s in servers), T(5), what="%s on every node" % ep)

        t_ref = time.monotonic()
        events = []
        exits = []
        load = LoadGen(plb.port, 200, ["roll-1", "roll-2"], timeout=T(10)).start()
        time.sleep(1.0)
        for s in servers:
            events.append((time.monotonic(), "SIGTERM to %s" % s.name))
            t = time.monotonic()
            s.signal(15)
            rc = s.wait(T(25))
            events.append((time.monotonic(), "exit of %s (%r)" % (s.name, rc)))
            exits.append((s.name, rc, time.monotonic() - t))
            if rc is None:
                s.kill()
                self.fail("%s did not exit within %.0fs of SIGTERM" % (s.name, T(25)))
            s.start()
            events.append((time.monotonic(), "%s ready again" % s.name))
            self.wait_cluster(servers, timeout=T(10))
            plb.wait_ready(s)
            ulb.wait_ready(s)
            events.append((time.monotonic(), "%s linked again" % s.name))
            time.sleep(0.5)
        time.sleep(1.0)
        results = load.stop()
        fails = [r for r in results if not r["ok"]]
        counts = {}
        for r in results:
            counts[r["endpoint"]] = counts.get(r["endpoint"], 0) + 1
        timeline = "\n".join("  %+8.3fs %s" % (t - t_ref, what) for t, what in events)
        print("\n  rolling restart: %d requests (%r), %d failed; exits %r\n%s" % (
            len(results), counts, len(fails),
            [(n, rc, round(dt, 2)) for n, rc, dt in exits], timeline))
        lines = [describe_request(r, t_ref, events, plb) for r in fails]
        for line in lines[:50]:
            print("  FAILED " + line)
        self.assertEqual([(n, rc) for n, rc, _ in exits], [(s.name, 0) for s in servers],
                         "exit codes after SIGTERM")
        self.assertEqual(len(fails), 0, "%d of %d requests failed:\n%s\ntimeline:\n%s" % (
            len(fails), len(results), "\n".join(lines[:50]), timeline))
        # (8) no stream nor request left open anywhere
        self.wait_streams_zero(servers)
        self.wait_in_flight_zero(servers)


class ClusterToolsTest(ClusterCase):
    """The status API through one node (?forward=), `piko server status`
    against real nodes, the cluster gauge, and TLS on the cluster port."""

    def test_forward_status_cli_and_gauge(self):
        a, b, c = self.start_cluster(3)
        up = self.upstream()
        self.agent(a, "ep-tools", up.addr)
        self.wait_remote_endpoint([b, c], a, "ep-tools")
        # ?forward=<id>: B answers with A's own view, replayed to A
        r = request(b.admin_port, "GET", "/status/cluster/nodes/local?forward=%s" % a.node_id)
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual((doc["id"], doc["endpoints"]), (a.node_id, {"ep-tools": 1}))
        r = request(b.admin_port, "GET", "/status/upstream/endpoints?forward=%s" % a.node_id)
        self.assertEqual((r.status, r.json()), (200, {"ep-tools": 1}))
        r = request(b.admin_port, "GET", "/status/upstream/endpoints?forward=nope")
        self.assertEqual((r.status, r.body), (404, b""))
        # `piko server status` against real nodes, YAML out
        def status(*args):
            p = subprocess.run([CONFIG.bin, "server", "status"] + list(args) +
                               ["--server.url", "http://127.0.0.1:%d" % b.admin_port],
                               capture_output=True, timeout=T(20))
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            return yaml.safe_load(p.stdout.decode())
        got = status("cluster", "nodes")
        self.assertEqual(sorted(n["id"] for n in got["nodes"]),
                         sorted(s.node_id for s in (a, b, c)))
        self.assertEqual({n["id"]: n["upstreams"] for n in got["nodes"]}[a.node_id], 1)
        self.assertEqual(status("cluster", "node", a.node_id)["endpoints"], {"ep-tools": 1})
        self.assertEqual(status("upstream", "endpoints", "--forward", a.node_id),
                         {"ep-tools": 1})
        self.assertEqual(status("upstream", "endpoints"), {})
        # piko_cluster_nodes{status}: 3 active, then 2 and 1 unreachable
        self.assertEqual(metric_value(b, "piko_cluster_nodes", {"status": "active"}), 3)
        self.assertEqual(metric_value(b, "piko_cluster_nodes", {"status": "unreachable"}), 0)
        c.kill()
        wait_for(lambda: metric_value(b, "piko_cluster_nodes", {"status": "active"}) == 2 and
                 metric_value(b, "piko_cluster_nodes", {"status": "unreachable"}) == 1,
                 T(5), what="B counts C unreachable")

    def test_tls_cluster_port(self):
        pki = Pki(self.tmpdir)
        key = os.path.join(self.tmpdir, "cluster.key")
        with open(key, "w") as f:
            f.write("a-cluster-key\n")
        tls = ["--cluster.tls.cert", pki.path("server.crt"), "--cluster.tls.key",
               pki.path("server.key"), "--cluster.tls.client-cas", pki.path("client-ca.crt"),
               "--cluster.tls.client.cert", pki.path("client.crt"),
               "--cluster.tls.client.key", pki.path("client.key"),
               "--cluster.tls.client.root-cas", pki.path("ca.crt"),
               "--cluster.auth.key-file", key]
        a, b = self.start_cluster(2, *tls)
        up = self.upstream()
        self.agent(a, "ep-tls", up.addr)
        self.wait_remote_endpoint([b], a, "ep-tls")
        r = b.proxy("ep-tls", "GET", "/")
        self.assertEqual((r.status, r.body), (200, b"ok\n"))
        # The cluster port speaks TLS only (plain HTTP gets Go's 400 and
        # nothing else), and wants a client certificate.
        with socket.create_connection(("127.0.0.1", a.cluster_port), timeout=T(5)) as sk:
            sk.sendall(b"GET /piko/v1/cluster/link HTTP/1.1\r\nHost: x\r\n\r\n")
            sk.settimeout(T(5))
            data = b""
            try:
                while True:
                    chunk = sk.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except (ConnectionResetError, socket.timeout):
                pass
            self.assertEqual(data, b"HTTP/1.0 400 Bad Request\r\n\r\n"
                                   b"Client sent an HTTP request to an HTTPS server.\n")
        ctx = ssl.create_default_context(cafile=pki.path("ca.crt"))
        with socket.create_connection(("127.0.0.1", a.cluster_port), timeout=T(5)) as raw:
            try:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock:
                    tls_sock.sendall(b"GET /piko/v1/cluster/link HTTP/1.1\r\n\r\n")
                    data = tls_sock.recv(100)
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                data = b""
            self.assertEqual(data, b"", "answered a client without a certificate")


class ClusterConfigTest(ClusterCase):
    """A Piko config loads unchanged; node IDs; the join timeout."""

    def test_piko_gossip_keys_and_node_id_prefix(self):
        gport = free_port()
        path = self.write_file("piko.yaml", (
            "cluster:\n"
            "  node_id_prefix: pod-0-\n"
            "  join: []\n"
            "  abort_if_join_fails: true\n"
            "  join_timeout: 1m\n"
            "  gossip:\n"
            "    bind_addr: 127.0.0.1:%d\n"
            "    advertise_addr: 127.0.0.1:%d\n"
            "    interval: 100ms\n"
            "    max_packet_size: 1400\n" % (gport, gport)))
        ids = []
        for _ in range(2):
            # cluster_port=0: no --cluster.bind-addr; the gossip alias binds
            s = self.server("--config.path", path, cluster_port=0)
            doc = get_json(s, "/status/cluster/nodes/local")
            ids.append(doc["id"])
            self.assertTrue(find_logs(s, "listening", **{"port-name": "cluster",
                                                          "port": str(gport)}), s.describe())
            self.assertTrue([d for d in log_lines(s) if d.get("level") == "warn" and
                             "gossip" in d.get("msg", "")], "no warning for the gossip keys")
            s.stop()
        for i in ids:
            self.assertRegex(i, r"^pod-0-[a-z0-9]{7}$")
        self.assertNotEqual(ids[0], ids[1], "a restarted node must be a new node")

    def test_join_timeout_exits_1(self):
        dead = free_port()  # nothing listens there
        s = self.server("--cluster.join", "127.0.0.1:%d" % dead, "--cluster.join-timeout",
                        "1s", start=False)
        s.start(wait=False)
        rc = s.wait(T(15))
        if rc is None:
            s.kill()
            self.fail("still running after the join timeout\n" + s.describe())
        self.assertEqual(rc, 1, s.describe())
        self.assertTrue(find_logs(s, "failed to join cluster: no joined address answered "
                                     "within cluster.join_timeout"), s.describe())
        # ... unless told not to abort
        # (not waiting for /ready: with a member that never answers, a node
        # is ready only 10 s after start when that member is the one to dial)
        s2 = self.server("--cluster.join", "127.0.0.1:%d" % dead, "--cluster.join-timeout",
                         "1s", "--cluster.abort-if-join-fails=false", start=False)
        s2.start(wait=False)
        wait_healthy(s2)
        time.sleep(1.5)
        self.assertTrue(s2.alive, s2.describe())
        self.assertEqual(request(s2.admin_port, "GET", "/health").status, 200)


class ClusterBulkTest(ClusterTestBase):
    """Backpressure across the link: bulk both ways, and a client that
    stops reading, cost the nodes no more memory than on one node."""

    RSS_LIMIT_MIB = 64

    def test_bulk_both_ways_across_nodes(self):
        total = (64 if CONFIG.sanitized else 256) * MiB
        a, c = self.start_cluster(2)
        svc = self.tcp_service()
        ag = self.tcp_agent(a, "ep-bulk", svc.addr)
        self.wait_remote_endpoint([c], a, "ep-bulk")
        fwd = self.forward(c, "ep-bulk")
        seed = random.randrange(1 << 30)
        with RssSampler([a, c, ag]) as rss:
            sk = socket.create_connection(("127.0.0.1", fwd.port), timeout=T(30))
            sk.sendall(b"ECHO xnode\n")
            sent_h, recv_h, n, dt = echo_transfer(sk, total, seed, T(180))
            sk.close()
        self.assertEqual((n, recv_h), (total, sent_h), "bytes echoed back across the nodes")
        print("\n  [x-node bulk] %d MiB each way in %.1fs (%.1f MB/s each way); peak RSS "
              "entry %.1f MiB, holder %.1f MiB, agent %.1f MiB"
              % (total // MiB, dt, total / dt / 1e6, rss.peak_mib(c), rss.peak_mib(a),
                 rss.peak_mib(ag)))
        if not CONFIG.sanitized:
            for p in (a, c, ag):
                self.assertLess(rss.peak_mib(p), self.RSS_LIMIT_MIB, p.name)
        self.wait_streams_zero((a, c))

    def test_client_that_stops_reading(self):
        total = 256 * MiB
        a, b = self.start_cluster(2)
        up = self.upstream()
        self.agent(a, "ep-slow", up.addr)
        self.wait_remote_endpoint([b], a, "ep-slow")
        sk = socket.create_connection(("127.0.0.1", b.proxy_port), timeout=T(30))
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sk.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: ep-slow\r\n"
                   b"\r\n" % total)
        got = bytearray()
        while len(got) < 4 * MiB:
            got += sk.recv(1 << 20)
        head, _, body0 = bytes(got).partition(b"\r\n\r\n")
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        base = {p.name: proc_status_kib(p.pid, "VmRSS") for p in (a, b)}
        time.sleep(2.0)  # not reading: the windows must stop the sender
        grown = {p.name: (proc_status_kib(p.pid, "VmRSS") - base[p.name]) / 1024.0
                 for p in (a, b)}
        h = hashlib.sha256(body0)
        n = len(body0)
        while n < total:
            chunk = sk.recv(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        sk.close()
        want = hashlib.sha256()
        pattern = BIG_PATTERN
        left = total
        while left:
            k = min(left, len(pattern))
            want.update(pattern[:k])
            left -= k
        self.assertEqual(n, total)
        self.assertEqual(h.hexdigest(), want.hexdigest(), "body across the nodes")
        print("\n  [x-node slow reader] RSS growth while the client did not read: %r MiB"
              % {k: round(v, 1) for k, v in grown.items()})
        if not CONFIG.sanitized:
            for name, mib in grown.items():
                self.assertLess(mib, 16, "%s grew %.1f MiB while the client did not read"
                                % (name, mib))
        self.wait_streams_zero((a, b))


class ClusterRebalanceTest(ClusterCase):
    """upstream.rebalance.*: a node with far more tunnels than the cluster's
    average sheds them, a bounded number per second, until it is within the
    threshold; our agent moves each shed tunnel to another node."""

    def test_overloaded_node_sheds_to_the_others(self):
        threshold, shed_rate, n = 0.5, 0.25, 60
        servers = self.start_cluster(
            3, "--upstream.rebalance.threshold", str(threshold),
            "--upstream.rebalance.shed-rate", str(shed_rate),
            "--upstream.rebalance.min-conns", "10", "--grace-period", "10s")
        a, b, c = servers
        up = self.upstream()
        ulb = self.lb(servers, "upstream_port", "upstream-lb")
        ulb.excluded = {1, 2}  # every tunnel lands on A first
        path = os.path.join(self.tmpdir, "agent.yaml")
        with open(path, "w") as f:
            f.write("connect:\n  url: %s\nlisteners:\n" % ulb.url)
            for i in range(n):
                f.write("  - endpoint_id: rb-%d\n    addr: %s\n    timeout: 10s\n"
                        % (i, up.addr))
        agent = ConfigProc(self.tmpdir, "agent-rb", [CONFIG.bin, "agent", "start",
                                                   "--config.path", path])
        self.procs.append(agent)
        # Shedding starts as soon as A holds min_conns: moves land on A
        # again until the balancer lets B and C in, which is fine.
        agent.start()
        wait_for(lambda: metric_value(a, "piko_upstreams_connected_upstreams", default=0) == n,
                 T(20), what="%d tunnels on A" % n)
        samples = []
        ulb.excluded = {0}
        t0 = time.monotonic()
        avg = n // 3
        limit = avg * (1 + threshold)

        def balanced():
            counts = [metric_value(s, "piko_upstreams_connected_upstreams", default=0)
                      for s in servers]
            samples.append((time.monotonic() - t0, counts))
            return counts[0] < limit and sum(counts) == n

        wait_for(balanced, T(40), interval=0.2, what="A within the threshold")
        # Every endpoint still answers, wherever its tunnel is now.
        for i in (0, n // 2, n - 1):
            r = b.proxy("rb-%d" % i, "GET", "/")
            self.assertEqual(r.status, 200, r)
        # Bounded per second: at most ceil(avg x shed_rate) sheds a second;
        # a move completes within about a second of its shed, so no 1 s
        # window sees more than two seconds' worth go.
        per_sec = math.ceil(avg * shed_rate)
        worst = 0
        for i, (t_i, c_i) in enumerate(samples):
            for t_j, c_j in samples[i:]:
                if t_j - t_i <= 1.0:
                    worst = max(worst, c_i[0] - c_j[0])
        print("\n  rebalance: A %d -> %d in %.1fs, worst drop in 1 s %d (cap %d/s); last %r"
              % (n, samples[-1][1][0], samples[-1][0], worst, per_sec, samples[-1][1]))
        self.assertLessEqual(worst, 2 * per_sec, samples)
        self.assertGreater(samples[-1][0], (n - limit) / per_sec / 2 - 1.0,
                           "shed faster than the rate allows: %r" % samples)
        logs = find_logs(a, "rebalance; shedding connections")
        self.assertTrue(logs, "A never logged shedding")
        self.assertTrue(all(int(r.get("count", "0")) <= per_sec for r in logs), logs)
        self.assertGreater(metric_value(b, "piko_upstreams_connected_upstreams", default=0), 0)
        self.assertGreater(metric_value(c, "piko_upstreams_connected_upstreams", default=0), 0)


if __name__ == "__main__":
    unittest.main()
