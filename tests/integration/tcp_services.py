#!/usr/bin/env python3
"""TCP helpers for the Piko integration tests (agent tcp, forward, raw pipes).

Two kinds of test services:

* a TCP service in its own process (no GIL sharing with the test client), run
  as `python3 tcp_services.py --port 0`; it prints `listening on HOST:PORT`
  and serves one thread per connection. The first line a client sends picks
  the mode:
    ECHO <tag>\\n            echoes every following byte; on EOF it finishes,
                            shuts down writing, and prints
                            `echo <tag> bytes=<n> sha256=<hex>` (what it got
                            and sent back) on stdout
    SOURCE <n> <seed>\\n     sends pattern_chunks(seed, n) (n < 0: forever,
                            until the peer goes away), then closes
* ThreadedService: an in-process listener running a handler per connection
  (for half-close / reset scenarios that need to observe the service side).

Plus process wrappers (TcpAgent, Forward, ConfigProc), /metrics and /proc
helpers, and TcpTestCase with factories for all of them.
"""

import argparse
import hashlib
import json
import os
import queue
import random
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# --- deterministic pattern data -------------------------------------------------

POOL_SIZE = (4 << 20) + 13  # odd size: chunk boundaries never line up
_pool_cache = {}
_pool_lock = threading.Lock()


def pattern_pool(seed):
    with _pool_lock:
        pool = _pool_cache.get(seed)
        if pool is None:
            if len(_pool_cache) > 8:
                _pool_cache.clear()
            pool = random.Random(seed).randbytes(POOL_SIZE)
            _pool_cache[seed] = pool
        return pool


def pattern_chunks(seed, total, max_chunk=1 << 20):
    """Deterministic pseudo-random bytes as memoryview chunks of random sizes
    taken at random offsets of a random pool (total None or < 0: endless)."""
    pool = memoryview(pattern_pool(seed))
    rng = random.Random(seed * 7919 + 1)
    left = None if (total is None or total < 0) else total
    while left is None or left > 0:
        n = rng.randint(1, max_chunk)
        off = rng.randrange(0, POOL_SIZE - n + 1)
        if left is not None:
            n = min(n, left)  # after the offset: a prefix of the endless stream's chunk
        yield pool[off: off + n]
        if left is not None:
            left -= n


def pattern_digest(seed, total):
    h = hashlib.sha256()
    for c in pattern_chunks(seed, total):
        h.update(c)
    return h.hexdigest()


def pattern_bytes(seed, total):
    return b"".join(bytes(c) for c in pattern_chunks(seed, total))


# --- the service process ----------------------------------------------------------

_print_lock = threading.Lock()


def _say(line):
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _read_line(conn, limit=1024):
    buf = b""
    while b"\n" not in buf:
        d = conn.recv(limit)
        if not d:
            return None, buf
        buf += d
        if len(buf) > limit:
            raise ValueError("header line too long")
    line, rest = buf.split(b"\n", 1)
    return line.decode("ascii", "replace").split(), rest


def _serve_conn(conn):
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        words, rest = _read_line(conn)
        if not words:
            _say("bad connection: no header line (got %r)" % rest[:80])
            return
        if words[0] == "ECHO":
            tag = words[1] if len(words) > 1 else "-"
            h = hashlib.sha256()
            n = 0
            if rest:
                conn.sendall(rest)
                h.update(rest)
                n += len(rest)
            buf = bytearray(1 << 20)
            mv = memoryview(buf)
            while True:
                k = conn.recv_into(mv)
                if not k:
                    break
                conn.sendall(mv[:k])
                h.update(mv[:k])
                n += k
            conn.shutdown(socket.SHUT_WR)
            _say("echo %s bytes=%d sha256=%s" % (tag, n, h.hexdigest()))
        elif words[0] == "SOURCE":
            total, seed = int(words[1]), int(words[2])
            sent = 0
            try:
                for c in pattern_chunks(seed, total):
                    conn.sendall(c)
                    sent += len(c)
            except OSError as e:
                _say("source %d aborted sent=%d: %r" % (seed, sent, e))
                return
            conn.shutdown(socket.SHUT_WR)
            _say("source %d done sent=%d" % (seed, sent))
        else:
            _say("bad connection: unknown mode %r" % words)
    except OSError as e:
        _say("connection error: %r" % e)
    finally:
        conn.close()


