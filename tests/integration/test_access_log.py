"""The access log in Piko's shape (protocol reference §2.5).

The same requests go to Piko's server and to ours (each with Piko's agent in
front of the same service), and to Piko's agent and to ours (behind our
server); the `request` records they write are compared field by field:
proto, method, host (up to the port), path, status, the request and
response header objects (Date's value aside), the level, and the duration
as a Go duration string. The header allow and block lists, their YAML keys,
the refusal of both lists at once, /_piko and the level rule are checked
too.

Without the Piko peer (run.py --piko-peer) the side-by-side tests are
skipped, unless --require-peers, which hack/test.sh always passes."""

import json
import re
import socket
import subprocess
import time

from harness import CONFIG, PikoTestCase, T, child_env, wait_for
from test_interop import InteropCase, PikoServer

GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|µs|ms|s|m|h))+$|^0s$")

# Requests sent through each hop. Every one carries X-Case, so the records
# of the readiness probes are told apart.
CASES = [
    ("GET", "/headers?a=b&c", [("User-Agent", "al-test"), ("x-multi", "1"), ("X-MULTI", "2"),
                               ("Accept", "*/*"), ("Authorization", "Bearer t")]),
    ("POST", "/echo/x", [("Content-Type", "text/plain"), ("accept-encoding", "gzip")]),
    ("GET", "/status/418", []),
    ("GET", "/status/503", []),
    ("GET", "/a%20b/../c", []),
    ("GET", "/headers?set-header=X-Out:one&set-header=x-out:two"
            "&set-header=Connection:X-Gone&set-header=X-Gone:1", []),
    ("HEAD", "/headers", []),
]


def send(port, method, path, headers, endpoint, case):
    """One request on its own connection; the response is read whole."""
    hs = {"x-piko-endpoint": endpoint, "X-Case": str(case)}
    body = b"hello" if method == "POST" else None
    # http.client would fold the two x-multi headers: build the head by hand.
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % port]
    lines += ["%s: %s" % kv for kv in hs.items()]
    lines += ["%s: %s" % kv for kv in headers]
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    s = socket.create_connection(("127.0.0.1", port), timeout=T(10))
    try:
        s.sendall(data)
        buf = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
    finally:
        s.close()
    return int(buf.split(b" ", 2)[1])


def records(proc, subsystem):
    """The `request` records of one subsystem, in order."""
    out = []
    for line in proc.stderr().splitlines():
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("subsystem") == subsystem and d.get("msg") == "request":
            out.append(d)
    return out


def case_records(proc, subsystem):
    """Records keyed by their X-Case header (the probes have none)."""
    by = {}
    for d in records(proc, subsystem):
        case = d["request"]["request_headers"].get("X-Case")
        if case:
            by[int(case[0])] = d
    return by


def comparable(d, port, endpoint):
    """What must be the same in Piko's record and ours: all but the
    duration's value, the Date, the server's port and the endpoint's name
    (which the echo service also returns in its headers)."""
    r = dict(d["request"])
    assert GO_DURATION.match(r["duration"]), r["duration"]
    r.pop("duration")
    r = json.loads(json.dumps(r).replace(":%d" % port, ":<port>").replace(
        '"%s"' % endpoint, '"<endpoint>"'))
    resp = dict(r["response_headers"])
    if "Date" in resp:
        resp["Date"] = ["<date>"]
    r["response_headers"] = resp
    return {"level": d["level"], "keys": sorted(d["request"]), "request": r}


