#!/usr/bin/env python3
"""The soak's local services (stdlib only), each in its own process.

  services.py http    a threaded HTTP/1.1 service (keep-alive):
                        POST /echo          the request body back, with X-Sha256
                        GET  /data?n=N&seed=S
                                            data(N, S): deterministic bytes
                        GET  /ws            a WebSocket echo (RFC 6455): every
                                            message back as it came (text or
                                            binary), ping answered, close echoed
                        anything else       404
  services.py echo    a threaded TCP echo: every byte back; on EOF it
                      half-closes and closes

Each prints `listening on 127.0.0.1:PORT` once it accepts connections.
data() and the WebSocket helpers are imported by soak.py.
"""

import base64
import hashlib
import http.server
import os
import socket
import struct
import sys
import threading
import urllib.parse

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
MAX_BODY = 16 << 20


def data(n, seed):
    """n deterministic bytes for seed (sha256 counter blocks)."""
    out = bytearray()
    i = 0
    s = str(seed).encode()
    while len(out) < n:
        out += hashlib.sha256(s + b":" + str(i).encode()).digest()
        i += 1
    return bytes(out[:n])


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode().strip() + GUID).digest()).decode()


def _xor(payload, key):
    n = len(payload)
    if n == 0:
        return b""
    m = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(m, "little")).to_bytes(n, "little")


def encode_frame(op, payload, mask):
    payload = bytes(payload)
    b0 = 0x80 | op
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = os.urandom(4)
        return hdr + key + _xor(payload, key)
    return hdr + payload


class FrameReader:
    """Frames from a byte source: read(n) returns up to n bytes, b"" at EOF."""

    def __init__(self, read, buf=b""):
        self.read = read
        self.buf = bytearray(buf)

    def _need(self, n):
        while len(self.buf) < n:
            d = self.read(65536)
            if not d:
                raise EOFError("connection closed inside a frame")
            self.buf += d

    def _take(self, n):
        self._need(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def frame(self):
        """(fin, opcode, masked, payload)."""
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        if n > MAX_BODY:
            raise ValueError("frame too large: %d" % n)
        masked = bool(b1 & 0x80)
        key = self._take(4) if masked else None
        payload = self._take(n)
        if masked:
            payload = _xor(payload, key)
        return bool(b0 & 0x80), b0 & 0x0F, masked, payload

    def message(self):
        """(opcode, payload, masked) of the next message; control frames
        are returned as they come."""
        fin, op, masked, payload = self.frame()
        if op >= 8 or fin:
            return op, payload, masked
        parts = [payload]
        while True:
            fin, cop, m2, p = self.frame()
            if cop >= 8:
                raise ValueError("control frame inside a fragmented message (not used here)")
            if cop != OP_CONT:
                raise ValueError("expected a continuation frame, got opcode %d" % cop)
            parts.append(p)
            masked = masked and m2
            if fin:
                return op, b"".join(parts), masked


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "piko-soak/1"
    timeout = 600

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            self._send(413, b"too large\n")
            self.close_connection = True
            return
        body = self.rfile.read(n) if n else b""
        if self.path.split("?")[0] != "/echo":
            self._send(404, b"not found\n")
            return
        self._send(200, body, [("Content-Type", "application/octet-stream"),
                               ("X-Sha256", hashlib.sha256(body).hexdigest())])

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/data":
            q = urllib.parse.parse_qs(u.query)
            n = min(int(q.get("n", ["0"])[0]), MAX_BODY)
            self._send(200, data(n, q.get("seed", ["0"])[0]),
                       [("Content-Type", "application/octet-stream")])
        elif u.path == "/ws":
            self._websocket()
        else:
            self._send(404, b"not found\n")

    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key")
        if (self.headers.get("Upgrade") or "").lower() != "websocket" or not key:
            self._send(400, b"not a websocket upgrade\n")
            return
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(key))
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        sock = self.connection
        rd = FrameReader(self.rfile.read1)
        try:
            while True:
                op, payload, masked = rd.message()
                if not masked:
                    sock.sendall(encode_frame(OP_CLOSE, struct.pack("!H", 1002), False))
                    return
                if op == OP_CLOSE:
                    sock.sendall(encode_frame(OP_CLOSE, payload[:2], False))
                    return
                if op == OP_PING:
                    sock.sendall(encode_frame(OP_PONG, payload, False))
                elif op in (OP_TEXT, OP_BINARY):
                    sock.sendall(encode_frame(op, payload, False))
        except (EOFError, OSError, ValueError):
            return


def serve_http():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.request_queue_size = 1024
    print("listening on 127.0.0.1:%d" % httpd.server_address[1], flush=True)
    httpd.serve_forever()


def _echo(conn):
    try:
        while True:
            d = conn.recv(262144)
            if not d:
                break
            conn.sendall(d)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


def serve_echo():
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1024)
    print("listening on 127.0.0.1:%d" % ls.getsockname()[1], flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    threading.stack_size(512 * 1024)
    {"http": serve_http, "echo": serve_echo}[sys.argv[1]]()