def service_main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    threading.stack_size(512 * 1024)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(4096)
    print("listening on %s:%d" % ls.getsockname(), flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=_serve_conn, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    service_main()


# --- everything below is for the tests (imports the harness) --------------------


from harness import (CONFIG, PikoTestCase, Proc, StartupError, T, UpstreamService,  # noqa: E402
                     free_port, wait_for)

THIS_PY = os.path.abspath(__file__)


class TcpServiceProc(UpstreamService):
    """This file's service in its own process (killed, not stopped, at the
    end: it is a UpstreamService for the harness's cleanup)."""

    def __init__(self, workdir):
        super().__init__(workdir)
        self.name = "tcp-service"
        self.argv = [sys.executable, "-u", THIS_PY, "--port", "0"]

    def wait_line(self, regex, timeout):
        rx = re.compile(regex, re.M)
        return wait_for(lambda: rx.search(self.stdout()), timeout,
                        what="tcp service line /%s/" % regex)


def log_lines(proc):
    """The JSON log lines of a process (other lines skipped)."""
    out = []
    for line in proc.output().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def find_logs(proc, msg, **fields):
    return [d for d in log_lines(proc)
            if d.get("msg") == msg and all(d.get(k) == v for k, v in fields.items())]


class TcpAgent(Proc):
    """`piko agent tcp <endpoint> <addr>`; ready once the agent logged
    `connected` and the server `upstream connected` for the endpoint."""

    def __init__(self, workdir, server, endpoint, addr, args=(), log_level="debug", bin=None):
        self.server = server
        self.endpoint = endpoint
        argv = [bin or CONFIG.bin, "agent", "tcp", endpoint, str(addr),
                "--connect.url", server.upstream_url]
        if log_level:
            argv += ["--log.level", log_level]
        super().__init__("agent-tcp-" + endpoint, workdir, argv + list(args))

    def start(self, wait=True, timeout=None):
        self._spawn()
        if wait:
            wait_registered(self, self.server, [self.endpoint], timeout)
        return self


def wait_registered(agent, server, endpoints, timeout=None):
    timeout = timeout or T(15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise StartupError("%s exited with %d before it registered\n%s"
                               % (agent.name, agent.poll(), agent.describe()))
        if all(find_logs(agent, "connected", **{"endpoint-id": e}) and
               find_logs(server, "upstream connected", **{"endpoint-id": e})
               for e in endpoints):
            return
        time.sleep(0.05)
    raise StartupError("%s: endpoints %r not registered within %.1fs\n%s\n%s"
                       % (agent.name, endpoints, timeout, agent.describe(), server.describe()))


_LISTEN_FAILED = re.compile(r"failed to listen|in use|EADDRINUSE")


class Forward(Proc):
    """`piko forward tcp 127.0.0.1:<port> <endpoint>` against a server's proxy
    port; ready once it logged `forwarding` (logged after the bind)."""

    def __init__(self, workdir, server, endpoint, args=(), connect_url=None,
                 log_level="debug", bin=None):
        self.bin = bin or CONFIG.bin
        self.server = server
        self.endpoint = endpoint
        self.connect_url = connect_url or "http://127.0.0.1:%d" % server.proxy_port
        self.log_level = log_level
        self.extra = list(args)
        self.port = free_port()
        super().__init__("forward-" + endpoint, workdir, [])
        self._argv()

    def _argv(self):
        self.argv = [self.bin, "forward", "tcp", "127.0.0.1:%d" % self.port, self.endpoint,
                     "--connect.url", self.connect_url]
        if self.log_level:
            self.argv += ["--log.level", self.log_level]
        self.argv += self.extra

    def start(self, timeout=None):
        for attempt in range(3):
            self._spawn()
            try:
                wait_forwarding(self, 1, timeout)
                return self
            except StartupError:
                if attempt < 2 and self.poll() is not None and _LISTEN_FAILED.search(
                        self.output()):
                    self.port = free_port()
                    self._argv()
                    continue
                raise
        return self

    def connect(self, timeout=None):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout or T(30))


def wait_forwarding(proc, count, timeout=None):
    timeout = timeout or T(10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartupError("%s exited with %d before listening\n%s"
                               % (proc.name, proc.poll(), proc.describe()))
        if len(find_logs(proc, "forwarding")) >= count:
            return
        time.sleep(0.05)
    raise StartupError("%s not listening within %.1fs\n%s" % (proc.name, timeout,
                                                                proc.describe()))


class ConfigProc(Proc):
    """`piko agent start` / `piko forward start` with --config.path."""

    def __init__(self, workdir, name, argv):
        super().__init__(name, workdir, argv)

    def start(self):
        self._spawn()
        return self


# --- /metrics and /proc --------------------------------------------------------------


def metric(server, name):
    m = re.search(r"^%s(?:\{[^}]*\})? ([0-9.eE+-]+)$" % re.escape(name), server.metrics(),
                  re.M)
    if not m:
        raise AssertionError("metric %s not in /metrics" % name)
    return float(m.group(1))


def open_streams(server):
    return metric(server, "piko_upstreams_open_streams")


def proc_status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


class RssSampler:
    """Samples VmRSS and VmHWM of some processes every 100 ms (peak VmHWM is
    the kernel's own high-water mark; VmRSS samples catch it too)."""

    def __init__(self, procs):
        self.procs = list(procs)
        self.peak_rss = {p.name: 0 for p in self.procs}
        self.hwm = {p.name: 0 for p in self.procs}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        for p in self.procs:
            try:
                self.peak_rss[p.name] = max(self.peak_rss[p.name],
                                            proc_status_kib(p.pid, "VmRSS"))
                self.hwm[p.name] = max(self.hwm[p.name], proc_status_kib(p.pid, "VmHWM"))
            except (OSError, AssertionError):
                pass

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)
        self._sample()

    def peak_mib(self, proc):
        return max(self.peak_rss[proc.name], self.hwm[proc.name]) / 1024.0


# --- in-process service ------------------------------------------------------------------


class ThreadedService:
    """Listens on 127.0.0.1:<free>; runs handler(conn) in a thread per
    connection; each handler's return value (or exception) goes to results."""

    def __init__(self, handler):
        self.handler = handler
        self.results = queue.Queue()
        self.accepted = 0
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1024)
        self.port = self.ls.getsockname()[1]
        self.closed = False
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while True:
            try:
                conn, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        conn.settimeout(T(30))
        try:
            self.results.put(("ok", self.handler(conn)))
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.results.put(("error", e))
        finally:
            conn.close()

    def result(self, timeout):
        try:
            kind, v = self.results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the service handler did not finish within %.1fs" % timeout)
        if kind == "error":
            raise AssertionError("service handler failed: %r" % (v,))
        return v

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.ls.close()


