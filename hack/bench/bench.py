#!/usr/bin/env python3
"""The benchmark of issue 4: nginx direct, nginx one hop, Piko (Go) and ours, in one run.

Paths: direct (nginx itself), nginx (an nginx one-hop proxy), piko (the real Piko: server,
agent), ours (our server and agent, one node), xnode (ours across the cluster: the request
enters node B, crosses the node link to node A, which holds the agent's tunnel), workers (our
server with --workers N, default 2: requests land on any worker, and those without the tunnel
cross a loopback link to the one holding it). With --pin-server CPUS and --pin-rest CPUS
(taskset lists), the servers run on CPUS (ours and Piko on its first CPU only, the workers
path on all of them, one worker per CPU) and every other process on the rest: the workers/ours
ratio is then the scaling from 1 core to N. It needs at least N+1 CPUs to mean that.

Run through hack/bench/run.sh, which installs the packages, builds our binary and the bench
tools and the real Piko, and raises `ulimit -n`. To measure another build directory than build/
(without touching build/), run this script directly with --build DIR (our binary DIR/bin/piko,
the tools DIR/bench/; docs/benchmarks.md shows the commands). This script only orchestrates:
it starts every process on free 127.0.0.1 ports, measures, kills everything it started, and
prints one markdown table of medians (also written to hack/bench/out/latest.md).
docs/benchmarks.md explains the rows.

Workloads (each repeated --runs times; the table shows the median, the per-run values follow):
  tput   wrk -c64 -t2 -d10s, small GET over keep-alive, maximum throughput; CPU per request
         from /proc/<pid>/stat of the processes on the path, before and after the run
  lat    pk_openloop at a fixed rate (open loop, latency from the intended send time)
  bulk   pk_bulk through forward -> server -> agent tcp -> pk_bulk service, up and down
  idle   server RSS when idle, then with 10,000 and 100,000 idle upstream WebSockets
         (pk_upstream hold, 256 handshakes at a time; fewer if `ulimit -n` cannot hold them),
         and a thundering herd: as many dialling all at once at a fresh server
  churn  upstream connects per second (pk_upstream churn: upgrade, 101, close)
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "hack", "bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = "0123456789abcdef0123456789abcde\n"  # 32 bytes
ENDPOINT = "bench"
TCP_ENDPOINT = "bench-tcp"
PATHS = ["direct", "nginx", "piko", "ours", "xnode", "workers"]
LABELS = {"direct": "direct", "nginx": "nginx 1-hop", "piko": "Piko", "ours": "ours",
          "xnode": "ours x-node", "workers": "ours --workers"}
# the ratio columns of the table: (numerator, denominator, header)
RATIOS = [("ours", "piko", "ours/Piko"), ("ours", "nginx", "ours/nginx"),
          ("xnode", "ours", "x-node/ours"), ("workers", "ours", "workers/ours")]
XNODE_IDS = ("bench-a", "bench-b")  # node A holds the tunnel, node B is where requests enter
WORKLOADS = ["tput", "lat", "bulk", "bulkwin", "idle", "churn"]
# The receive window per yamux stream of the bulkwin workload, on the server
# and the agent (Piko v0.10's --stream.max-window-size; the default is 256 KiB).
BIG_WINDOW = 4 << 20


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# --- processes ----------------------------------------------------------------

class Procs:
    """Every process this script starts, each in its own process group; all killed at exit."""

    def __init__(self, tmp, rest_cpus=None):
        self.tmp = tmp
        self.live = []
        self.n = 0
        self.rest_cpus = rest_cpus  # taskset list for processes not given their own

    def start(self, name, argv, cpus=None, **kw):
        cpus = cpus or self.rest_cpus
        if cpus:
            argv = ["taskset", "-c", cpus] + list(argv)
        self.n += 1
        logf = open(os.path.join(self.tmp, "%02d-%s.log" % (self.n, name)), "wb")
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", logf), stderr=logf,
                             stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        p.name = name
        p.logpath = logf.name
        self.live.append(p)
        return p

    def stop(self, p, timeout=5):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        else:
            # the leader is gone; its group (nginx workers) may not be
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in list(reversed(self.live)):
            self.stop(p, timeout=3)


class Ports:
    def __init__(self):
        self.used = set()

    def get(self):
        for _ in range(200):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            if port not in self.used:
                self.used.add(port)
                return port
        raise RuntimeError("no free port")


def wait_until(what, fn, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s: %s exited with %s (log %s)" % (what, proc.name,
                                                                   proc.returncode, proc.logpath))
        try:
            if fn():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError("timed out (%ss) waiting for %s" % (timeout, what))


def http_json(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def metric(text, name, labels=""):
    """One sample of a Prometheus text exposition (labels: the exact label text), else 0."""
    m = re.search(r"^%s%s ([0-9.eE+-]+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else 0.0


def http_status(url, headers=None, timeout=2):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def cpu_secs(pid):
    if isinstance(pid, tuple):  # a supervisor and its workers
        return sum(cpu_secs(p) for p in pid)
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def kv(line):
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", line)}


# --- the stacks ---------------------------------------------------------------

NGINX_CONF = """worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path tmp_body;
  proxy_temp_path tmp_proxy;
  fastcgi_temp_path tmp_fastcgi;
  uwsgi_temp_path tmp_uwsgi;
  scgi_temp_path tmp_scgi;
{body}
}}
"""

UPSTREAM_SERVER = """  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "{body}"; }}
    location = /_bench_status {{ stub_status; }}
  }}"""

PROXY_SERVER = """  upstream u {{
    server 127.0.0.1:{up};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://u;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""


class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.procs = Procs(tmp, args.pin_rest)
        self.ports = Ports()
        self.bin = {
            "ours": args.bin or os.path.join(args.build, "bin", "piko"),
            "piko": args.piko,
        }
        self.tools = os.path.join(args.build, "bench")
        self.results = {}  # (workload, metric, path) -> [values per run]
        # idle_counts' notes concern the idle workload only
        self.notes = list(IDLE_NOTES) if "idle" in args.only else []
        self.stacks = {}

    def record(self, metric, path, value):
        self.results.setdefault((metric, path), []).append(value)

    def tool(self, name):
        return os.path.join(self.tools, name)

    # nginx ---------------------------------------------------------------------

    def nginx(self, name, server_block):
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(body=server_block))
        p = self.procs.start(name, ["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"),
                                    "-e", os.path.join(d, "error.log"), "-g", "daemon off;"])
        return p

    def nginx_worker(self, master):
        wait_until("nginx worker of %d" % master.pid, lambda: children(master.pid), 5, master)
        return children(master.pid)[0]

    # Piko and ours -------------------------------------------------------------

    def server(self, impl, name, extra=(), cluster_port=None, cpus=None):
        ports = {k: self.ports.get() for k in ("proxy", "upstream", "admin")}
        argv = [self.bin[impl], "server",
                "--proxy.bind-addr", "127.0.0.1:%d" % ports["proxy"],
                "--upstream.bind-addr", "127.0.0.1:%d" % ports["upstream"],
                "--admin.bind-addr", "127.0.0.1:%d" % ports["admin"],
                "--proxy.access-log.disable"]
        if impl == "piko":
            argv += ["--cluster.gossip.bind-addr", "127.0.0.1:%d" % self.ports.get()]
        else:
            # ours always opens its cluster port (default :8003): a free one, alone or joined
            ports["cluster"] = cluster_port or self.ports.get()
            argv += ["--cluster.bind-addr", "127.0.0.1:%d" % ports["cluster"]]
        argv += list(extra)
        p = self.procs.start(name, argv, cpus=cpus or self.server_cpus(1))
        p.ports = ports
        wait_until("%s /ready" % name,
                   lambda: http_status("http://127.0.0.1:%d/ready" % ports["admin"]) == 200,
                   15, p)
        return p

    def server_cpus(self, n):
        """The taskset list of a server on n CPUs of --pin-server (None: unpinned)."""
        if not self.args.pin_server:
            return None
        return ",".join(str(c) for c in self.args.server_cpu_list[:n])

    def workers_stack(self, up_port):
        """Our server with --workers N, the HTTP agent on whichever worker the kernel picks."""
        n = self.args.workers
        srv = self.server("ours", "workers-server", ["--workers", str(n)],
                          cpus=self.server_cpus(n))
        wait_until("%d workers" % n, lambda: len(children(srv.pid)) == n, 10, srv)
        agent = self.procs.start("workers-agent-http", [
            self.bin["ours"], "agent", "http", ENDPOINT, "127.0.0.1:%d" % up_port,
            "--connect.url", "http://127.0.0.1:%d" % srv.ports["upstream"],
            "--access-log.disable"])
        # every worker must route it: 20 fresh connections in a row answered
        wait_until("workers HTTP route from every worker", lambda: all(http_status(
            "http://127.0.0.1:%d/" % srv.ports["proxy"], {"x-piko-endpoint": ENDPOINT}) == 200
            for _ in range(20)), 20, agent)
        return {"server": srv, "agent": agent, "proxy_port": srv.ports["proxy"]}

    def tunnel_stack(self, impl, up_port, bulk_port):
        srv = self.server(impl, impl + "-server")
        url = "http://127.0.0.1:%d" % srv.ports["upstream"]
        agent = self.procs.start(impl + "-agent-http", [
            self.bin[impl], "agent", "http", ENDPOINT, "127.0.0.1:%d" % up_port,
            "--connect.url", url, "--access-log.disable"])
        agent_tcp = self.procs.start(impl + "-agent-tcp", [
            self.bin[impl], "agent", "tcp", TCP_ENDPOINT, "127.0.0.1:%d" % bulk_port,
            "--connect.url", url])
        fwd_port = self.ports.get()
        fwd = self.procs.start(impl + "-forward", [
            self.bin[impl], "forward", "tcp", "127.0.0.1:%d" % fwd_port, TCP_ENDPOINT,
            "--connect.url", "http://127.0.0.1:%d" % srv.ports["proxy"]])
        wait_until("%s HTTP route" % impl, lambda: http_status(
            "http://127.0.0.1:%d/" % srv.ports["proxy"], {"x-piko-endpoint": ENDPOINT}) == 200,
            20, agent)
        wait_until("%s TCP route" % impl, lambda: self.bulk_client(fwd_port, "up", 1, 3)["ok"]
                   == "1", 20, fwd)
        return {"server": srv, "agent": agent, "agent_tcp": agent_tcp, "forward": fwd,
                "proxy_port": srv.ports["proxy"], "fwd_port": fwd_port}

    def window_stack(self, impl):
        """A server, agent tcp and forward of their own, all with BIG_WINDOW
        (the standard stacks keep the default window)."""
        flag = ["--stream.max-window-size", str(BIG_WINDOW)]
        srv = self.server(impl, impl + "-win-server", flag)
        agent_tcp = self.procs.start(impl + "-win-agent-tcp", [
            self.bin[impl], "agent", "tcp", TCP_ENDPOINT, "127.0.0.1:%d" % self.bulk_port,
            "--connect.url", "http://127.0.0.1:%d" % srv.ports["upstream"]] + flag)
        fwd_port = self.ports.get()
        fwd = self.procs.start(impl + "-win-forward", [
            self.bin[impl], "forward", "tcp", "127.0.0.1:%d" % fwd_port, TCP_ENDPOINT,
            "--connect.url", "http://127.0.0.1:%d" % srv.ports["proxy"]])
        wait_until("%s TCP route, large windows" % impl, lambda: self.bulk_client(
            fwd_port, "up", 1, 3)["ok"] == "1", 20, fwd)
        return {"server": srv, "agent_tcp": agent_tcp, "forward": fwd, "fwd_port": fwd_port}

    def xnode_stack(self, up_port):
        """Two of our nodes joined to each other; the HTTP agent on node A; requests to B."""
        cports = [self.ports.get(), self.ports.get()]
        join = ",".join("127.0.0.1:%d" % p for p in cports)
        a, b = (self.server("ours", "xnode-server-" + nid[-1],
                            ["--cluster.node-id", nid, "--cluster.join", join], cport)
                for nid, cport in zip(XNODE_IDS, cports))
        agent = self.procs.start("xnode-agent-http", [
            self.bin["ours"], "agent", "http", ENDPOINT, "127.0.0.1:%d" % up_port,
            "--connect.url", "http://127.0.0.1:%d" % a.ports["upstream"],
            "--access-log.disable"])

        def linked(srv):
            nodes = http_json("http://127.0.0.1:%d/status/cluster/nodes" % srv.ports["admin"])
            return sorted(n["id"] for n in nodes if n.get("status") == "active") == \
                sorted(XNODE_IDS)
        wait_until("x-node: both nodes linked", lambda: linked(a) and linked(b), 20, b)
        wait_until("x-node: node B sees the endpoint on node A", lambda: ENDPOINT in (http_json(
            "http://127.0.0.1:%d/status/cluster/nodes/%s" % (b.ports["admin"], XNODE_IDS[0]))
            .get("endpoints") or {}), 20, agent)
        wait_until("x-node HTTP route through node B", lambda: http_status(
            "http://127.0.0.1:%d/" % b.ports["proxy"], {"x-piko-endpoint": ENDPOINT}) == 200,
            20, agent)
        if http_json("http://127.0.0.1:%d/status/upstream/endpoints" % b.ports["admin"]):
            raise RuntimeError("x-node: node B holds a tunnel itself (log %s)" % b.logpath)
        return {"server": b, "node_a": a, "agent": agent, "proxy_port": b.ports["proxy"]}

    def remote_requests(self):
        """Requests node B of the x-node path has sent to node A so far."""
        st = self.stacks["xnode"]
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % st["server"].ports["admin"],
                                    timeout=5) as r:
            return metric(r.read().decode(), "piko_upstreams_remote_requests_total",
                          '{node_id="%s"}' % XNODE_IDS[0])

    def setup(self):
        up = self.ports.get()
        self.up_port = up
        self.up_nginx = self.nginx("nginx-upstream", UPSTREAM_SERVER.format(port=up, body=BODY[:-1] + "\\n"))
        px = self.ports.get()
        self.px_port = px
        self.px_nginx = self.nginx("nginx-proxy", PROXY_SERVER.format(port=px, up=up))
        for port, p in ((up, self.up_nginx), (px, self.px_nginx)):
            wait_until("nginx on %d" % port,
                       lambda port=port: http_status("http://127.0.0.1:%d/" % port) == 200, 10, p)
        self.up_worker = self.nginx_worker(self.up_nginx)
        self.px_worker = self.nginx_worker(self.px_nginx)
        self.bulk_port = self.ports.get()
        self.bulk_svc = self.procs.start("bulk-service", [self.tool("pk_bulk"), "serve",
                                                          "--port", str(self.bulk_port)])
        wait_until("bulk service", lambda: self.bulk_client(self.bulk_port, "up", 1, 3)["ok"]
                   == "1", 10, self.bulk_svc)
        for impl in ("piko", "ours"):
            if impl in self.args.paths:
                self.stacks[impl] = self.tunnel_stack(impl, up, self.bulk_port)
        if "xnode" in self.args.paths:
            self.stacks["xnode"] = self.xnode_stack(up)
        if "workers" in self.args.paths:
            self.stacks["workers"] = self.workers_stack(up)
        log("stacks up: nginx upstream :%d, nginx proxy :%d, %s" % (up, px, ", ".join(
            "%s proxy :%d" % (k, v["proxy_port"]) for k, v in self.stacks.items())))

    def http_port(self, path):
        return {"direct": self.up_port, "nginx": self.px_port,
                "piko": self.stacks.get("piko", {}).get("proxy_port"),
                "ours": self.stacks.get("ours", {}).get("proxy_port"),
                "xnode": self.stacks.get("xnode", {}).get("proxy_port"),
                "workers": self.stacks.get("workers", {}).get("proxy_port")}[path]

    def hop_pids(self, path):
        """The processes a request crosses besides the upstream nginx: role -> pid."""
        if path == "direct":
            return {}
        if path == "nginx":
            return {"proxy": self.px_worker}
        st = self.stacks[path]
        pids = {"proxy": st["server"].pid, "agent": st["agent"].pid}
        if path == "workers":
            pids["proxy"] = tuple([st["server"].pid] + children(st["server"].pid))
        if path == "xnode":
            pids["nodea"] = st["node_a"].pid  # "proxy" is node B, where requests enter
        return pids

    # tools -------------------------------------------------------------------------

    def run_tool(self, argv, timeout):
        if self.args.pin_rest:
            argv = ["taskset", "-c", self.args.pin_rest] + list(argv)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        return r

    def bulk_client(self, port, direction, nbytes, timeout):
        r = self.run_tool([self.tool("pk_bulk"), "client", "--port", str(port),
                           "--upload" if direction == "up" else "--download", str(nbytes),
                           "--timeout", str(timeout)], timeout + 10)
        return kv(r.stdout)

    # workloads ---------------------------------------------------------------------

    def wrk(self, port, secs, conns=64):
        argv = ["wrk", "-c%d" % conns, "-t2", "-d%ds" % secs, "-H", "x-piko-endpoint: " + ENDPOINT,
                "http://127.0.0.1:%d/" % port]
        r = self.run_tool(argv, secs + 30)
        out = r.stdout
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        n = re.search(r"(\d+) requests in", out)
        if not m or not n:
            raise RuntimeError("wrk output not understood:\n%s\n%s" % (out, r.stderr))
        errors = 0
        e = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if e:
            errors += int(e.group(1))
        e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if e:
            errors += sum(int(x) for x in e.groups())
        return float(m.group(1)), int(n.group(1)), errors

    def w_tput(self, path, warm):
        port = self.http_port(path)
        if warm:
            self.wrk(port, self.args.warmup)
        for conns, m in ((64, "tput."), (2, "tput2.")):
            pids = dict(self.hop_pids(path))
            pids["upstream"] = self.up_worker
            accepts0 = self.upstream_accepts()
            remote0 = self.remote_requests() if path == "xnode" else 0
            before = {k: cpu_secs(p) for k, p in pids.items()}
            rps, n, errors = self.wrk(port, self.args.tput_secs, conns)
            after = {k: cpu_secs(p) for k, p in pids.items()}
            if path == "xnode":
                # every request must have crossed the link (wrk counts completed ones only)
                crossed = self.remote_requests() - remote0
                if crossed < n:
                    self.notes.append("x-node -c%d: node B sent %d requests to node A, wrk "
                                      "completed %d" % (conns, crossed, n))
            self.record(m + "upconns", path, (self.upstream_accepts() - accepts0) / n * 1000)
            self.record(m + "rps", path, rps)
            self.record(m + "errors", path, errors)
            hop = 0.0
            for k in pids:
                us = (after[k] - before[k]) / n * 1e6
                self.record(m + "cpu.%s" % k, path, us)
                if k != "upstream":
                    hop += us
            if path != "direct":
                self.record(m + "cpu.hop", path, hop)
            log("tput %-6s -c%-2d %9.0f req/s  errors %d  hop CPU %.1f us/req" % (
                path, conns, rps, errors, hop))

    def upstream_accepts(self):
        """Connections the upstream nginx has accepted so far (stub_status)."""
        with urllib.request.urlopen("http://127.0.0.1:%d/_bench_status" % self.up_port,
                                    timeout=5) as r:
            text = r.read().decode()
        return int(text.splitlines()[2].split()[0])

    def w_lat(self, path, warm):
        port = self.http_port(path)
        a = self.args
        for rate in a.rates:
            argv = [self.tool("pk_openloop"), "--port", str(port), "--header",
                    "x-piko-endpoint: " + ENDPOINT, "--rate", str(rate), "--conns", "64",
                    "--duration", str(a.lat_secs), "--warmup", str(a.lat_warmup), "--drain", "5"]
            r = self.run_tool(argv, a.lat_secs + a.lat_warmup + 30)
            d = kv(r.stdout)
            if "p50_us" not in d:
                raise RuntimeError("pk_openloop failed: %s %s" % (r.stdout, r.stderr))
            m = "lat%d." % rate
            for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us", "achieved"):
                self.record(m + k, path, float(d[k]))
            self.record(m + "errors", path, int(d["errors"]) + int(d["lost"]))
            if float(d["achieved"]) < 0.95 * rate:
                self.notes.append("latency at %d req/s: %s answered only %s req/s within the "
                                  "window (saturated; its percentiles are queueing time)"
                                  % (rate, path, d["achieved"]))
            log("lat  %-6s @%d p50 %s p99 %s p99.9 %s max %s us, achieved %s, errors %s lost %s"
                % (path, rate, d["p50_us"], d["p99_us"], d["p999_us"], d["max_us"],
                   d["achieved"], d["errors"], d["lost"]))

    def w_bulkwin(self, path, warm):
        key = path + "-win"
        if key not in self.stacks:
            self.stacks[key] = self.window_stack(path)
        self.w_bulk(path, warm, key, "bulkwin")

    def w_bulk(self, path, warm, key=None, metric="bulk"):
        if path == "direct":
            port, pids = self.bulk_port, {}
        else:
            st = self.stacks[key or path]
            port = st["fwd_port"]
            pids = {"forward": st["forward"].pid, "server": st["server"].pid,
                    "agent": st["agent_tcp"].pid}
        for direction in ("up", "down"):
            before = sum(cpu_secs(p) for p in pids.values())
            d = self.bulk_client(port, direction, self.args.bulk_bytes, self.args.bulk_timeout)
            after = sum(cpu_secs(p) for p in pids.values())
            if d.get("ok") != "1":
                self.notes.append("%s %s %s did not complete: %s" % (metric, path, direction, d))
            self.record("%s.%s" % (metric, direction), path, float(d.get("mib_per_s", 0)))
            moved = int(d.get("bytes", 0))
            if pids and moved:
                self.record("%s.%s.cpu" % (metric, direction), path,
                            (after - before) / (moved / 2**30))
            log("%s %-6s %-4s %s MiB/s (ok=%s), tunnel CPU %.2f s" % (
                metric, path, direction, d.get("mib_per_s"), d.get("ok"), after - before))

    def hold(self, path, port, n, concurrency):
        """pk_upstream hold: n upstreams, `concurrency` handshakes at a time; returns the
        holder (still holding) and its first line as a dict."""
        hold = self.procs.start(path + "-hold", [
            self.tool("pk_upstream"), "hold", "--port", str(port), "--count", str(n),
            "--concurrency", str(concurrency), "--hold", "300", "--timeout", "90"],
            stdout=subprocess.PIPE, text=True)
        line = hold.stdout.readline()  # bounded by the tool's own --timeout 90
        d = kv(line)
        if d.get("established") is None:
            raise RuntimeError("pk_upstream hold: %r (log %s)" % (line, hold.logpath))
        return hold, d

    def w_idle(self, path, warm):
        for i, n in enumerate(self.args.idle_conns):
            self.idle_one(path, n, first=(i == 0))
            self.herd_one(path, n)

    def idle_one(self, path, n, first):
        """A fresh server, then n idle upstreams opened 256 at a time: RSS and the rate."""
        srv = self.server(path, "%s-server-idle%d" % (path, n))
        try:
            time.sleep(1)
            base = rss_kib(srv.pid)
            if first:
                self.record("idle.rss0", path, base / 1024)
            hold, d = self.hold(path, srv.ports["upstream"], n, 256)
            est = int(d["established"])
            time.sleep(self.args.idle_settle)
            rss = rss_kib(srv.pid)
            alive = hold.poll() is None
            self.procs.stop(hold)
            m = "idle%d." % n
            self.record(m + "rss", path, rss / 1024)
            self.record(m + "per_conn", path, (rss - base) / max(est, 1))
            self.record(m + "setup_rate", path, est / float(d["secs"]))
            if est != n or not alive:
                self.notes.append("idle %s: %d of %d upstreams established (holder alive: %s)"
                                  % (path, est, n, alive))
            log("idle %-6s RSS idle %.1f MiB, with %d upstreams %.1f MiB (%.2f KiB each), "
                "opened in %ss" % (path, base / 1024, est, rss / 1024, (rss - base) / max(est, 1),
                                   d["secs"]))
        finally:
            self.procs.stop(srv)

    def herd_one(self, path, n):
        """A thundering herd: a fresh server (as after a restart) and n upstreams dialling all
        at once. Every one must be established; the time until the last is."""
        srv = self.server(path, "%s-server-herd%d" % (path, n))
        try:
            time.sleep(1)
            hold, d = self.hold(path, srv.ports["upstream"], n, n)
            est = int(d["established"])
            self.procs.stop(hold)
            m = "herd%d." % n
            self.record(m + "secs", path, float(d["secs"]))
            self.record(m + "errors", path, n - est)
            log("herd %-6s %d of %d upstreams dialling at once established in %ss"
                % (path, est, n, d["secs"]))
        finally:
            self.procs.stop(srv)

    def w_churn(self, path, warm):
        srv = self.server(path, path + "-server-churn")
        try:
            argv = [self.tool("pk_upstream"), "churn", "--port", str(srv.ports["upstream"]),
                    "--concurrency", "32", "--duration", str(self.args.churn_secs)]
            c0 = cpu_secs(srv.pid)
            r = self.run_tool(argv, self.args.churn_secs + 30)
            c1 = cpu_secs(srv.pid)
            d = kv(r.stdout)
            if "rate" not in d:
                raise RuntimeError("pk_upstream churn failed: %s %s" % (r.stdout, r.stderr))
            if int(d["connects"]):
                self.record("churn.cpu", path, (c1 - c0) / int(d["connects"]) * 1e6)
            self.record("churn.rate", path, float(d["rate"]))
            self.record("churn.p99_us", path, float(d["p99_us"]))
            self.record("churn.errors", path, int(d["errors"]))
            log("churn %-6s %s connects/s, p99 %s us, errors %s" % (path, d["rate"], d["p99_us"],
                                                                   d["errors"]))
        finally:
            self.procs.stop(srv)

    def check_alive(self):
        for p in self.procs.live:
            if p.poll() is not None:
                raise RuntimeError("%s exited with %s (log %s)" % (p.name, p.returncode,
                                                                   p.logpath))

    def run(self):
        a = self.args
        self.setup()
        plans = {
            "tput": (self.w_tput, PATHS),
            "lat": (self.w_lat, PATHS),
            "bulk": (self.w_bulk, ["direct", "piko", "ours"]),
            "bulkwin": (self.w_bulkwin, ["piko", "ours"]),
            "idle": (self.w_idle, ["piko", "ours"]),
            "churn": (self.w_churn, ["piko", "ours"]),
        }
        for run in range(a.runs):
            log("run %d of %d" % (run + 1, a.runs))
            for w in a.only:
                fn, paths = plans[w]
                # alternate the order of the paths between runs
                paths = [p for p in paths if p in a.paths]
                order = paths if run % 2 == 0 else list(reversed(paths))
                for path in order:
                    self.check_alive()
                    fn(path, warm=(run == 0))


