"""A minimal RFC 6455 WebSocket codec (stdlib only) for the integration tests:
client handshake, frame encode/decode, and an in-process echo service."""

import base64
import hashlib
import os
import socket
import struct
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def accept_key(key):
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest()).decode()


def mask_bytes(data, key):
    n = len(data)
    if n == 0:
        return b""
    m = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(m, "little")).to_bytes(n, "little")


def encode_frame(opcode, payload, mask=True, fin=True):
    payload = bytes(payload)
    b0 = (0x80 if fin else 0) | opcode
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
        return hdr + key + mask_bytes(payload, key)
    return hdr + payload


class WsClosed(Exception):
    pass


class WsConn:
    """One side of a WebSocket over a connected socket (client=True masks)."""

    def __init__(self, sock, buf=b"", client=True):
        self.sock = sock
        self.buf = bytearray(buf)
        self.client = client
        self.send_lock = threading.Lock()
        self.unmasked_from_client = 0  # server side: protocol violations seen
        self.masked_from_server = 0    # client side: protocol violations seen

    def _read_exact(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(max(65536, n - len(self.buf)))
            if not d:
                raise WsClosed("EOF after %d of %d buffered bytes" % (len(self.buf), n))
            self.buf += d
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv_frame(self):
        b0, b1 = self._read_exact(2)
        fin, opcode = bool(b0 & 0x80), b0 & 0x0F
        masked, n = bool(b1 & 0x80), b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read_exact(8))[0]
        key = self._read_exact(4) if masked else None
        payload = self._read_exact(n)
        if masked:
            payload = mask_bytes(payload, key)
        if self.client and masked:
            self.masked_from_server += 1
        if not self.client and not masked:
            self.unmasked_from_client += 1
        return fin, opcode, payload

    def recv_message(self):
        """(opcode, payload) of the next data message, or (OP_CLOSE, payload).
        Pings are answered; pongs skipped; fragments joined."""
        parts = []
        first_op = None
        while True:
            fin, op, payload = self.recv_frame()
            if op == OP_PING:
                self.send(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                return OP_CLOSE, payload
            if first_op is None:
                first_op = op
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    def send(self, opcode, payload, fin=True):
        data = encode_frame(opcode, payload, mask=self.client, fin=fin)
        with self.send_lock:
            self.sock.sendall(data)

    def send_close(self, code=1000, reason=b""):
        self.send(OP_CLOSE, struct.pack("!H", code) + reason)


def read_http_head(sock, limit=65536):
    """Reads up to the end of an HTTP head; returns (first line, headers as a
    list of (name, value), leftover bytes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(4096)
        if not d:
            raise WsClosed("EOF in the HTTP head (got %r)" % buf[:200])
        buf += d
        if len(buf) > limit:
            raise ValueError("HTTP head too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return lines[0], headers, rest


def hget(headers, name, default=None):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return default


class Handshake:
    def __init__(self, status, headers, rest, key):
        self.status = status
        self.headers = headers
        self.rest = rest
        self.key = key

    def header(self, name, default=None):
        return hget(self.headers, name, default)


def client_handshake(sock, path, host, extra_headers=()):
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET %s HTTP/1.1" % path, "Host: %s" % host, "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: %s" % key,
             "Sec-WebSocket-Version: 13"]
    lines += ["%s: %s" % kv for kv in extra_headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    first, headers, rest = read_http_head(sock)
    parts = first.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
    return Handshake(status, headers, rest, key)


def read_body(sock, headers, rest, timeout=10):
    """The body of a non-101 response (Content-Length or until EOF)."""
    cl = hget(headers, "Content-Length")
    body = bytearray(rest)
    sock.settimeout(timeout)
    if cl is not None:
        while len(body) < int(cl):
            d = sock.recv(65536)
            if not d:
                break
            body += d
        return bytes(body[: int(cl)])
    while True:
        d = sock.recv(65536)
        if not d:
            return bytes(body)
        body += d


class WsEchoService:
    """In-process HTTP/WebSocket service: an upgrade request gets a 101 and
    every data message is echoed back (same opcode, unfragmented); a close is
    answered with a close. Plain requests: /slow sleeps 3 s then 200; anything
    else 200 "ok\\n". Records every request (method, path, headers) and any
    unmasked client frame."""

    def __init__(self, slow_seconds=3.0):
        self.slow_seconds = slow_seconds
        self.requests = []
        self.errors = []
        self.unmasked = 0
        self.echoed = 0
        self.lock = threading.Lock()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def close(self):
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ls.close()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(120)
            first, headers, rest = read_http_head(c)
            method, path = (first.split(" ") + ["", ""])[:2]
            with self.lock:
                self.requests.append((method, path, headers))
            if (hget(headers, "Upgrade", "").lower() == "websocket"
                    and hget(headers, "Sec-WebSocket-Key")):
                resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                        % accept_key(hget(headers, "Sec-WebSocket-Key")))
                c.sendall(resp.encode())
                ws = WsConn(c, rest, client=False)
                try:
                    while True:
                        op, payload = ws.recv_message()
                        if op == OP_CLOSE:
                            ws.send(OP_CLOSE, payload[:2])
                            break
                        ws.send(op, payload)
                        with self.lock:
                            self.echoed += 1
                finally:
                    with self.lock:
                        self.unmasked += ws.unmasked_from_client
                return
            if path.startswith("/slow"):
                time.sleep(self.slow_seconds)
                body = b"slow done\n"
            else:
                body = b"ok\n"
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n%s" % (len(body), body))
        except Exception as e:  # noqa: BLE001 - recorded for the test
            with self.lock:
                self.errors.append(repr(e))
        finally:
            c.close()
