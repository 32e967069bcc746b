"""Helpers for the Piko integration tests: ports, process wrappers, HTTP.

Configuration comes from run.py (configure()) or, when the tests are run with
plain `python3 -m unittest`, from the environment: PIKO_BIN (path of the
binary), PIKO_SANITIZED=1, PIKO_TIMEOUT_SCALE (float), PIKO_KEEP_LOGS=1.

Every wait here is bounded in time; all ports are picked at run time and all
files live in a per-test tempfile directory, so two runs can share a machine.
"""

import atexit
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAM_PY = os.path.join(HERE, "upstream.py")


class _Config:
    def __init__(self):
        self.bin = os.environ.get("PIKO_BIN")
        self.sanitized = os.environ.get("PIKO_SANITIZED") == "1"
        scale = os.environ.get("PIKO_TIMEOUT_SCALE")
        self.scale = float(scale) if scale else (4.0 if self.sanitized else 1.0)
        self.keep_logs = os.environ.get("PIKO_KEEP_LOGS") == "1"
        # the Go test peers (hack/peers.sh): the real Piko and the SDK program
        self.piko_peer = os.environ.get("PIKO_PEER_PIKO")
        self.sdk_peer = os.environ.get("PIKO_PEER_SDK")
        self.require_peers = os.environ.get("PIKO_REQUIRE_PEERS") == "1"


CONFIG = _Config()


def configure(bin_path, sanitized=False, scale=None, keep_logs=False, piko_peer=None,
              sdk_peer=None, require_peers=False):
    CONFIG.bin = os.path.abspath(bin_path)
    CONFIG.piko_peer = piko_peer and os.path.abspath(piko_peer)
    CONFIG.sdk_peer = sdk_peer and os.path.abspath(sdk_peer)
    CONFIG.require_peers = require_peers
    CONFIG.sanitized = sanitized
    CONFIG.scale = scale if scale else (4.0 if sanitized else 1.0)
    CONFIG.keep_logs = keep_logs


def T(seconds):
    """A timeout scaled for slow (sanitized) builds."""
    return seconds * CONFIG.scale


def child_env(extra=None):
    env = dict(os.environ)
    if CONFIG.sanitized:
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if extra:
        env.update(extra)
    return env


def need_peer(path, what):
    """path when it is an executable test peer (hack/peers.sh); else skip the
    test, or fail it when the peers are required (run.py --require-peers)."""
    if path and os.access(path, os.X_OK):
        return path
    if CONFIG.require_peers:
        raise AssertionError("%s not given or not executable (%r): run hack/peers.sh and pass "
                             "it to run.py" % (what, path))
    raise unittest.SkipTest("%s not given (run.py --piko-peer/--sdk-peer)" % what)


# --- ports --------------------------------------------------------------------

_ports_lock = threading.Lock()
_ports_handed_out = set()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind :0, close).

    Never hands out the same port twice in this process. Another process may
    still grab it before we use it: Server.start() retries with new ports."""
    with _ports_lock:
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise RuntimeError("could not find a free port")


# --- HTTP ---------------------------------------------------------------------


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        b = self.body[:300]
        return "<Response %d %s body=%r%s>" % (
            self.status, self.reason, b, "..." if len(self.body) > 300 else "")


def read_response(resp):
    body = resp.read()
    return Response(resp.status, resp.reason, resp.headers, body)


def request(port, method, path, headers=None, body=None, timeout=None,
            host="127.0.0.1", encode_chunked=False):
    """One request on a fresh connection; returns a Response.

    headers may contain Host to override the default one."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout or T(15))
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}),
                     encode_chunked=encode_chunked)
        return read_response(conn.getresponse())
    finally:
        conn.close()


def proxy_request(server, endpoint, method, path, headers=None, body=None,
                  timeout=None, encode_chunked=False):
    """A request to the server's proxy port routed by x-piko-endpoint."""
    h = {"x-piko-endpoint": endpoint}
    h.update(headers or {})
    return request(server.proxy_port, method, path, h, body, timeout,
                   encode_chunked=encode_chunked)


