"""DNS in the agent and `piko forward` runs off the event loop (issue 14 item 2).

The agent runs in a mount namespace of its own whose /etc/resolv.conf points
at a tiny DNS server in this process (127.0.0.x:53). One name answers after
3 s: while a request to the listener whose service has that name waits for
its lookup, the other listener (service by a name answered at once) is served
with normal latency, and the slow one then works too. The server URL is a
name too (http://localhost:PORT, from /etc/hosts).
"""

import os
import shutil
import socket
import struct
import subprocess
import threading
import time

from harness import CONFIG, PikoTestCase, Proc, T, free_port, proxy_request, wait_for

SLOW = "slow.piko.test"
FAST = "fast.piko.test"
BOTH = "both.piko.test"  # AAAA ::1 and A 127.0.0.1: ::1 sorts first
SLOW_S = 3.0


class TinyDns:
    """Answers A queries for SLOW (after SLOW_S seconds) and FAST (at once)
    with 127.0.0.1; every other question gets an empty NOERROR answer (so
    AAAA lookups end too). One thread per query: a slow answer holds no
    other one."""

    def __init__(self, ip):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 53))
        self.sock.settimeout(0.1)  # close() must not wait for a blocked recvfrom
        self.stop = False
        self.queries = []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def close(self):
        self.stop = True
        self.t.join(2)
        self.sock.close()

    def run(self):
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.answer, args=(data, peer), daemon=True).start()

    def answer(self, q, peer):
        if len(q) < 12:
            return
        i = 12
        labels = []
        while i < len(q) and q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        qend = i + 5
        if qend > len(q):
            return
        name = ".".join(labels).lower()
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        self.queries.append((time.monotonic(), name, qtype))
        if name == SLOW:
            time.sleep(SLOW_S)
        ans = b""
        if qtype == 1 and name in (SLOW, FAST, BOTH):
            ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton("127.0.0.1")
        if qtype == 28 and name == BOTH:
            ans = (b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 5, 16)
                   + socket.inet_pton(socket.AF_INET6, "::1"))
        rcode = 0 if name in (SLOW, FAST, BOTH) else 3  # NXDOMAIN otherwise
        flags = 0x8180 | rcode
        hdr = q[:2] + struct.pack("!HHHHH", flags, 1, 1 if ans else 0, 0, 0)
        try:
            self.sock.sendto(hdr + q[12:qend] + ans, peer)
        except OSError:
            pass


