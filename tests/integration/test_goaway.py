"""`piko agent` honours the server's yamux Go Away (code 0).

A server node shutting down sends Go Away so its agents move to another node
behind the same connect URL. The agent must dial a fresh tunnel at once, keep
serving on the old one meanwhile (and for streams that cross its own Go Away),
then retire the old one: Go Away from the agent, close once drained and about
a second passed. The server here is a test double speaking yamux as the
server side over the agent's WebSocket, so the test controls when each frame
goes out; the agent forwards to the real test upstream service."""

import hashlib
import os
import signal
import socket
import threading
import time

from harness import PikoTestCase, RequestLoad, T, free_port, wait_for
from tcp_services import find_logs
from tcp_ws import OP_BINARY, OP_CLOSE, WsClosed, WsConn, accept_key, hget, read_http_head

from yamux_double import (F_ACK, F_FIN, F_RST, F_SYN, T_DATA, T_GOAWAY, T_PING,  # noqa: F401
                          T_WINDOW, FrameReader, frame)
WINDOW = 256 * 1024

ENDPOINT = "goaway-ep"


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.data = bytearray()
        self.fin = threading.Event()  # the agent half-closed (response done)
        self.reset = False
        self.unacked = 0  # received bytes not yet credited back


class Session:
    """One agent WebSocket, the yamux server side of it."""

    def __init__(self, index, sock, rest):
        self.index = index
        self.sock = sock
        self.ws = WsConn(sock, rest, client=False)
        self.lock = threading.Lock()
        self.opened_at = time.monotonic()
        self.closed_at = None
        self.closed = threading.Event()
        self.agent_goaway = None  # code of the agent's Go Away
        self.agent_goaway_at = None
        self.agent_goaway_ev = threading.Event()
        self.streams = {}
        self.windows = []  # (stream id, flags, delta) of the agent's Window Updates
        self.next_id = 2
        self.errors = []
        threading.Thread(target=self._run, daemon=True).start()

    def send(self, typ, flags, sid, length, payload=b""):
        with self.lock:
            self.ws.send(OP_BINARY, frame(typ, flags, sid, length, payload))

    def go_away(self, code=0):
        self.send(T_GOAWAY, 0, 0, code)

    def open(self, request_bytes):
        """Open a stream and send request_bytes on it; returns the Stream."""
        with self.lock:
            sid = self.next_id
            self.next_id += 2
            st = self.streams[sid] = Stream(sid)
        self.send(T_WINDOW, F_SYN, sid, 0)
        for i in range(0, len(request_bytes), 16384):
            piece = request_bytes[i:i + 16384]
            self.send(T_DATA, 0, sid, len(piece), piece)
        return st

    def exchange(self, request_bytes, timeout):
        """One HTTP exchange on a fresh stream: the raw response bytes, once
        the agent sent FIN; then our FIN ends the stream (as Piko's server)."""
        st = self.open(request_bytes)
        if not st.fin.wait(timeout):
            raise AssertionError("session %d stream %d: no complete response within %.1fs "
                                 "(got %r, reset %r)" % (self.index, st.sid, timeout,
                                                         bytes(st.data[:200]), st.reset))
        if st.reset:
            raise AssertionError("session %d stream %d was reset (got %r)"
                                 % (self.index, st.sid, bytes(st.data[:200])))
        self.send(T_WINDOW, F_FIN, st.sid, 0)
        return bytes(st.data)

    def _run(self):
        frames = FrameReader()
        try:
            while True:
                op, msg = self.ws.recv_message()
                if op == OP_CLOSE:
                    try:
                        self.ws.send(OP_CLOSE, msg[:2])
                    except OSError:
                        pass
                    break
                for f in frames.feed(msg):
                    self._frame(*f)
        except (WsClosed, OSError) as e:
            self.errors.append(repr(e))
        finally:
            self.closed_at = time.monotonic()
            self.closed.set()
            for st in list(self.streams.values()):
                if not st.fin.is_set():
                    st.reset = True
                    st.fin.set()
            try:
                self.sock.close()
            except OSError:
                pass

    def _frame(self, typ, flags, sid, length, payload):
        if typ == T_PING:
            if flags & F_SYN:
                self.send(T_PING, F_ACK, 0, length)
            return
        if typ == T_GOAWAY:
            if self.agent_goaway is None:
                self.agent_goaway = length
                self.agent_goaway_at = time.monotonic()
                self.agent_goaway_ev.set()
            return
        if typ == T_WINDOW and sid:
            self.windows.append((sid, flags, length))
        st = self.streams.get(sid)
        if st is None:
            return
        if typ == T_DATA and payload:
            st.data += payload
            st.unacked += len(payload)
            if st.unacked >= WINDOW // 2:
                self.send(T_WINDOW, 0, sid, st.unacked)
                st.unacked = 0
        if flags & F_RST:
            st.reset = True
            st.fin.set()
        if flags & F_FIN:
            st.fin.set()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FakeServer:
    """The upstream port of a Piko server node, as a test double: accepts
    GET /piko/v1/upstream/<endpoint> WebSockets (101) and keeps each as a
    Session; refuse_next=[True, ...] answers the next attempts with 503."""

    def __init__(self, endpoint=ENDPOINT):
        self.endpoint = endpoint
        self.port = free_port()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(16)
        self.lock = threading.Lock()
        self.sessions = []
        self.attempts = []  # (path, status answered)
        self.refuse = 0  # answer this many upgrade attempts with 503
        self.errors = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._handshake, args=(c,), daemon=True).start()

    def _handshake(self, c):
        try:
            c.settimeout(None)
            first, headers, rest = read_http_head(c)
            method, path = (first.split(" ") + ["", ""])[:2]
            key = hget(headers, "Sec-WebSocket-Key")
            ok = (method == "GET" and path == "/piko/v1/upstream/" + self.endpoint and key
                  and hget(headers, "Upgrade", "").lower() == "websocket")
            with self.lock:
                refuse = self.refuse > 0
                if refuse:
                    self.refuse -= 1
            if not ok or refuse:
                status = 503 if ok else 404
                with self.lock:
                    self.attempts.append((path, status))
                body = b'{"error": "test double refuses"}'
                c.sendall(b"HTTP/1.1 %d Refused\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                          % (status, len(body), body))
                c.close()
                return
            c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                       % accept_key(key)).encode())
            with self.lock:
                self.attempts.append((path, 101))
                s = Session(len(self.sessions), c, rest)
                self.sessions.append(s)
        except Exception as e:  # noqa: BLE001 - recorded for the test
            self.errors.append(repr(e))
            c.close()

    def session(self, i, timeout):
        wait_for(lambda: len(self.sessions) > i, timeout, what="agent WebSocket #%d" % (i + 1))
        return self.sessions[i]

    def close(self):
        try:
            self.ls.close()
        except OSError:
            pass
        for s in list(self.sessions):
            s.close()


