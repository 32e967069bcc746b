"""yamux framing for the test doubles that speak it in place of a real peer:
test_goaway's fake server, test_burst's and test_window's fake agents."""

import struct

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