class RequestLoad:
    """n threads sending keep-alive GETs for endpoint through the proxy port
    until stop(): ok[0] counts the 200s, bad lists anything else (status and
    body, or the exception). For tests that disturb tunnels under load."""

    def __init__(self, port, endpoint, n=4, path="/"):
        self.ok, self.bad = [0], []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(port, endpoint, path))
                         for _ in range(n)]
        for t in self._threads:
            t.start()

    def _run(self, port, endpoint, path):
        c = None
        while not self._stop.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=T(10))
                c.request("GET", path, headers={"x-piko-endpoint": endpoint})
                r = c.getresponse()
                body = r.read()
                if r.status == 200:
                    self.ok[0] += 1
                else:
                    self.bad.append((r.status, body))
            except (OSError, http.client.HTTPException) as e:
                self.bad.append(repr(e))
                c = None

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(T(15))


def is_no_upstream(resp):
    return resp.status == 502 and b"no available upstreams" in resp.body


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# --- processes ----------------------------------------------------------------

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

_live = []
_live_lock = threading.Lock()


@atexit.register
def _kill_leftovers():
    with _live_lock:
        procs = list(_live)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass


class StartupError(AssertionError):
    pass


class Proc:
    """A child process whose stdout/stderr go to files in workdir."""

    _seq = 0
    _seq_lock = threading.Lock()

    def __init__(self, name, workdir, argv, env=None):
        self.name = name
        self.workdir = workdir
        self.argv = list(argv)
        self.env = env
        self.p = None
        self.started_at = None
        self.killed = False  # SIGKILLed on purpose by the test
        self.signalled = False  # the harness/test sent it a signal
        self.runs = []  # (stderr path, stdout path) of every start

    def _spawn(self):
        with Proc._seq_lock:
            Proc._seq += 1
            seq = Proc._seq
        base = os.path.join(self.workdir, "%s-%d" % (self.name, seq))
        self.stderr_path = base + ".stderr"
        self.stdout_path = base + ".stdout"
        self.runs.append((self.stderr_path, self.stdout_path))
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=err, env=child_env(self.env),
                                      start_new_session=True)
        self.started_at = time.monotonic()
        self.killed = False
        self.signalled = False
        with _live_lock:
            _live.append(self.p)

    # state
    def poll(self):
        return None if self.p is None else self.p.poll()

    @property
    def alive(self):
        return self.p is not None and self.p.poll() is None

    @property
    def pid(self):
        return self.p.pid

    def stderr(self):
        return _read_text(self.stderr_path)

    def stdout(self):
        return _read_text(self.stdout_path)

    def output(self):
        return self.stdout() + self.stderr()

    def command_line(self):
        return " ".join(_shell_quote(a) for a in self.argv)

    # control
    def signal(self, sig):
        if self.alive:
            self.signalled = True
            self.p.send_signal(sig)

    def kill(self):
        """SIGKILL and reap (bounded)."""
        if self.p is None:
            return
        if self.p.poll() is None:
            self.signalled = True
            self.p.kill()
            self.killed = True
        self.p.wait(timeout=T(10))

    def wait(self, timeout):
        """Waits for exit; returns the exit code or None on timeout."""
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=None, expect_code=0):
        """SIGTERM, wait bounded, then SIGKILL and fail.

        expect_code: the exact exit code required, None for "anything but a
        crash" (killed by a signal or >= 128), or False for no check."""
        if self.p is None:
            return None
        timeout = timeout or T(15)
        if self.p.poll() is None:
            self.signalled = True
            self.p.send_signal(signal.SIGTERM)
            rc = self.wait(timeout)
            if rc is None:
                self.p.kill()
                self.p.wait(timeout=T(10))
                raise AssertionError(
                    "%s (pid %d) did not exit within %.1fs of SIGTERM; SIGKILLed\n%s"
                    % (self.name, self.p.pid, timeout, self.describe()))
        rc = self.p.returncode
        self.check_exit(rc, expect_code)
        return rc

    def check_exit(self, rc, expect_code):
        if expect_code is False:
            return
        if expect_code is None:
            if self.killed and rc == -signal.SIGKILL:
                return
            if rc < 0 or rc >= 128:
                raise AssertionError("%s crashed or died by a signal: exit code %d\n%s"
                                     % (self.name, rc, self.describe()))
        elif rc != expect_code:
            raise AssertionError("%s exited with %d, expected %d\n%s"
                                 % (self.name, rc, expect_code, self.describe()))

    def sanitizer_report(self):
        """Lines around a sanitizer report in any run's stderr, or None."""
        for err, _ in self.runs:
            text = _read_text(err)
            for marker in SANITIZER_MARKERS:
                i = text.find(marker)
                if i >= 0:
                    return "%s: %s:\n%s" % (self.name, err, text[max(0, i - 500): i + 4000])
        return None

    def describe(self, lines=60):
        out = ["--- %s: %s" % (self.name, self.command_line())]
        if self.p is not None:
            out.append("    pid %d, exit code %r" % (self.p.pid, self.p.poll()))
        for err, stdout in self.runs:
            for label, path in (("stderr", err), ("stdout", stdout)):
                text = _read_text(path)
                if not text.strip():
                    continue
                tail = text.splitlines()[-lines:]
                out.append("    %s (%s), last %d lines:" % (label, path, len(tail)))
                out.extend("      " + line for line in tail)
        return "\n".join(out)


