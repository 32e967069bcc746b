#!/usr/bin/env python3
"""Reproduces the failure the soak found (docs/soak.md, "Findings"): a request
answered 502 {"error":"upstream unreachable"} while one of an endpoint's two
agents shuts down gracefully (SIGTERM).

One `piko server`, two `piko agent http e` on the same endpoint in front of
services.py's HTTP service, THREADS keep-alive clients (default 8) sending
GET /data to endpoint e, and the second agent restarted with SIGTERM every
~1.8 s. Every answer must be 200: the other agent serves the endpoint all
along. Prints the failures and the server's log lines around each.

  python3 tests/soak/agent_term_race.py BUILD/bin/piko [RESTARTS]

With the ASan build (a wider window): 3 failures in 100 restarts (~38,000
requests), 7 in 60; a Release build: 0 in 60 restarts with 4 clients (the
window is narrower, not closed). Exit 1 when any request failed.
"""

import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    bin_ = os.path.abspath(sys.argv[1])
    restarts = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    threads = int(os.environ.get("THREADS", "8"))
    out = tempfile.mkdtemp(prefix="piko-term-race-")
    svc = subprocess.Popen([sys.executable, "-u", os.path.join(HERE, "services.py"), "http"],
                           stdout=open(out + "/svc.out", "w"))
    time.sleep(1)
    hport = int(re.search(r":(\d+)", open(out + "/svc.out").read()).group(1))
    pp, up, ap, cp = free_port(), free_port(), free_port(), free_port()
    srv = subprocess.Popen([bin_, "server", "--proxy.bind-addr", "127.0.0.1:%d" % pp,
                            "--upstream.bind-addr", "127.0.0.1:%d" % up,
                            "--admin.bind-addr", "127.0.0.1:%d" % ap,
                            "--cluster.bind-addr", "127.0.0.1:%d" % cp,
                            "--log.level", "info", "--proxy.access-log.level", "debug"],
                           stderr=open(out + "/server.stderr", "w"), start_new_session=True)
    time.sleep(2)
    n = [0]

    def agent():
        n[0] += 1
        return subprocess.Popen([bin_, "agent", "http", "e", "127.0.0.1:%d" % hport,
                                 "--connect.url", "http://127.0.0.1:%d" % up,
                                 "--log.level", "info", "--access-log.disable"],
                                stderr=open(out + "/agent.%d.stderr" % n[0], "w"),
                                start_new_session=True)
    a, b = agent(), agent()
    time.sleep(2)
    stop = threading.Event()
    ok, bad = [0], []

    def client():
        c = None
        while not stop.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", pp, timeout=10)
                c.request("GET", "/data?n=10&seed=1", headers={"x-piko-endpoint": "e"})
                r = c.getresponse()
                d = r.read()
                if r.status == 200:
                    ok[0] += 1
                else:
                    bad.append((time.time(), r.status, d[:80]))
            except Exception as e:  # noqa: BLE001
                bad.append((time.time(), "exception", repr(e)))
                c = None
    ts = [threading.Thread(target=client) for _ in range(threads)]
    for t in ts:
        t.start()
    for _ in range(restarts):
        time.sleep(1.0)
        b.terminate()
        rc = b.wait(60)
        if rc != 0:
            print("agent exited %d on SIGTERM" % rc)
        b = agent()
        time.sleep(0.8)
    stop.set()
    for t in ts:
        t.join()
    for p in (a, b, srv):
        p.terminate()
        p.wait(60)
    svc.kill()
    print("%d requests answered 200, %d failed" % (ok[0], len(bad)))
    log = open(out + "/server.stderr").read().splitlines()
    for i, line in enumerate(log):
        if '"status":"502"' in line:
            print("\n".join("  " + x[:200] for x in log[max(0, i - 2): i + 2]))
            print()
    print("logs in", out)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
