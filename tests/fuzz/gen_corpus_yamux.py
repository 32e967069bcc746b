#!/usr/bin/env python3
"""Write the seed corpus of tests/fuzz/fuzz_yamux.c into corpus/yamux/.

Each input is two bytes (owner flags, generator seed; see the harness) and
then valid yamux frames. Rerun after changing the harness input format.
"""
import os
import struct

DATA, WU, PING, GOAWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8
F_REFUSE, F_ECHO, F_LAZY, F_CLOSE_FIN = 0x01, 0x02, 0x04, 0x08
F_SLOW, F_SMALL, F_ACTIONS, F_BIGWIN = 0x10, 0x20, 0x40, 0x80


def fr(typ, flags, sid, length, payload=b""):
    return struct.pack(">BBHII", 0, typ, flags, sid, length) + payload


def data(flags, sid, payload):
    return fr(DATA, flags, sid, len(payload), payload)


SEEDS = {
    "open_data_fin": (F_ECHO, 1, fr(WU, SYN, 1, 0) + data(0, 1, b"hello") +
                      data(FIN, 1, b"bye") + fr(PING, SYN, 0, 7)),
    "syn_on_data": (F_ECHO | F_CLOSE_FIN, 2, data(SYN, 1, b"GET / HTTP/1.1\r\n\r\n") +
                    fr(WU, FIN, 1, 0)),
    "ping_both_ways": (0, 3, fr(PING, SYN, 0, 0) + fr(PING, ACK, 0, 0) +
                       fr(PING, SYN, 0, 0xFFFFFFFF)),
    "go_away_normal": (F_ACTIONS, 4, fr(WU, SYN, 1, 0) + fr(GOAWAY, 0, 0, 0) +
                       fr(WU, SYN, 3, 0) + data(0, 3, b"x")),
    "go_away_error": (0, 5, fr(WU, SYN, 1, 0) + fr(GOAWAY, 0, 0, 1)),
    "window_updates": (F_ACTIONS | F_ECHO, 6, fr(WU, SYN, 1, 0) + data(0, 1, b"a" * 3000) +
                       fr(WU, 0, 1, 65536) + fr(WU, 0, 1, 0xFFFFFFFF) + data(0, 1, b"b" * 1000)),
    "acks_for_our_opens": (F_ACTIONS, 7, b"".join(fr(WU, ACK, i, 0) for i in range(1, 12)) +
                           fr(WU, ACK | FIN, 2, 0) + fr(WU, RST, 4, 0) + data(0, 6, b"resp")),
    "reset_then_late_data": (F_ECHO, 8, fr(WU, SYN, 1, 0) + fr(WU, RST, 1, 0) +
                             data(0, 1, b"late") + data(0, 99, b"unknown")),
    "backlog_small_cfg": (F_SMALL | F_REFUSE, 9, b"".join(fr(WU, SYN, i, 0)
                                                          for i in range(1, 40, 2))),
    "slow_clock_timeouts": (F_SLOW | F_ACTIONS | F_LAZY, 10, fr(WU, SYN, 1, 0) +
                            data(0, 1, b"z" * 500) + fr(PING, SYN, 0, 1) * 8),
    # Seed 241: top bit set (no keepalive), and a generator sequence that
    # closes stream 3 and then lets 5 minutes pass.
    "close_timeout_no_keepalive": (F_SLOW | F_ACTIONS | F_CLOSE_FIN, 241,
                                   fr(WU, SYN, 1, 0) + fr(WU, FIN, 1, 0) + fr(WU, SYN, 3, 0) +
                                   data(0, 3, b"abc") * 20 +
                                   # ACK whatever the owner opens, so only
                                   # the close timeout can fire
                                   b"".join(fr(WU, ACK, i, 0) * 8 for i in range(2, 40, 2))),
    "window_overflow": (0, 11, fr(WU, SYN, 1, 0) + fr(DATA, 0, 1, 262145)),
    "big_window_lazy": (F_BIGWIN | F_LAZY | F_ECHO, 12, fr(WU, SYN, 1, 0) +
                        data(0, 1, b"q" * 4000) + data(FIN, 1, b"end")),
    "client_side_streams": (F_ECHO | F_CLOSE_FIN, 13, fr(WU, SYN, 2, 0) +
                            data(0, 2, b"from server") + fr(WU, FIN, 2, 0)),
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "yamux")
    os.makedirs(out, exist_ok=True)
    for name, (flags, seed, body) in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([flags, seed]) + body)


if __name__ == "__main__":
    main()