def _read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _shell_quote(s):
    if re.fullmatch(r"[A-Za-z0-9_./:=@,+-]+", s):
        return s
    return "'" + s.replace("'", "'\\''") + "'"


_BIND_FAILURE = re.compile(r"(?i)(in use|EADDRINUSE|errno 98|\(-1 98\)|bind)")


class Server(Proc):
    """`piko server` on 127.0.0.1 with three picked ports."""

    def __init__(self, workdir, args=(), ports=None, env=None, use_bind_flags=True,
                 log_level="debug", bin=None, admin_headers=None, cluster_port=None):
        self.bin = bin or CONFIG.bin
        # Our server always opens its cluster port (default :8003): tests
        # give it a free one so that servers never collide. None for Piko.
        self.cluster_port = cluster_port if cluster_port is not None else (
            free_port() if bin is None else None)
        self.admin_headers = admin_headers  # e.g. a token when admin auth is on
        self.fixed_ports = ports is not None
        self.proxy_port, self.upstream_port, self.admin_port = ports or (
            free_port(), free_port(), free_port())
        self.extra_args = list(args)
        self.use_bind_flags = use_bind_flags
        self.log_level = log_level
        super().__init__("server", workdir, [], env)
        self._build_argv()

    def _build_argv(self):
        argv = [self.bin, "server"]
        if self.use_bind_flags:
            argv += ["--proxy.bind-addr", "127.0.0.1:%d" % self.proxy_port,
                     "--upstream.bind-addr", "127.0.0.1:%d" % self.upstream_port,
                     "--admin.bind-addr", "127.0.0.1:%d" % self.admin_port]
            if self.cluster_port:
                argv += ["--cluster.bind-addr", "127.0.0.1:%d" % self.cluster_port]
        if self.log_level:
            argv += ["--log.level", self.log_level]
        self.argv = argv + self.extra_args

    @property
    def ports(self):
        return (self.proxy_port, self.upstream_port, self.admin_port)

    @property
    def upstream_url(self):
        return "http://127.0.0.1:%d" % self.upstream_port

    def start(self, wait=True, timeout=None):
        attempts = 1 if (self.fixed_ports or not self.use_bind_flags) else 3
        for attempt in range(attempts):
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
                return self
            except StartupError:
                exited = self.poll() is not None
                if (attempt + 1 < attempts and exited
                        and _BIND_FAILURE.search(self.stderr())):
                    # someone else took one of our ports: new ports, retry
                    self.proxy_port, self.upstream_port, self.admin_port = (
                        free_port(), free_port(), free_port())
                    if self.cluster_port:
                        self.cluster_port = free_port()
                    self._build_argv()
                    continue
                raise
        return self

    def wait_ready(self, timeout=None):
        """Polls admin /ready until 200 (bounded)."""
        timeout = timeout or T(10)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.poll() is not None:
                raise StartupError("server exited with %d before it was ready\n%s"
                                   % (self.poll(), self.describe()))
            try:
                r = request(self.admin_port, "GET", "/ready", headers=self.admin_headers,
                            timeout=T(2))
                if r.status == 200:
                    return
                last = r
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.05)
        raise StartupError("server not ready (admin /ready 200) within %.1fs; last: %r\n%s"
                           % (timeout, last, self.describe()))

    def admin(self, path, timeout=None):
        return request(self.admin_port, "GET", path, headers=self.admin_headers,
                       timeout=timeout)

    def proxy(self, endpoint, method, path, **kw):
        return proxy_request(self, endpoint, method, path, **kw)

    def metrics(self):
        r = self.admin("/metrics")
        if r.status != 200:
            raise AssertionError("GET /metrics: %r" % r)
        return r.body.decode("utf-8", "replace")