def recv_all(sock, limit=None):
    """Reads until EOF; returns bytes (raises socket.timeout on a hang)."""
    out = bytearray()
    while True:
        try:
            d = sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError("no EOF: %d bytes received, then nothing for %.1fs"
                                 % (len(out), sock.gettimeout()))
        if not d:
            return bytes(out)
        out += d
        if limit is not None and len(out) > limit:
            raise AssertionError("more than %d bytes received" % limit)


def echo_transfer(sock, total, seed, timeout):
    """Sends `total` pattern bytes (a thread) while reading the echo back
    until EOF (this thread). Returns (sent sha256, received sha256, received
    byte count, seconds). sock has a per-operation timeout."""
    sent = {"h": None, "n": 0, "err": None}

    def sender():
        h = hashlib.sha256()
        try:
            for c in pattern_chunks(seed, total):
                sock.sendall(c)
                h.update(c)
                sent["n"] += len(c)
            sock.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa: BLE001 - reported below
            sent["err"] = e
        sent["h"] = h.hexdigest()

    t0 = time.monotonic()
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    h = hashlib.sha256()
    n = 0
    buf = bytearray((1 << 20))
    mv = memoryview(buf)
    deadline = t0 + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError("transfer not done after %.0fs (%d bytes back, %d sent)"
                                     % (timeout, n, sent["n"]))
            k = sock.recv_into(mv)
            if not k:
                break
            h.update(mv[:k])
            n += k
    except socket.timeout:
        raise AssertionError("transfer stalled: no byte for %.0fs (%d bytes back, %d sent)"
                             % (sock.gettimeout(), n, sent["n"]))
    dt = time.monotonic() - t0
    t.join(max(1.0, deadline - time.monotonic()))
    if t.is_alive():
        raise AssertionError("sender still blocked after EOF (%d sent)" % sent["n"])
    if sent["err"] is not None:
        raise AssertionError("send failed after %d bytes: %r" % (sent["n"], sent["err"]))
    return sent["h"], h.hexdigest(), n, dt