def http_request(method, path, body=b""):
    """A request as Piko's server sends it: Connection: close (its transport
    disables keep-alive), so the agent's FIN follows the response."""
    return (b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (method.encode(), path.encode(), ENDPOINT.encode(), len(body))) + body


def parse_response(raw):
    """(status, headers dict lower-cased, body) of one HTTP/1.1 response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, "no complete response head in %r" % raw[:200]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size_line, _, body = body.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            out += body[:n]
            body = body[n + 2:]
        body = bytes(out)
    elif "content-length" in headers:
        n = int(headers["content-length"])
        assert len(body) == n, "body of %d bytes, Content-Length %d" % (len(body), n)
    return status, headers, body


def fake_stack(case):
    """The test upstream, a FakeServer, our agent dialling it (grace period
    20 s) and the agent's first session: (upstream, fake, agent, session)."""
    up = case.upstream()
    fake = FakeServer()
    case.addCleanup(fake.close)
    ag = case.agent(None, ENDPOINT, up.addr, "--grace-period", "20s", start=False,
                    connect_url=fake.url)
    ag.start(wait=False)
    return up, fake, ag, fake.session(0, T(10))


class GoAwayTest(PikoTestCase):
    def _stack(self):
        return fake_stack(self)

    def _echo(self, sess, size, seed):
        body = hashlib.sha256(seed.encode()).digest() * (size // 32) + os.urandom(size % 32)
        raw = sess.exchange(http_request("POST", "/echo/" + seed, body), T(10))
        status, headers, got = parse_response(raw)
        self.assertEqual(status, 200, raw[:300])
        self.assertEqual(got, body, "echo on session %d: body differs" % sess.index)
        self.assertEqual(headers.get("x-echo-path"), "/echo/" + seed)

    def _get_ok(self, sess):
        status, _, body = parse_response(sess.exchange(http_request("GET", "/"), T(10)))
        self.assertEqual((status, body), (200, b"ok\n"))

    def _no_backoff_for_retired(self, ag):
        for msg in ("disconnected; reconnecting", "session failed"):
            self.assertEqual(find_logs(ag, msg), [], "agent logged %r\n%s" % (msg, ag.describe()))
        self.assertTrue(ag.alive, ag.describe())

    def test_goaway_moves_to_a_fresh_tunnel_without_a_gap(self):
        _, fake, ag, s1 = self._stack()
        self._get_ok(s1)

        # a slow request in flight across the whole move
        slow = {}

        def slow_req():
            try:
                raw = s1.exchange(http_request("GET", "/slow?ms=1500"), T(15))
                slow["resp"] = parse_response(raw)
                slow["done_at"] = time.monotonic()
            except Exception as e:  # noqa: BLE001 - asserted below
                slow["error"] = repr(e)

        th = threading.Thread(target=slow_req, daemon=True)
        th.start()
        time.sleep(0.2)

        goaway_at = time.monotonic()
        s1.go_away(0)
        s2 = fake.session(1, T(5))
        self.assertLess(s2.opened_at - goaway_at, T(3), "fresh tunnel dialled late")
        self.assertFalse(s1.closed.is_set(), "session 1 closed before session 2 was up")
        # the server opens a stream on the old tunnel right after the fresh
        # one is up (before or just after the agent's own Go Away reaches it)
        self._echo(s1, 100 * 1024, "after-fresh-up")

        self.assertTrue(s1.agent_goaway_ev.wait(T(5)), "no Go Away from the agent on session 1")
        self.assertEqual(s1.agent_goaway, 0)
        self.assertGreaterEqual(s1.agent_goaway_at, s2.opened_at)
        # a SYN that crossed the agent's Go Away is still served
        self._get_ok(s1)
        # and the fresh tunnel serves too
        self._echo(s2, 50 * 1024, "on-session-2")

        th.join(T(15))
        self.assertNotIn("error", slow)
        self.assertEqual(slow["resp"][0], 200)
        self.assertEqual(slow["resp"][2], b"slow done\n")

        self.assertTrue(s1.closed.wait(T(10)), "the agent did not close session 1")
        self.assertGreaterEqual(s1.closed_at - s1.agent_goaway_at, 0.9,
                                "session 1 closed too soon after the agent's Go Away")
        self.assertGreaterEqual(s1.closed_at, slow["done_at"] - 0.05)

        # the listener still works, on session 2 only, and nothing else moved
        time.sleep(0.3)
        self._get_ok(s2)
        self.assertFalse(s2.closed.is_set())
        self.assertIsNone(s2.agent_goaway)
        self.assertEqual(len(fake.sessions), 2)
        self.assertEqual(len(find_logs(ag, "server going away; reconnecting",
                                       **{"endpoint-id": ENDPOINT})), 1, ag.describe())
        self._no_backoff_for_retired(ag)

    def test_goaway_when_fresh_dial_fails_keeps_serving_and_retries(self):
        _, fake, ag, s1 = self._stack()
        self._get_ok(s1)
        with fake.lock:
            fake.refuse = 1
        s1.go_away(0)
        wait_for(lambda: any(st == 503 for _, st in fake.attempts), T(5),
                 what="the refused fresh dial")
        # the old tunnel keeps serving while the agent backs off and retries
        self._echo(s1, 10 * 1024, "while-refused")
        s2 = fake.session(1, T(10))
        self.assertFalse(s1.closed.is_set() and s1.closed_at < s2.opened_at,
                         "session 1 closed before session 2 was up")
        self.assertTrue(s1.agent_goaway_ev.wait(T(5)), "no Go Away from the agent on session 1")
        self._get_ok(s2)
        self.assertTrue(s1.closed.wait(T(10)), "the agent did not close session 1")
        self.assertEqual([st for _, st in fake.attempts], [101, 503, 101])
        # the refused dial was retried with backoff, as any failed dial
        self.assertTrue(find_logs(ag, "disconnected; reconnecting", error="503"), ag.describe())
        self.assertTrue(ag.alive, ag.describe())
        self._get_ok(s2)

    def test_shutdown_during_move_drains_both_tunnels(self):
        _, fake, ag, s1 = self._stack()
        self._get_ok(s1)
        s1.go_away(0)
        s2 = fake.session(1, T(5))
        self.assertTrue(s1.agent_goaway_ev.wait(T(5)))
        # an exchange in flight on the retiring tunnel when SIGTERM arrives
        st = s1.open(http_request("GET", "/slow?ms=800"))
        time.sleep(0.2)
        ag.signal(signal.SIGTERM)
        self.assertTrue(s2.agent_goaway_ev.wait(T(5)), "no Go Away on session 2 at shutdown")
        self.assertTrue(st.fin.wait(T(10)))
        self.assertFalse(st.reset)
        self.assertEqual(parse_response(bytes(st.data))[2], b"slow done\n")
        s1.send(T_WINDOW, F_FIN, st.sid, 0)
        self.assertEqual(ag.wait(T(10)), 0, ag.describe())


class AgentShutdownTest(PikoTestCase):
    def test_sigterm_of_one_agent_fails_no_request(self):
        # The soak's finding (docs/soak.md): a request the server sent just
        # before it read a SIGTERMed agent's Go Away was reset by that agent,
        # and the client got 502 though the endpoint's other tunnel was up.
        # The agent now serves streams that cross its Go Away.
        up = self.upstream()
        srv = self.server()
        self.agent(srv, "e", up.addr)
        b = self.agent(srv, "e", up.addr)
        wait_for(lambda: srv.stderr().count('"msg":"upstream connected"') >= 2, T(10),
                 what="two tunnels of e")
        load = RequestLoad(srv.proxy_port, "e")
        try:
            for _ in range(10):
                time.sleep(0.3)
                b.stop()  # SIGTERM; exits 0 once drained
                b = self.agent(srv, "e", up.addr, wait=False)
                wait_for(lambda: '"msg":"connected"' in b.stderr(), T(10),
                         what="the restarted agent connected")
        finally:
            load.stop()
        self.assertEqual(load.bad, [])
        self.assertGreater(load.ok[0], 100)