class AccessLogParity(InteropCase):
    """Piko's records and ours for the same requests."""

    def compare(self, piko_proc, piko_port, ours_proc, ours_port, subsystem, n,
                endpoints=("al", "al")):
        self.maxDiff = None
        p = wait_for(lambda: len(case_records(piko_proc, subsystem)) >= n and
                     case_records(piko_proc, subsystem), T(10), what="Piko's records")
        o = wait_for(lambda: len(case_records(ours_proc, subsystem)) >= n and
                     case_records(ours_proc, subsystem), T(10), what="our records")
        self.assertEqual(sorted(o), sorted(p))
        for case in sorted(p):
            with self.subTest(case=case, request=CASES[case][:2] if case < len(CASES) else case):
                self.assertEqual(comparable(o[case], ours_port, endpoints[1]),
                                 comparable(p[case], piko_port, endpoints[0]))

    def run_cases(self, port, endpoint, cases=CASES):
        return [send(port, m, path, hs, endpoint, i) for i, (m, path, hs) in enumerate(cases)]

    def servers(self, *args):
        piko = PikoServer(self.tmpdir, args=args)
        self.procs.append(piko)
        piko.start()
        ours = self.server(*args)
        up = self.upstream()
        for srv in (piko, ours):
            self.piko_agent_http(srv, "al", up.addr)
        return piko, ours

    def test_server_records_match_piko(self):
        piko, ours = self.servers()
        statuses = [self.run_cases(srv.proxy_port, "al") for srv in (piko, ours)]
        self.assertEqual(statuses[1], statuses[0])
        self.assertEqual(statuses[1][:4], [200, 200, 418, 503])
        # no upstream for the endpoint: Piko's 502 and its record
        for srv in (piko, ours):
            self.assertEqual(send(srv.proxy_port, "GET", "/x", [], "none", 100), 502)
        self.compare(piko, piko.proxy_port, ours, ours.proxy_port, "proxy.access",
                     len(CASES) + 1)
        # the shape itself, on one record of ours
        rec = case_records(ours, "proxy.access")[0]
        self.assertEqual(rec["level"], "info")
        r = rec["request"]
        self.assertEqual(r["proto"], "HTTP/1.1")
        self.assertEqual(r["path"], "/headers")
        self.assertEqual(r["request_headers"]["X-Multi"], ["1", "2"])
        self.assertEqual(r["request_headers"]["X-Piko-Forward"], ["true"])
        self.assertNotIn("Host", r["request_headers"])
        self.assertEqual(case_records(ours, "proxy.access")[3]["level"], "warn")  # 503
        out = case_records(ours, "proxy.access")[5]["request"]["response_headers"]
        self.assertEqual(out["X-Out"], ["one", "two"])
        self.assertNotIn("X-Gone", out)  # named by Connection: hop-by-hop
        self.assertNotIn("Connection", out)

    def test_header_lists_match_piko(self):
        piko, ours = self.servers(
            "--proxy.access-log.request-headers.allow-list", "x-case,user-agent,X-MULTI",
            "--proxy.access-log.response-headers.block-list", "content-type,x-test")
        for srv in (piko, ours):
            self.run_cases(srv.proxy_port, "al")
        self.compare(piko, piko.proxy_port, ours, ours.proxy_port, "proxy.access", len(CASES))
        r = case_records(ours, "proxy.access")[0]["request"]
        self.assertEqual(sorted(r["request_headers"]), ["User-Agent", "X-Case", "X-Multi"])
        self.assertNotIn("Content-Type", r["response_headers"])
        self.assertNotIn("X-Test", r["response_headers"])
        self.assertIn("Content-Length", r["response_headers"])

    def test_agent_records_match_piko(self):
        srv = self.server()
        up = self.upstream()
        lists = ("--access-log.request-headers.block-list", "authorization",
                 "--access-log.response-headers.allow-list", "x-out,content-type,x-case")
        theirs = self.piko_agent_http(srv, "al-p", up.addr, *lists)
        ours = self.agent(srv, "al-o", up.addr, *lists)
        self.run_cases(srv.proxy_port, "al-p")
        self.run_cases(srv.proxy_port, "al-o")
        # The agents' records: the Host is the server's in both.
        self.compare(theirs, srv.proxy_port, ours, srv.proxy_port, "proxy.http.access",
                     len(CASES), endpoints=("al-p", "al-o"))
        r = case_records(ours, "proxy.http.access")[0]["request"]
        self.assertNotIn("Authorization", r["request_headers"])
        self.assertIn("X-Forwarded-For", r["request_headers"])
        self.assertEqual(sorted(r["response_headers"]), ["Content-Type"])

    def test_both_lists_refused_like_piko(self):
        for bin in (CONFIG.piko_peer, CONFIG.bin):
            for port in ("request", "response"):
                with self.subTest(bin=bin, headers=port):
                    r = subprocess.run([
                        bin, "server", "--proxy.access-log.%s-headers.allow-list" % port, "a",
                        "--proxy.access-log.%s-headers.block-list" % port, "b",
                        "--proxy.bind-addr", "127.0.0.1:0", "--upstream.bind-addr",
                        "127.0.0.1:0", "--admin.bind-addr", "127.0.0.1:0"],
                        capture_output=True, timeout=T(10), env=child_env())
                    self.assertNotEqual(r.returncode, 0, r)
                    self.assertIn("cannot define both allow list and block list",
                                  r.stderr.decode() + r.stdout.decode())


class AccessLogOurs(PikoTestCase):
    """What does not need Piko beside us."""

    def test_yaml_keys_internal_paths_and_level(self):
        cfg = "%s/server.yaml" % self.tmpdir
        with open(cfg, "w") as f:
            f.write("proxy:\n"
                    "  access_log:\n"
                    "    level: debug\n"
                    "    request_headers:\n"
                    "      block_list: [x-secret]\n"
                    "    response_headers:\n"
                    "      allow_list: [x-test]\n")
        srv = self.server("--config.path", cfg, log_level="info")
        up = self.upstream()
        self.agent(srv, "y", up.addr)
        self.assertEqual(send(srv.proxy_port, "GET", "/status/200", [("X-Secret", "s")], "y",
                              1), 200)
        self.assertEqual(send(srv.proxy_port, "GET", "/status/500", [("X-Secret", "s")], "y",
                              2), 500)
        # /_piko paths reach no route of Piko's: they are proxied, not logged
        self.assertEqual(send(srv.proxy_port, "GET", "/_piko/v1/none", [], "y", 3), 404)
        # Records at debug are filtered by --log.level info; a 5xx is raised
        # to warn and written.
        recs = wait_for(lambda: case_records(srv, "proxy.access"), T(10), what="a record")
        time.sleep(0.2)
        recs = case_records(srv, "proxy.access")
        self.assertEqual(sorted(recs), [2])
        r = recs[2]
        self.assertEqual(r["level"], "warn")
        self.assertNotIn("X-Secret", r["request"]["request_headers"])
        self.assertEqual(r["request"]["response_headers"], {"X-Test": ["1"]})
        self.assertEqual(r["request"]["status"], 500)
        self.assertFalse([d for d in records(srv, "proxy.access")
                          if d["request"]["path"].startswith("/_piko")])

    def test_disable_and_bad_level(self):
        srv = self.server("--proxy.access-log.disable")
        up = self.upstream()
        self.agent(srv, "d", up.addr, "--access-log.disable")
        self.assertEqual(send(srv.proxy_port, "GET", "/status/502", [], "d", 1), 502)
        time.sleep(0.2)
        self.assertEqual(records(srv, "proxy.access"), [])
        r = subprocess.run([CONFIG.bin, "server", "--proxy.access-log.level", "loud"],
                           capture_output=True, timeout=T(10), env=child_env())
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("invalid level: loud", r.stderr.decode())