def forward_dial_error(fwd, timeout):
    """Opens one connection to a forward whose dial must fail; returns the
    error of its `failed to dial endpoint` log record."""
    try:
        c = fwd.connect(timeout)
    except (ConnectionResetError, BrokenPipeError):
        # The forward dialled, failed and reset us before connect() looked
        # at the socket's state (seen on a loaded machine): same outcome.
        c = None
    if c is not None:
        try:
            c.recv(10)
        except ConnectionResetError:
            pass  # closed with nothing read: a reset is as good as a FIN here
        c.close()
    logs = wait_for(lambda: find_logs(fwd, "failed to dial endpoint"), timeout,
                    what="%s's dial error" % fwd.name)
    return logs[0].get("error")


def echo_through(port, payload, timeout):
    """One connection to a forwarder on port, whose endpoint's TCP service
    echoes: sends payload, returns what comes back (up to len(payload))."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        c.sendall(b"ECHO t\n" + payload)
        got = b""
        while len(got) < len(payload):
            d = c.recv(len(payload) - len(got))
            if not d:
                break
            got += d
        return got
    finally:
        c.close()


def recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        d = sock.recv(n - len(out))
        if not d:
            raise AssertionError("EOF after %d of %d bytes" % (len(out), n))
        out += d
    return bytes(out)


def wait_closed(sock, timeout):
    """Reads (and discards) until the peer closes or resets; returns
    (how, seconds) with how in ("eof", "reset"); fails on timeout."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                return "eof", time.monotonic() - t0
    except (ConnectionResetError, BrokenPipeError):
        return "reset", time.monotonic() - t0
    except socket.timeout:
        raise AssertionError("connection still open %.1fs later (no EOF, no reset)" % timeout)


def set_linger0(sock):
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --- test case base -------------------------------------------------------------------------


class TcpTestCase(PikoTestCase):
    def tcp_service(self):
        s = TcpServiceProc(self.tmpdir)
        self.procs.append(s)
        s.start()
        return s

    def threaded_service(self, handler):
        s = ThreadedService(handler)
        self.addCleanup(s.close)
        return s

    def tcp_agent(self, server, endpoint, addr, *args, start=True, wait=True, **kw):
        a = TcpAgent(self.tmpdir, server, endpoint, addr, args=args, **kw)
        self.procs.append(a)
        if start:
            a.start(wait=wait)
        return a

    def forward(self, server, endpoint, *args, **kw):
        f = Forward(self.tmpdir, server, endpoint, args=args, **kw)
        self.procs.append(f)
        f.start()
        return f

    def config_proc(self, name, argv):
        p = ConfigProc(self.tmpdir, name, argv)
        self.procs.append(p)
        return p.start()

    def tcp_stack(self, endpoint="tcp-endpoint", server_args=()):
        """tcp service process + server + agent tcp + forward."""
        svc = self.tcp_service()
        srv = self.server(*server_args)
        ag = self.tcp_agent(srv, endpoint, svc.addr)
        fwd = self.forward(srv, endpoint)
        return svc, srv, ag, fwd

    def wait_open_streams(self, server, value=0, timeout=None):
        last = []

        def check():
            v = open_streams(server)
            last[:] = [v]
            return v == value

        try:
            wait_for(check, timeout or T(10), interval=0.1,
                     what="piko_upstreams_open_streams == %d" % value)
        except AssertionError as e:
            self.fail("%s; last value %r" % (e, last))

    def echo_connect(self, fwd, tag, timeout=None):
        s = fwd.connect(timeout)
        s.sendall(b"ECHO %s\n" % tag.encode())
        return s
