#!/usr/bin/env python3
"""A real HTTP/1.1 test upstream service for the Piko integration tests.

Run standalone:  python3 tests/integration/upstream.py [--bind 127.0.0.1] [--port 0]
It prints one line `listening on HOST:PORT` on stdout once it accepts
connections, then serves until killed.

Routes (every response carries `X-Test: 1`; a query `set-header=Name:Value`
adds response headers to any route):
  /                      200 "ok\n"
  /echo[/anything][?q]   echoes the request body (Content-Length or chunked
                         request bodies, spooled to disk above 1 MiB) with
                         X-Echo-Method, X-Echo-Path (raw path+query),
                         X-Echo-Body-Length, X-Echo-Body-Sha256,
                         X-Echo-Chunked (yes|no), X-Echo-Headers (JSON list
                         of [name, value] pairs as received)
  /headers[?q]           JSON {method, path, headers: [[name, value], ...]}
  /status/<code>         that status; JSON body {"status": code} (no body for
                         1xx/204/304)
  /slow?ms=N             sleeps N ms then 200 "slow done\n"
  /chunked-slow?n=5&ms=300
                         chunked response, one chunk every ms:
                         "chunk <i> sent=<unix time>\n" (chunk 0 immediately)
  /big?bytes=N           N deterministic bytes (see big_payload())
  /stats                 JSON {inflight, requests, by_route: {route: count}}
                         (not counted itself)
  /switch?proto=P        a bare 101 with Upgrade: P (default bogus), whatever
                         the request asked for
  /reject/<code>/...     <code> with JSON {"error": <msg>} where msg is the
                         query `msg` or "invalid token" for 401, else
                         "rejected by test upstream" (used as a fake Piko
                         upstream port that refuses agents)
  anything else          404 "not found\n"
"""

import argparse
import hashlib
import http.client
import http.server
import json
import socket
import sys
import tempfile
import threading
import time
import urllib.parse

READ_PIECE = 64 * 1024
# http.server refuses more than 100 request headers (http.client's limit);
# the proxy takes up to 256 from a client, and tests send that many.
http.client._MAXHEADERS = 1000
BIG_PATTERN = bytes((i * 7 + 13) % 251 for i in range(251 * 64))


def big_payload(n):
    """The exact bytes /big?bytes=n returns (for direct comparisons)."""
    out = bytearray()
    while len(out) < n:
        out += BIG_PATTERN[: n - len(out)]
    return bytes(out)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.inflight = 0
        self.requests = 0
        self.by_route = {}

    def enter(self, route):
        with self.lock:
            self.inflight += 1
            self.requests += 1
            self.by_route[route] = self.by_route.get(route, 0) + 1

    def leave(self):
        with self.lock:
            self.inflight -= 1

    def snapshot(self):
        with self.lock:
            return {
                "inflight": self.inflight,
                "requests": self.requests,
                "by_route": dict(self.by_route),
            }