# --- the report -------------------------------------------------------------------

# metric, label, higher is better, format
def rows(args):
    r = [
        ("tput.rps", "GET throughput, wrk -c64 -t2 (req/s)", True, "%.0f"),
        ("tput.errors", "  errors during it (non-2xx + socket)", False, "%.0f"),
        ("tput.cpu.hop", "  CPU per request, proxy hop: server(s) + agent (µs)", False, "%.1f"),
        ("tput.cpu.proxy", "  CPU per request, server (x-node: entry node B; workers: all) / "
         "nginx proxy (µs)",
         False, "%.1f"),
        ("tput.cpu.nodea", "  CPU per request, x-node: node A, the tunnel's node (µs)", False,
         "%.1f"),
        ("tput.cpu.agent", "  CPU per request, agent (µs)", False, "%.1f"),
        ("tput.cpu.upstream", "  CPU per request, upstream nginx (µs)", False, "%.1f"),
        ("tput.upconns", "  new connections to nginx per 1000 requests", False, "%.1f"),
        ("tput2.rps", "GET throughput, wrk -c2 -t2 (req/s)", True, "%.0f"),
        ("tput2.errors", "  errors during it (non-2xx + socket)", False, "%.0f"),
        ("tput2.cpu.hop", "  CPU per request, proxy hop: server(s) + agent (µs)", False,
         "%.1f"),
        ("tput2.upconns", "  new connections to nginx per 1000 requests", False, "%.1f"),
    ]
    for rate in args.rates:
        m = "lat%d." % rate
        r += [
            (m + "p50_us", "Latency at %d req/s, open loop, p50 (µs)" % rate, False, "%.0f"),
            (m + "p90_us", "  p90 (µs)", False, "%.0f"),
            (m + "p99_us", "  p99 (µs)", False, "%.0f"),
            (m + "p999_us", "  p99.9 (µs)", False, "%.0f"),
            (m + "max_us", "  max (µs)", False, "%.0f"),
            (m + "achieved", "  answered within the window (req/s)", True, "%.0f"),
            (m + "errors", "  errors + lost", False, "%.0f"),
        ]
    r += [
        ("bulk.up", "Bulk TCP upload, forward→server→agent (MiB/s)", True, "%.0f"),
        ("bulk.up.cpu", "  CPU of forward + server + agent (s per GiB)", False, "%.2f"),
        ("bulk.down", "Bulk TCP download (MiB/s)", True, "%.0f"),
        ("bulk.down.cpu", "  CPU of forward + server + agent (s per GiB)", False, "%.2f"),
        ("bulkwin.up", "Bulk TCP upload, %d MiB windows (--stream.max-window-size) (MiB/s)"
         % (BIG_WINDOW >> 20), True, "%.0f"),
        ("bulkwin.up.cpu", "  CPU of forward + server + agent (s per GiB)", False, "%.2f"),
        ("bulkwin.down", "Bulk TCP download, %d MiB windows (MiB/s)" % (BIG_WINDOW >> 20), True,
         "%.0f"),
        ("bulkwin.down.cpu", "  CPU of forward + server + agent (s per GiB)", False, "%.2f"),
        ("idle.rss0", "Server RSS, idle (MiB)", False, "%.1f"),
    ]
    for n in args.idle_conns:
        m = "idle%d." % n
        r += [
            (m + "rss", "Server RSS with %d idle upstreams (MiB)" % n, False, "%.1f"),
            (m + "per_conn", "  per upstream connection (KiB)", False, "%.2f"),
            (m + "setup_rate", "  upstreams opened per second, 256 at a time", True, "%.0f"),
            ("herd%d.secs" % n, "  herd: %d dialling at once, all established in (s)" % n, False,
             "%.2f"),
            ("herd%d.errors" % n, "  herd: upstreams not established", False, "%.0f"),
        ]
    r += [
        ("churn.rate", "Upstream connects per second, 32 at a time", True, "%.0f"),
        ("churn.p99_us", "  p99 connect→101 (µs)", False, "%.0f"),
        ("churn.cpu", "  server CPU per connect (µs)", False, "%.1f"),
        ("churn.errors", "  errors", False, "%.0f"),
    ]
    return r


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/etc/debian_version") as f:
            deb = f.read().strip()
    except OSError:
        deb = "?"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return "%d cores (%s), %.0f GiB, Debian %s, Linux %s" % (os.cpu_count(), cpu, mem, deb,
                                                              platform.release())


