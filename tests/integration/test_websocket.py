"""WebSockets through Piko: passthrough of an upgraded connection via an
`agent http` endpoint, and raw WebSocket clients on the proxy port's
/_piko/v1/tcp/<endpoint> route (what `piko forward` uses)."""

import hashlib
import json
import os
import random
import socket
import string
import threading
import time

from harness import T
from tcp_services import TcpTestCase, pattern_chunks
from tcp_ws import (OP_BINARY, OP_CLOSE, OP_TEXT, WsConn, accept_key, client_handshake,
                    encode_frame, read_body, WsEchoService)


class WsPassthroughTest(TcpTestCase):
    def _ws_stack(self, endpoint, server_args=()):
        svc = WsEchoService()
        self.addCleanup(svc.close)
        srv = self.server(*server_args)
        self.agent(srv, endpoint, svc.addr)  # harness: waits for GET / through the proxy
        return svc, srv

    def _connect(self, srv, path, host, headers=()):
        s = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=T(15))
        hs = client_handshake(s, path, host, headers)
        if hs.status != 101:
            body = read_body(s, hs.headers, hs.rest, timeout=T(5))
            s.close()
            self.fail("upgrade through the proxy: %d %r %r" % (hs.status, hs.headers, body))
        self.assertEqual(hs.header("Sec-WebSocket-Accept"), accept_key(hs.key))
        self.assertEqual((hs.header("Upgrade") or "").lower(), "websocket")
        return s, WsConn(s, hs.rest)

    def test_1000_messages_echoed_exactly(self):
        svc, srv = self._ws_stack("ws-echo")
        s, ws = self._connect(srv, "/chat/room?x=1", "127.0.0.1",
                              [("x-piko-endpoint", "ws-echo")])
        rng = random.Random()
        msgs = []
        for i in range(1000):
            n = rng.randint(0, 64 * 1024)
            if i % 5 == 0:
                msgs.append((OP_TEXT, "".join(rng.choices(string.ascii_letters + "é€ ", k=n // 2))
                             .encode("utf-8")))
            else:
                msgs.append((OP_BINARY, rng.randbytes(n)))
        err = []

        def sender():
            try:
                for i, (op, payload) in enumerate(msgs):
                    if i % 7 == 3 and len(payload) > 10:
                        # fragmented: first frame, continuation
                        cut = len(payload) // 3
                        s.sendall(encode_frame(op, payload[:cut], fin=False) +
                                  encode_frame(0, payload[cut:], fin=True))
                    else:
                        ws.send(op, payload)
            except Exception as e:  # noqa: BLE001
                err.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        for i, (op, payload) in enumerate(msgs):
            rop, rpayload = ws.recv_message()
            self.assertEqual(rop, op, "opcode of message %d" % i)
            if rpayload != payload:
                self.fail("message %d (%d bytes) came back as %d bytes (sha256 %s vs %s)"
                          % (i, len(payload), len(rpayload),
                             hashlib.sha256(payload).hexdigest()[:12],
                             hashlib.sha256(rpayload).hexdigest()[:12]))
        t.join(T(10))
        self.assertEqual(err, [])
        self.assertEqual(ws.masked_from_server, 0, "server frames must not be masked")
        ws.send_close(1000)
        op, payload = ws.recv_message()
        self.assertEqual(op, OP_CLOSE)
        s.close()
        self.assertEqual(svc.unmasked, 0, "the service saw unmasked client frames")
        self.assertEqual(svc.echoed, 1000)
        # the service got the upgrade request with its path, query and Host
        ups = [(m, p, h) for m, p, h in svc.requests
               if any(k.lower() == "upgrade" for k, _ in h)]
        self.assertEqual(len(ups), 1, svc.requests)
        method, path, headers = ups[0]
        self.assertEqual((method, path), ("GET", "/chat/room?x=1"))
        hmap = {k.lower(): v for k, v in headers}
        self.assertEqual(hmap.get("upgrade", "").lower(), "websocket")
        self.assertEqual(hmap.get("host"), "127.0.0.1")

    def test_idle_connection_outlives_proxy_timeout(self):
        svc, srv = self._ws_stack("ws-idle", server_args=("--proxy.timeout", "1s"))
        # the 1 s proxy timeout is in force for plain requests...
        t0 = time.monotonic()
        r = srv.proxy("ws-idle", "GET", "/slow")
        self.assertEqual(r.status, 504, "a 3 s request with --proxy.timeout 1s: %r" % r)
        self.assertLess(time.monotonic() - t0, 2.9)
        # ...but not for an upgraded connection (routed by Host here)
        s, ws = self._connect(srv, "/idle", "ws-idle.example.com")
        ws.send(OP_TEXT, b"before")
        self.assertEqual(ws.recv_message(), (OP_TEXT, b"before"))
        # and a connection idle from its very first byte
        s2, ws2 = self._connect(srv, "/idle2", "ws-idle.example.com")
        time.sleep(3)
        ws.send(OP_BINARY, b"after 3 s idle")
        s.settimeout(T(5))
        self.assertEqual(ws.recv_message(), (OP_BINARY, b"after 3 s idle"))
        ws2.send(OP_BINARY, os.urandom(1000) + b"x")
        s2.settimeout(T(5))
        op, p = ws2.recv_message()
        self.assertEqual((op, len(p)), (OP_BINARY, 1001))
        for sock, conn in ((s, ws), (s2, ws2)):
            conn.send_close(1000)
            self.assertEqual(conn.recv_message()[0], OP_CLOSE)
            sock.close()


class WsTcpRouteTest(TcpTestCase):
    """A plain WebSocket client on GET /_piko/v1/tcp/<endpoint> (binary
    messages carry the raw bytes; a close frame ends our sending side)."""

    def test_raw_websocket_client_echo_and_half_close(self):
        svc = self.tcp_service()
        srv = self.server()
        self.tcp_agent(srv, "ws-tcp", svc.addr)
        s = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=T(15))
        hs = client_handshake(s, "/_piko/v1/tcp/ws-tcp", "127.0.0.1:%d" % srv.proxy_port)
        self.assertEqual(hs.status, 101, hs.headers)
        self.assertEqual(hs.header("Sec-WebSocket-Accept"), accept_key(hs.key))
        ws = WsConn(s, hs.rest)
        total = 8 << 20
        seed = random.randrange(1 << 30)
        sent = hashlib.sha256()
        err = []

        def sender():
            try:
                ws.send(OP_BINARY, b"ECHO raw\n")
                for c in pattern_chunks(seed, total, max_chunk=200 * 1024):
                    ws.send(OP_BINARY, c)
                    sent.update(c)
                ws.send_close(1000)  # = our FIN; the echo still comes back
            except Exception as e:  # noqa: BLE001
                err.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        got = hashlib.sha256()
        n = 0
        ops = set()
        while True:
            op, payload = ws.recv_message()
            if op == OP_CLOSE:
                break
            ops.add(op)
            got.update(payload)
            n += len(payload)
        t.join(T(10))
        self.assertEqual(err, [])
        self.assertEqual(ops, {OP_BINARY}, "the server sends binary messages")
        self.assertEqual(n, total, "bytes echoed back before the server's close")
        self.assertEqual(got.hexdigest(), sent.hexdigest())
        self.assertEqual(ws.masked_from_server, 0)
        s.close()
        m = svc.wait_line(r"^echo raw bytes=(\d+) sha256=(\w+)$", T(10))
        self.assertEqual((int(m.group(1)), m.group(2)), (total, sent.hexdigest()))
        self.wait_open_streams(srv, 0)

    def test_no_upstream_is_502_before_upgrade(self):
        srv = self.server()
        s = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=T(15))
        hs = client_handshake(s, "/_piko/v1/tcp/nobody", "127.0.0.1")
        body = read_body(s, hs.headers, hs.rest, timeout=T(5))
        s.close()
        self.assertEqual(hs.status, 502, (hs.headers, body))
        self.assertTrue((hs.header("Content-Type") or "").startswith("application/json"))
        self.assertEqual(json.loads(body), {"error": "no available upstreams"})
