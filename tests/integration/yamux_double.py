"""yamux framing for the test doubles that speak it in place of a real peer:
test_goaway's fake server, the fake agents of test_burst, test_window and
test_keepalive."""

import socket
import struct
import threading

from harness import T
from tcp_ws import OP_BINARY, WsConn, client_handshake

HDR = struct.Struct(">BBHII")  # version, type, flags, stream id, length
T_DATA, T_WINDOW, T_PING, T_GOAWAY = 0, 1, 2, 3
F_SYN, F_ACK, F_FIN, F_RST = 1, 2, 4, 8


def frame(typ, flags, sid, length, payload=b""):
    """One frame's bytes: the header, then payload (Data frames only)."""
    return HDR.pack(0, typ, flags, sid, length) + payload


class FrameReader:
    """Whole yamux frames out of WebSocket messages, which may split or join
    them anywhere."""

    def __init__(self):
        self.data = b""

    def feed(self, msg):
        """Adds msg; yields each frame it completed as (type, flags, stream id,
        length, payload), payload empty but for Data frames."""
        self.data += msg
        while len(self.data) >= HDR.size:
            _, typ, flags, sid, length = HDR.unpack(self.data[:HDR.size])
            plen = length if typ == T_DATA else 0
            if len(self.data) < HDR.size + plen:
                return
            payload = self.data[HDR.size:HDR.size + plen]
            self.data = self.data[HDR.size + plen:]
            yield typ, flags, sid, length, payload


class AgentDouble:
    """An upstream connection registered for `endpoint` on a server's upstream
    port, speaking yamux itself: the fake agents' common part. A subclass
    reads self.ws (its own thread) and sends frames with send()."""

    def __init__(self, server, endpoint):
        self.errors = []
        self.lock = threading.Lock()
        self.sock = socket.create_connection(("127.0.0.1", server.upstream_port), timeout=T(30))
        hs = client_handshake(self.sock, "/piko/v1/upstream/" + endpoint, "127.0.0.1")
        assert hs.status == 101, hs.headers
        self.ws = WsConn(self.sock, hs.rest)

    def send(self, typ, flags, sid, length, payload=b""):
        with self.lock:
            self.ws.send(OP_BINARY, frame(typ, flags, sid, length, payload))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