def versions(args):
    def out(argv):
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=10)
            return r.stdout.strip().splitlines()[0] if r.stdout.strip() else "?"
        except Exception:
            return "?"
    rev = out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    return {
        "nginx": out(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": out(["wrk", "-v"]).split(" [")[0],
        "piko": piko_pin(),
        "ours": "%s%s" % (rev, " + uncommitted changes" if dirty and dirty != "?" else ""),
    }


def piko_pin():
    try:
        with open(os.path.join(ROOT, "tests", "interop", "gopeers", "go.mod")) as f:
            m = re.search(r"github.com/andydunstall/piko (v\S+)", f.read())
            return m.group(1) if m else "?"
    except OSError:
        return "?"


def fmt(v, f):
    return "–" if v is None else f % v


def ratio_text(metric, x, y):
    if x is None or y is None or metric.endswith(("errors", "upconns")):
        return ""
    if y == 0:
        return "–" if x == 0 else "∞"
    return "%.2f" % (x / y)


def xnode_summary(b, args, med):
    """Cross-node ÷ same-node, from the medians and run by run (both paths in every run)."""
    lines = []
    pairs = []
    for rate in args.rates:
        for q in ("p50", "p99"):
            pairs.append(("lat%d.%s_us" % (rate, q), "%s at %d req/s" % (q, rate)))
    pairs += [("tput.rps", "wrk -c64 req/s"), ("tput.cpu.hop", "CPU per request at -c64")]
    for metric, what in pairs:
        x, y = med.get((metric, "xnode")), med.get((metric, "ours"))
        if x is None or y is None or y == 0:
            continue
        per_run = ["%.2f" % (u / v) for u, v in zip(b.results[(metric, "xnode")],
                                                     b.results[(metric, "ours")]) if v]
        line = "- %s: x-node %s, same-node %s → **%.2f×** (per run: %s)" % (
            what, "%.0f" % x if x >= 100 else "%.1f" % x, "%.0f" % y if y >= 100 else "%.1f" % y,
            x / y, ", ".join(per_run))
        if metric.endswith(".p99_us") and metric.startswith("lat%d." % args.rates[0]):
            line += "; target ≤ 1.3×: **%s**" % ("met" if x / y <= 1.3 else "not met")
        lines.append(line)
    if lines:
        lines = ["Cross-node ÷ same-node (ours x-node ÷ ours, measured in the same run; for "
                 "latency and CPU, less is better):", ""] + lines + [""]
    return lines


def report(b, args, started, elapsed):
    med = {}
    for (metric, path), vals in b.results.items():
        med[(metric, path)] = statistics.median(vals)
    lines = []
    v = versions(args)
    lines.append("Run %s, %d run(s) per figure, median shown%s; took %.0f s." % (
        started.strftime("%Y-%m-%d %H:%M %Z").strip(), args.runs,
        " (--quick: short durations)" if args.quick else "", elapsed))
    lines.append("Machine: %s; load average %s before the run, %s after it." % (
        machine(), args.load_before, " ".join(open("/proc/loadavg").read().split()[:3])))
    lines.append("Versions: nginx %s, %s, Piko %s (Go, hack/peers.sh), ours %s." % (v["nginx"], v["wrk"],
                                                               v["piko"], v["ours"]))
    if "workers" in args.paths:
        lines.append("Workers path: --workers %d%s." % (args.workers, (
            "; servers pinned to CPUs %s (ours and Piko: CPU %d), everything else to %s" % (
                args.pin_server, args.server_cpu_list[0], args.pin_rest))
            if args.pin_server else ", nothing pinned"))
    lines.append("")
    # a column for every measured path, a ratio column for every pair both measured
    measured = {path for (_, path) in b.results}
    cols = [p for p in PATHS if p in measured]
    ratios = [(x, y, h) for x, y, h in RATIOS if x in measured and y in measured]
    lines.append("| metric | %s |" % " | ".join([LABELS[p] for p in cols] +
                                              [h for _, _, h in ratios]))
    lines.append("|---|%s" % ("---:|" * (len(cols) + len(ratios))))
    for metric, label, higher, f in rows(args):
        vals = {p: med.get((metric, p)) for p in cols}
        if all(x is None for x in vals.values()):
            continue
        arrow = " ↑" if higher else " ↓"
        lines.append("| %s%s | %s |" % (label, arrow, " | ".join(
            [fmt(vals[p], f) for p in cols] +
            [ratio_text(metric, vals[x], vals[y]) for x, y, _ in ratios])))
    lines.append("")
    lines.append("↑ higher is better, ↓ lower is better; a ratio column a/b is the first path "
                 "divided by the second (x-node/ours: cross-node ÷ same-node).")
    lines.append("")
    lines += xnode_summary(b, args, med)
    lines.append("Per-run values (path: run 1, run 2, ...):")
    lines.append("")
    lines.append("```")
    for metric, label, higher, f in rows(args):
        parts = []
        for p in PATHS:
            vals = b.results.get((metric, p))
            if vals:
                parts.append("%s: %s" % (p, ", ".join(f % x for x in vals)))
        if parts:
            lines.append("%-18s %s" % (metric, "; ".join(parts)))
    lines.append("```")
    if b.notes:
        lines.append("")
        lines.append("Notes from this run:")
        lines.append("")
        for n in b.notes:
            lines.append("- " + n)
    return "\n".join(lines) + "\n"


# Descriptors the server and the holder need beside their upstreams (listeners, logs, the
# loop's own, a few spare).
FD_SLACK = 200
IDLE_NOTES = []


def idle_counts(spec):
    """The idle counts to measure, each lowered (to a multiple of 500) to what one process's
    descriptor limit allows: a server holds one descriptor per upstream, and the holder too."""
    limit = os.sysconf("SC_OPEN_MAX")
    out = []
    for n in [int(c) for c in spec.split(",") if c]:
        if n + FD_SLACK > limit:
            m = (limit - FD_SLACK) // 500 * 500
            IDLE_NOTES.append("%d idle upstreams need `ulimit -n` >= %d; this process may open "
                              "%d descriptors (raising the hard limit needs CAP_SYS_RESOURCE), "
                              "so %d were measured instead" % (n, n + FD_SLACK, limit, m))
            n = m
        if n > 0 and n not in out:
            out.append(n)
    return out


def cpu_list(spec):
    """taskset's list syntax ("0-1,4") as CPU numbers."""
    cpus = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--piko", help="the real Piko binary (hack/peers.sh); needed for the piko "
                    "path")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="our build directory: the binary DIR/bin/piko, the tools DIR/bench/ "
                    "(default build/)")
    ap.add_argument("--bin", help="our piko binary (default: <--build>/bin/piko)")
    ap.add_argument("--quick", action="store_true", help="short durations, for development")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rates", default="1000,5000",
                    help="comma list of open-loop request rates (req/s)")
    ap.add_argument("--only", default=",".join(WORKLOADS),
                    help="comma list of workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--paths", default=",".join(PATHS),
                    help="comma list of paths to measure (development): " + ",".join(PATHS))
    ap.add_argument("--workers", type=int, default=0,
                    help="--workers of the workers path (default: the CPUs of --pin-server, "
                    "else 2)")
    ap.add_argument("--pin-server", help="taskset CPU list for the servers (e.g. 0-1)")
    ap.add_argument("--pin-rest", help="taskset CPU list for every other process (e.g. 2-3)")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "latest.md"))
    ap.add_argument("--idle-conns", default="10000,100000",
                    help="comma list of idle upstream counts (idle workload); a count that "
                    "`ulimit -n` cannot hold is lowered to the most it can, with a note")
    args = ap.parse_args()
    args.only = [w for w in args.only.split(",") if w]
    args.paths = [p for p in args.paths.split(",") if p]
    args.rates = [int(r) for r in args.rates.split(",") if r]
    for w in args.only:
        if w not in WORKLOADS:
            ap.error("unknown workload %s" % w)
    for p in args.paths:
        if p not in PATHS:
            ap.error("unknown path %s" % p)
    if "piko" in args.paths and not args.piko:
        ap.error("the piko path needs --piko")
    if bool(args.pin_server) != bool(args.pin_rest):
        ap.error("--pin-server and --pin-rest go together")
    args.server_cpu_list = cpu_list(args.pin_server) if args.pin_server else []
    if not args.workers:
        args.workers = len(args.server_cpu_list) or 2
    args.build = os.path.abspath(args.build)
    if args.quick:
        args.tput_secs, args.warmup, args.lat_secs, args.lat_warmup = 3, 1, 3, 1
        args.bulk_bytes, args.churn_secs, args.idle_settle = 256 << 20, 2, 2
    else:
        args.tput_secs, args.warmup, args.lat_secs, args.lat_warmup = 10, 3, 10, 2
        args.bulk_bytes, args.churn_secs, args.idle_settle = 1 << 30, 5, 5
    args.bulk_timeout = 60
    args.idle_conns = idle_counts(args.idle_conns)

    started = datetime.datetime.now().astimezone()
    args.load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="pk-bench-")
    b = Bench(args, tmp)
    atexit.register(b.procs.stop_all)

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        b.run()
    except SystemExit:  # a signal: stop everything, keep nothing
        b.procs.stop_all()
        subprocess.run(["rm", "-rf", tmp])
        raise
    except Exception as e:
        log("FAILED: %s (logs kept in %s)" % (e, tmp))
        b.procs.stop_all()
        return 1
    b.procs.stop_all()
    text = report(b, args, started, time.monotonic() - t0)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    log("table written to %s" % args.out)
    subprocess.run(["rm", "-rf", tmp])
    return 0


if __name__ == "__main__":
    sys.exit(main())