class BadRequest(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "piko-itest-upstream/1"
    timeout = 120  # idle keep-alive connections are dropped after this

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # keep the test output quiet
        if self.server.verbose:
            sys.stderr.write("upstream: " + (fmt % args) + "\n")

    # --- request body -----------------------------------------------------

    def _is_chunked(self):
        te = ",".join(self.headers.get_all("Transfer-Encoding") or [])
        return "chunked" in te.lower()

    def _body_pieces(self):
        """Yields the request body in pieces (chunked or Content-Length)."""
        if self._is_chunked():
            while True:
                line = self.rfile.readline(65537)
                if not line.endswith(b"\n"):
                    raise BadRequest("bad chunk size line")
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise BadRequest("bad chunk size %r" % size_s)
                if size == 0:
                    # trailers up to the empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return
                left = size
                while left > 0:
                    data = self.rfile.read(min(left, READ_PIECE))
                    if not data:
                        raise BadRequest("truncated chunk")
                    left -= len(data)
                    yield data
                crlf = self.rfile.readline(3)
                if crlf not in (b"\r\n", b"\n"):
                    raise BadRequest("missing CRLF after chunk")
        else:
            cl = self.headers.get("Content-Length")
            if not cl:
                return
            try:
                left = int(cl)
            except ValueError:
                raise BadRequest("bad Content-Length")
            while left > 0:
                data = self.rfile.read(min(left, READ_PIECE))
                if not data:
                    raise BadRequest("truncated body")
                left -= len(data)
                yield data

    def _drain_body(self):
        for _ in self._body_pieces():
            pass

    # --- response helpers ---------------------------------------------------

    def _extra_headers(self):
        self.send_header("X-Test", "1")
        for hv in self.query.get("set-header", []):
            if ":" in hv:
                name, value = hv.split(":", 1)
                self.send_header(name.strip(), value.strip())

    def _send_simple(self, status, body, ctype="text/plain; charset=utf-8", extra=None):
        if isinstance(body, str):
            body = body.encode()
        no_body = status < 200 or status in (204, 304)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self._extra_headers()
        for k, v in (extra or []):
            self.send_header(k, v)
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)

    # --- dispatch -------------------------------------------------------------

    def _route(self):
        p = self.parsed.path
        if p == "/stats":
            return "stats"
        for prefix in ("/echo", "/headers", "/status", "/slow", "/chunked-slow", "/big", "/reject",
                       "/switch"):
            if p == prefix or p.startswith(prefix + "/"):
                return prefix[1:]
        if p == "/":
            return "root"
        return "notfound"

    def _handle(self):
        self.parsed = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(self.parsed.query, keep_blank_values=True)
        route = self._route()
        if route == "stats":
            self._drain_body()
            return self._send_simple(
                200, json.dumps(self.server.stats.snapshot()), "application/json"
            )
        self.server.stats.enter(route)
        try:
            getattr(self, "_r_" + route.replace("-", "_"))()
        except BadRequest as e:
            self.close_connection = True
            self._send_simple(400, "bad request: %s\n" % e)
        finally:
            self.server.stats.leave()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def _q_int(self, name, default):
        try:
            return int(self.query.get(name, [default])[0])
        except ValueError:
            return default

    # --- routes ---------------------------------------------------------------

    def _r_root(self):
        self._drain_body()
        self._send_simple(200, "ok\n")

    def _r_notfound(self):
        self._drain_body()
        self._send_simple(404, "not found\n")

    def _r_echo(self):
        chunked = self._is_chunked()
        h = hashlib.sha256()
        n = 0
        with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
            for piece in self._body_pieces():
                h.update(piece)
                n += len(piece)
                spool.write(piece)
            spool.seek(0)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self._extra_headers()
            self.send_header("X-Echo-Method", self.command)
            self.send_header("X-Echo-Path", self.path)
            self.send_header("X-Echo-Body-Length", str(n))
            self.send_header("X-Echo-Body-Sha256", h.hexdigest())
            self.send_header("X-Echo-Chunked", "yes" if chunked else "no")
            self.send_header("X-Echo-Headers", json.dumps(list(self.headers.items())))
            self.send_header("Content-Length", str(n))
            self.end_headers()
            if self.command != "HEAD":
                while True:
                    data = spool.read(READ_PIECE)
                    if not data:
                        break
                    self.wfile.write(data)

    def _r_headers(self):
        self._drain_body()
        body = json.dumps(
            {"method": self.command, "path": self.path, "headers": list(self.headers.items())}
        )
        self._send_simple(200, body, "application/json")

    def _r_status(self):
        self._drain_body()
        try:
            code = int(self.parsed.path.split("/")[2])
        except (IndexError, ValueError):
            code = 400
        if not 100 <= code <= 599 or code == 101:
            code = 400
        self._send_simple(code, json.dumps({"status": code}), "application/json")

    def _r_slow(self):
        self._drain_body()
        time.sleep(self._q_int("ms", 1000) / 1000.0)
        self._send_simple(200, "slow done\n")

    def _r_chunked_slow(self):
        self._drain_body()
        n = self._q_int("n", 5)
        ms = self._q_int("ms", 300)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self._extra_headers()
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for i in range(n):
            if i:
                time.sleep(ms / 1000.0)
            data = ("chunk %d sent=%.6f\n" % (i, time.time())).encode()
            # one write per chunk (size line + data + CRLF), unbuffered wfile
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")

    def _r_big(self):
        self._drain_body()
        n = self._q_int("bytes", 1024)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self._extra_headers()
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        left = n
        while left > 0:
            piece = min(left, len(BIG_PATTERN))
            self.wfile.write(BIG_PATTERN[:piece])
            left -= piece

    def _r_switch(self):
        # A misbehaving service: 101 whatever was asked (Upgrade token from
        # the query, default "bogus"), then closes.
        self._drain_body()
        proto = self.query.get("proto", ["bogus"])[0]
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\n"
                          "Connection: Upgrade\r\n\r\n" % proto).encode())
        self.close_connection = True

    def _r_reject(self):
        self._drain_body()
        try:
            code = int(self.parsed.path.split("/")[2])
        except (IndexError, ValueError):
            code = 400
        default = "invalid token" if code == 401 else "rejected by test upstream"
        msg = self.query.get("msg", [default])[0]
        self.close_connection = True
        self._send_simple(code, json.dumps({"error": msg}, separators=(",", ":")), "application/json")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, addr, verbose=False):
        self.stats = Stats()
        self.verbose = verbose
        super().__init__(addr, Handler)



def start_in_thread(host="127.0.0.1", port=0, verbose=False):
    """Starts the service in a daemon thread of this process; returns the server."""
    srv = Server((host, port), verbose=verbose)
    t = threading.Thread(target=srv.serve_forever, name="upstream", daemon=True)
    t.start()
    return srv


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    srv = Server((args.bind, args.port), verbose=args.verbose)
    host, port = srv.server_address[:2]
    print("listening on %s:%d" % (host, port), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