class Agent(Proc):
    """`piko agent http <endpoint> <addr> --connect.url ...`."""

    def __init__(self, workdir, server, endpoint, addr, args=(), connect_url=None,
                 log_level="debug", bin=None):
        self.server = server
        self.endpoint = endpoint
        self.addr = str(addr)
        self.connect_url = connect_url or server.upstream_url
        argv = [bin or CONFIG.bin, "agent", "http", endpoint, self.addr,
                "--connect.url", self.connect_url]
        if log_level:
            argv += ["--log.level", log_level]
        super().__init__("agent-" + endpoint, workdir, argv + list(args))

    def start(self, wait=True, timeout=None):
        self._spawn()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=None, path="/"):
        """Polls the proxy until a request to our endpoint stops answering
        502 "no available upstreams" (bounded)."""
        timeout = timeout or T(15)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.poll() is not None:
                raise StartupError("agent exited with %d before it registered\n%s\n%s"
                                   % (self.poll(), self.describe(), self.server.describe()))
            try:
                r = proxy_request(self.server, self.endpoint, "GET", path, timeout=T(5))
                if not is_no_upstream(r):
                    return r
                last = r
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.1)
        raise StartupError("agent for %r not routable within %.1fs; last: %r\n%s\n%s"
                           % (self.endpoint, timeout, last, self.describe(),
                              self.server.describe()))


class UpstreamService(Proc):
    """tests/integration/upstream.py in its own process (no GIL sharing)."""

    def __init__(self, workdir):
        super().__init__("upstream", workdir,
                         [sys.executable, "-u", UPSTREAM_PY, "--port", "0"])
        self.port = None

    def start(self, timeout=None):
        self._spawn()
        timeout = timeout or 10
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening on [0-9.]+:(\d+)", self.stdout())
            if m:
                self.port = int(m.group(1))
                return self
            if self.poll() is not None:
                break
            time.sleep(0.02)
        raise StartupError("test upstream did not start\n" + self.describe())

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def get(self, path, headers=None):
        return request(self.port, "GET", path, headers)

    def stats(self):
        return self.get("/stats").json()


# --- test case base -------------------------------------------------------------


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until truthy (bounded); returns its value or raises."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = predicate()
            if v:
                return v
        except (OSError, http.client.HTTPException) as e:
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (
                timeout, what, "" if last_exc is None else " (last error: %r)" % last_exc))
        time.sleep(interval)