class DnsOffLoopTest(PikoTestCase):
    def setUp(self):
        super().setUp()
        if not shutil.which("unshare"):
            self.skipTest("no unshare(1)")
        # a loopback address of our own (tests may run side by side)
        self.dns = None
        for k in range(20):
            ip = "127.0.%d.%d" % (77 + k, 53 + (os.getpid() % 150))
            try:
                self.dns = TinyDns(ip)
                break
            except OSError as e:
                err = e
        if not self.dns:
            self.skipTest("cannot bind a 127.0.x.y:53: %r" % (err,))
        self.addCleanup(self.dns.close)
        DNS_IP = ip
        self.resolv = self.write_file("resolv.conf",
                                      "nameserver %s\noptions timeout:10 attempts:1\n" % DNS_IP)
        probe = subprocess.run(["unshare", "-m", "sh", "-c",
                                'mount --bind "$0" /etc/resolv.conf && cat /etc/resolv.conf',
                                self.resolv], capture_output=True, timeout=10)
        if probe.returncode != 0 or DNS_IP.encode() not in probe.stdout:
            self.skipTest("unshare -m with a bind-mounted /etc/resolv.conf does not work "
                          "here: %r" % (probe,))

    def in_netns(self, name, argv):
        """A piko process whose /etc/resolv.conf names our DNS server."""
        p = Proc(name, self.tmpdir,
                 ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                  self.resolv] + argv)
        self.procs.append(p)
        p._spawn()
        return p

    def timed(self, srv, endpoint):
        t0 = time.monotonic()
        r = proxy_request(srv, endpoint, "GET", "/", timeout=T(20))
        return r, time.monotonic() - t0

    def test_slow_lookup_stalls_no_other_tunnel(self):
        up = self.upstream()
        srv = self.server()
        cfg = self.write_file("agent.yaml", """\
connect:
  url: http://localhost:%d
log:
  level: debug
listeners:
  - endpoint_id: slow
    addr: %s:%d
    protocol: http
    timeout: 20s
  - endpoint_id: fast
    addr: %s:%d
    protocol: http
    timeout: 20s
""" % (srv.upstream_port, SLOW, up.port, FAST, up.port))
        ag = self.in_netns("agent", [CONFIG.bin, "agent", "start", "--config.path", cfg])

        def fast_ok():
            if ag.poll() is not None:
                raise AssertionError("agent exited\n" + ag.describe())
            return proxy_request(srv, "fast", "GET", "/", timeout=T(5)).status == 200
        wait_for(fast_ok, T(20), what="the fast endpoint routable through the agent")
        # registered, without a request yet (the agent keeps idle service
        # connections: the first request is the one that dials)
        wait_for(lambda: '"msg":"connected","endpoint-id":"slow"' in ag.stderr(), T(20),
                 what="the slow endpoint's tunnel")
        time.sleep(0.3)

        # one request to the slow service: its lookup takes SLOW_S
        slow_result = {}

        def slow_req():
            slow_result["r"] = self.timed(srv, "slow")
        th = threading.Thread(target=slow_req)
        th.start()
        wait_for(lambda: any(n == SLOW and t > time.monotonic() - 1
                             for t, n, _ in list(self.dns.queries)),
                 T(5), what="the agent asking for the slow name")
        # meanwhile the other listener answers at once, again and again
        fast = []
        t_end = time.monotonic() + SLOW_S * 0.6
        while time.monotonic() < t_end:
            r, dt = self.timed(srv, "fast")
            self.assertEqual(r.status, 200, r)
            fast.append(dt)
        th.join(T(20))
        self.assertGreaterEqual(len(fast), 3, fast)
        self.assertLess(max(fast), 1.0, "fast endpoint stalled behind a slow lookup: %r" % fast)
        r, dt = slow_result["r"]
        self.assertEqual(r.status, 200, (r, ag.describe()))
        self.assertGreaterEqual(dt, SLOW_S * 0.8, dt)
        print("\n  dns off the loop: fast requests during a %.0f s lookup: max %.3f s over %d; "
              "the slow one %.2f s" % (SLOW_S, max(fast), len(fast), dt))

    def test_server_name_with_two_addresses(self):
        """The server's name gives ::1 first, where nothing listens: the
        agent goes on to 127.0.0.1 at once."""
        up = self.upstream()
        srv = self.server()
        ag = self.in_netns("agent", [
            CONFIG.bin, "agent", "http", "web", up.addr, "--log.level", "debug",
            "--connect.url", "http://%s:%d" % (BOTH, srv.upstream_port)])
        wait_for(lambda: '"msg":"connected"' in ag.stderr(), T(10),
                 what="the agent connected through the second address")
        self.assertEqual(proxy_request(srv, "web", "GET", "/").status, 200)
        self.assertNotIn("retrying", ag.stderr())

    def test_forward_by_name(self):
        """`piko forward` dials the server by a name resolved off the loop."""
        up = self.upstream()
        srv = self.server()
        ag = Proc("agent", self.tmpdir, [CONFIG.bin, "agent", "tcp", "raw", up.addr,
                                         "--connect.url", srv.upstream_url])
        self.procs.append(ag)
        ag._spawn()
        port = free_port()
        fw = self.in_netns("forward", [
            CONFIG.bin, "forward", "tcp", "127.0.0.1:%d" % port, "raw",
            "--connect.url", "http://%s:%d" % (FAST, srv.proxy_port)])

        def get():
            if fw.poll() is not None:
                raise AssertionError("forward exited\n" + fw.describe())
            s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    data += b
                return data
            finally:
                s.close()
        data = wait_for(lambda: get().startswith(b"HTTP/1.1 200") or None, T(15),
                        what="a request through piko forward by name")
        self.assertTrue(data)
        self.assertTrue(any(n == FAST for _, n, _ in self.dns.queries))


if __name__ == "__main__":
    import unittest
    unittest.main()