class PikoTestCase(unittest.TestCase):
    """Starts processes through self.server()/self.agent()/self.upstream();
    they are stopped in reverse order at the end of the test, sanitizer
    reports fail the test, and logs are dumped when the test failed."""

    def setUp(self):
        if not CONFIG.bin:
            self.fail("no piko binary configured (run.py --bin or PIKO_BIN)")
        self.tmpdir = tempfile.mkdtemp(prefix="piko-itest-")
        self.procs = []
        self.addCleanup(self._cleanup_procs)

    # factories
    def server(self, *args, start=True, **kw):
        s = Server(self.tmpdir, args=args, **kw)
        self.procs.append(s)
        if start:
            s.start()
        return s

    def agent(self, server, endpoint, addr, *args, start=True, wait=True, **kw):
        a = Agent(self.tmpdir, server, endpoint, addr, args=args, **kw)
        self.procs.append(a)
        if start:
            a.start(wait=wait)
        return a

    def upstream(self):
        u = UpstreamService(self.tmpdir)
        self.procs.append(u)
        u.start()
        return u

    def stack(self, endpoint="my-endpoint", server_args=()):
        """upstream service + server + agent(endpoint → upstream)."""
        up = self.upstream()
        srv = self.server(*server_args)
        ag = self.agent(srv, endpoint, up.addr)
        return up, srv, ag

    def http_service(self, respond, tls_context=None):
        """An in-process HTTP/1.1 service on 127.0.0.1 (stopped at cleanup):
        respond(path) returns (content type, body bytes) for every GET. With
        tls_context (an ssl.SSLContext) it speaks HTTPS. Returns its port."""
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                ctype, body = respond(self.path)
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls_context:
            httpd.socket = tls_context.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        return httpd.server_address[1]

    def write_file(self, name, text):
        path = os.path.join(self.tmpdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def logs(self):
        return "\n".join(p.describe() for p in self.procs)

    def _test_failed(self):
        # (outcome.success is reset while cleanups run: look at the result)
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return True
        for t, _ in list(getattr(result, "failures", [])) + list(getattr(result, "errors", [])):
            if t is self or getattr(t, "test_case", None) is self:
                return True
        return False

    def _cleanup_procs(self):
        problems = []
        for p in reversed(self.procs):
            if p.p is None:
                continue
            rc = p.poll()
            if (rc is not None and not p.signalled and not isinstance(p, UpstreamService)
                    and rc in (0, -signal.SIGTERM, -signal.SIGINT)):
                problems.append(
                    "%s exited (code %d) during the test although the test never signalled "
                    "it: an external SIGTERM/SIGINT (e.g. a `pkill piko` elsewhere on this "
                    "machine) or a spontaneous exit\n%s" % (p.name, rc, p.describe(20)))
            try:
                if isinstance(p, UpstreamService):
                    p.kill()
                else:
                    p.stop(expect_code=None)
            except AssertionError as e:
                problems.append(str(e))
            except Exception as e:  # noqa: BLE001 - report, keep cleaning up
                problems.append("%s: stop failed: %r" % (p.name, e))
            if not isinstance(p, UpstreamService):
                report = p.sanitizer_report()
                if report:
                    problems.append("sanitizer report:\n" + report)
        failed = self._test_failed() or problems
        if failed:
            sys.stderr.write("\n===== logs of %s =====\n%s\n===== end of logs (%s) =====\n"
                             % (self.id(), self.logs(), self.tmpdir))
        if not (failed and CONFIG.keep_logs):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if problems:
            raise AssertionError("\n\n".join(problems))

    # assertions
    def assertJsonError(self, resp, status, message):
        self.assertEqual(resp.status, status, resp)
        ctype = resp.header("Content-Type", "")
        self.assertTrue(ctype.startswith("application/json"),
                        "Content-Type %r is not application/json (%r)" % (ctype, resp))
        try:
            doc = resp.json()
        except ValueError:
            self.fail("error body is not JSON: %r" % resp)
        self.assertEqual(doc, {"error": message}, resp)
