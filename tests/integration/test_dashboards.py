"""Dashboards: every metric a Grafana dashboard queries exists on a live node.

Names come from the dashboards themselves: Piko's (monitoring/dashboards/*.json
in Piko's Go module source, which hack/peers.sh downloads) and ours
(monitoring/dashboards/*.json here). Piko's gossip series map to our node-link
series through the table in docs/metrics.md (read here, so the doc and the
test cannot disagree). A two-node cluster with an agent on each node serves
local and cross-node requests; then each name must have a sample on every
node (piko_agent_* and our agent dashboard: on the agent's /metrics), and
Piko's metrics must have Piko's type, label names and buckets. A missing
series fails the test.
"""

import glob
import json
import os
import re
import subprocess
import time
import unittest

from cluster_util import ClusterCase
from harness import CONFIG, T, free_port, need_peer, request, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUR_DASHBOARDS = os.path.join(ROOT, "monitoring", "dashboards")
METRICS_DOC = os.path.join(ROOT, "docs", "metrics.md")
PIKO_MODULE = "github.com/andydunstall/piko@v0.10.0"

DEFAULT_BUCKETS = [.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10]
SIZE_BUCKETS = [256 * 4 ** k for k in range(8)]

# Piko's metrics (reference §7.3): type, label names, histogram buckets. Every
# Piko-named metric a dashboard queries must be here, so nothing goes
# unchecked; with the real Piko given (--piko-peer), this table is checked
# against its /metrics too.
PIKO_SPEC = {
    "piko_proxy_requests_in_flight": ("gauge", [], None),
    "piko_proxy_requests_total": ("counter", ["method", "status"], None),
    "piko_proxy_request_latency_seconds": ("histogram", ["method", "status"], DEFAULT_BUCKETS),
    "piko_proxy_request_size_bytes": ("histogram", [], SIZE_BUCKETS),
    "piko_proxy_response_size_bytes": ("histogram", [], SIZE_BUCKETS),
    "piko_upstreams_connected_upstreams": ("gauge", [], None),
    "piko_upstreams_registered_endpoints": ("gauge", [], None),
    "piko_upstreams_upstream_requests_total": ("counter", [], None),
    "piko_upstreams_remote_requests_total": ("counter", ["node_id"], None),
    "piko_cluster_nodes": ("gauge", ["status"], None),
}
PIKO_AGENT_SPEC = {
    "piko_agent_requests_in_flight": ("gauge", ["endpoint"], None),
    "piko_agent_requests_total": ("counter", ["endpoint", "method", "status"], None),
    "piko_agent_request_latency_seconds": ("histogram", ["endpoint", "method", "status"],
                                           DEFAULT_BUCKETS),
    "piko_agent_request_size_bytes": ("histogram", ["endpoint"], SIZE_BUCKETS),
    "piko_agent_response_size_bytes": ("histogram", ["endpoint"], SIZE_BUCKETS),
}

# PromQL words that are not metric names (functions are recognised by their
# "(", these by name).
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "inf", "nan"}


# --- dashboards -------------------------------------------------------------------------


def exprs_of(doc):
    """Every query expression in a Grafana dashboard (panels, rows' nested
    panels, templating queries)."""
    out = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr" and isinstance(v, str):
                    out.append(v)
                elif k == "query" and isinstance(v, str) and "(" in v:
                    out.append(v)  # label_values(metric, label) and the like
                else:
                    walk(v)
        elif isinstance(o, list):
            for x in o:
                walk(x)
    walk(doc)
    return out


def selectors_in(expr):
    """[(metric name, {label: value})] for each metric an expression reads
    (only = matchers are kept: they say which series must exist)."""
    e = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    out = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{([^}]*)\})?(\s*\()?", e):
        name, _, matchers, call = m.groups()
        if call or name.lower() in PROMQL_WORDS or name.startswith("$"):
            continue
        start = m.start()
        if start > 0 and e[start - 1] in "$.0123456789":
            continue  # a Grafana variable or part of a number
        want = dict(re.findall(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"', matchers or ""))
        out.append((name, want))
    return out


def dashboard_selectors(path):
    with open(path) as f:
        doc = json.load(f)
    sels = []
    for e in exprs_of(doc):
        sels.extend(selectors_in(e))
    return sels


def find_piko_dashboards():
    """Piko's monitoring/dashboards in the Go module cache of hack/peers.sh:
    $PIKO_MODULE_DIR, else next to the real Piko binary given (its cache
    holds gomod/), else $PK_PEERS_DIR or ~/.cache/pikoc."""
    candidates = []
    if os.environ.get("PIKO_MODULE_DIR"):
        candidates.append(os.environ["PIKO_MODULE_DIR"])
    caches = []
    if CONFIG.piko_peer:
        caches.append(os.path.dirname(os.path.dirname(CONFIG.piko_peer)))
    caches.append(os.environ.get("PK_PEERS_DIR") or os.path.expanduser("~/.cache/pikoc"))
    for c in caches:
        candidates.append(os.path.join(c, "gomod", PIKO_MODULE))
    for c in candidates:
        files = sorted(glob.glob(os.path.join(c, "monitoring", "dashboards", "*.json")))
        if files:
            return files
    msg = "Piko's dashboards not found in %r (run hack/peers.sh)" % candidates
    if CONFIG.require_peers:
        raise AssertionError(msg)
    raise unittest.SkipTest(msg)


def gossip_map():
    """docs/metrics.md's table: {piko_gossip_x: (our name, {label: value})}."""
    with open(METRICS_DOC) as f:
        text = f.read()
    out = {}
    for m in re.finditer(r"^\|\s*`(piko_gossip_\w+)`\s*\|\s*`([^`]+)`\s*\|", text, re.M):
        sels = selectors_in(m.group(2))
        if len(sels) != 1:
            raise AssertionError("docs/metrics.md: %r is not one selector" % m.group(2))
        out[m.group(1)] = sels[0]
    if not out:
        raise AssertionError("docs/metrics.md: no gossip mapping table")
    return out


# --- exposition ---------------------------------------------------------------------------


class Exposition:
    """A parsed /metrics: families with type, and samples."""

    def __init__(self, text, source):
        self.source = source
        self.text = text
        self.types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        self.samples = []  # (name, {labels}, value)
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
            if not m:
                raise AssertionError("%s: bad exposition line %r" % (source, line))
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            self.samples.append((m.group(1), labels, float(m.group(3))))

    def family(self, name):
        """The metric family of a sample name (histograms: _bucket, _sum,
        _count belong to the base name)."""
        if name in self.types:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        return None

    def has_sample(self, name, want):
        fam = self.family(name)
        if fam is None:
            return False
        names = {name} if name != fam else (
            {fam + s for s in ("_bucket", "_sum", "_count")}
            if self.types[fam] == "histogram" else {fam})
        return any(n in names and all(l.get(k) == v for k, v in want.items())
                   for n, l, _ in self.samples)

    def label_sets(self, fam):
        out = set()
        for n, l, _ in self.samples:
            if n in (fam, fam + "_bucket", fam + "_sum", fam + "_count"):
                out.add(tuple(sorted(k for k in l if k != "le")))
        return out

    def buckets(self, fam):
        """The le bounds of each series of a histogram, as sorted lists."""
        per = {}
        for n, l, _ in self.samples:
            if n == fam + "_bucket":
                key = tuple(sorted((k, v) for k, v in l.items() if k != "le"))
                per.setdefault(key, []).append(float(l["le"]))
        return [sorted(v) for v in per.values()]

    def check_spec(self, fam, spec, test):
        typ, labels, buckets = spec
        test.assertEqual(self.types.get(fam), typ, "%s: TYPE of %s" % (self.source, fam))
        sets = self.label_sets(fam)
        test.assertTrue(sets, "%s: %s has no sample" % (self.source, fam))
        test.assertEqual(sets, {tuple(sorted(labels))},
                         "%s: label names of %s" % (self.source, fam))
        if buckets is not None:
            for got in self.buckets(fam):
                test.assertEqual(got, [float(b) for b in buckets] + [float("inf")],
                                 "%s: buckets of %s" % (self.source, fam))


def scrape(port, source, headers=None):
    r = request(port, "GET", "/metrics", headers=headers, timeout=T(5))
    if r.status != 200:
        raise AssertionError("GET /metrics on %s: %r" % (source, r))
    return Exposition(r.body.decode("utf-8", "replace"), source)


# --- the test -----------------------------------------------------------------------------


class DashboardsTest(ClusterCase):
    def traffic_cluster(self):
        """Two nodes; an agent on each (the one on A with its metrics
        server); requests entering both nodes for both endpoints, so every
        node has local, forwarded-out and forwarded-in traffic. Returns
        (server expositions, agent exposition); self.nodes: the servers."""
        a, b = self.start_cluster(2)
        up = self.upstream()
        admin = free_port()
        self.agent(a, "ep-a", up.addr, "--server.enabled", "--server.bind-addr",
                   "127.0.0.1:%d" % admin)
        self.agent(b, "ep-b", up.addr)
        self.wait_remote_endpoint([b], a, "ep-a")
        self.wait_remote_endpoint([a], b, "ep-b")
        for s in (a, b):
            for ep in ("ep-a", "ep-b"):
                for _ in range(3):
                    r = s.proxy(ep, "GET", "/")
                    self.assertEqual(r.status, 200, "GET %s through %s: %r" % (ep, s.name, r))
                r = s.proxy(ep, "POST", "/echo", body=b"x" * 5000)
                self.assertEqual(r.status, 200, "POST %s through %s: %r" % (ep, s.name, r))
            # a refusal has a status too
            r = s.proxy("no-such-endpoint", "GET", "/")
            self.assertEqual(r.status, 502, r)
        # The agent's counters move when its response is written: wait
        # until all twelve requests to ep-a are in.
        def agent_done():
            e = scrape(admin, "agent")
            return sum(v for n, l, v in e.samples
                       if n == "piko_agent_requests_total") >= 8
        wait_for(agent_done, T(10), what="the agent's request counters")
        servers = [scrape(s.admin_port, s.name, s.admin_headers) for s in (a, b)]
        self.nodes = (a, b)
        return servers, scrape(admin, "agent")

    def check_present(self, dash, sels, expos):
        missing = []
        for name, want in sels:
            for e in expos:
                if not e.has_sample(name, want):
                    missing.append("%s%s on %s" % (name, want or "", e.source))
        self.assertFalse(missing, "%s: series without a sample: %s" % (dash, missing))

    def test_piko_dashboards_series(self):
        """Piko's cluster/proxy dashboards: each series, with Piko's type,
        labels and buckets; gossip: each mapped to a link series that has a
        sample; no piko_gossip_* or go_* series of ours."""
        files = find_piko_dashboards()
        mapping = gossip_map()
        servers, agent = self.traffic_cluster()
        seen = set()
        for path in files:
            dash = "Piko's " + os.path.basename(path)
            sels = dashboard_selectors(path)
            self.assertTrue(sels, "%s: no metric found in its queries" % dash)
            ours = []
            for name, want in sels:
                if name.startswith("piko_gossip_"):
                    self.assertIn(name, mapping, "%s: %s has no row in docs/metrics.md"
                                  % (dash, name))
                    ours.append(mapping[name])
                else:
                    ours.append((name, want))
            for name, want in ours:
                expos = [agent] if name.startswith("piko_agent_") else servers
                self.check_present(dash, [(name, want)], expos)
                for e in expos:
                    fam = e.family(name)
                    if fam.startswith("piko_link_") or fam == "piko_links":
                        continue  # ours, checked by their presence
                    spec = PIKO_SPEC.get(fam) or PIKO_AGENT_SPEC.get(fam)
                    self.assertIsNotNone(spec, "%s queries %s, which has no expected type, "
                                         "labels and buckets in PIKO_SPEC" % (dash, fam))
                    e.check_spec(fam, spec, self)
                    seen.add(fam)
        self.assertTrue(seen, "no Piko-named metric checked")
        # The rest of §7.3, which the dashboards do not query.
        for fam, spec in PIKO_SPEC.items():
            for e in servers:
                e.check_spec(fam, spec, self)
        for fam, spec in PIKO_AGENT_SPEC.items():
            agent.check_spec(fam, spec, self)
        # Every row of the table names a series that exists.
        self.check_present("docs/metrics.md", list(mapping.values()), servers)
        for e in servers + [agent]:
            fake = sorted({n for n in e.types if n.startswith(("piko_gossip_", "go_"))})
            self.assertEqual(fake, [], "%s exposes series of a mechanism it has not" % e.source)

    def test_our_dashboards_series(self):
        """Our dashboards (monitoring/dashboards): each series has a sample
        (agent.json against the agent, the others against every node), and
        Piko-named ones have Piko's type, labels and buckets."""
        files = sorted(glob.glob(os.path.join(OUR_DASHBOARDS, "*.json")))
        self.assertEqual(sorted(os.path.basename(f) for f in files),
                         ["agent.json", "cluster.json", "links.json", "proxy.json"])
        servers, agent = self.traffic_cluster()
        link_names = set()
        for path in files:
            dash = "monitoring/dashboards/" + os.path.basename(path)
            with open(path) as f:
                doc = json.load(f)
            self.assertEqual([i["name"] for i in doc.get("__inputs", [])], ["DS_PROMETHEUS"],
                             dash)
            for p in doc["panels"]:
                if p["type"] != "row":
                    self.assertEqual(p["datasource"]["uid"], "${DS_PROMETHEUS}", dash)
            sels = dashboard_selectors(path)
            self.assertTrue(sels, "%s: no metric found in its queries" % dash)
            expos = [agent] if os.path.basename(path) == "agent.json" else servers
            self.check_present(dash, sels, expos)
            for name, _ in sels:
                self.assertFalse(name.startswith(("piko_gossip_", "go_")), (dash, name))
                for e in expos:
                    fam = e.family(name)
                    spec = PIKO_SPEC.get(fam) or PIKO_AGENT_SPEC.get(fam)
                    if spec:
                        e.check_spec(fam, spec, self)
                    if fam.startswith("piko_link"):
                        link_names.add(fam)
        # links.json shows every link series we have.
        ours = {n for n in servers[0].types if n.startswith("piko_link")}
        self.assertEqual(ours - link_names, set(), "link series no dashboard shows")
        # The link series count what happened: the request forwarded in each
        # direction crossed a link; both nodes see one member, up.
        for e in servers:
            for d in ("inbound", "outbound"):
                fwd = [v for n, l, v in e.samples
                       if n == "piko_link_streams_total" and l.get("direction") == d]
                self.assertEqual(len(fwd), 1, e.source)
                self.assertGreaterEqual(fwd[0], 4, "%s: %s streams" % (e.source, d))
            up = [(l, v) for n, l, v in e.samples if n == "piko_link_up"]
            self.assertEqual(len(up), 1, "%s: %r" % (e.source, up))
            self.assertEqual(up[0][1], 1.0, e.source)
            self.assertIn(up[0][0]["node_id"], ("node-a", "node-b"), e.source)
            self.assertGreater([v for n, l, v in e.samples
                                if n == "process_resident_memory_bytes"][0], 1e6)
        # Open link streams are proxied ones: none once the requests ended
        # (the control stream does not count).
        def open_streams(s):
            return [v for n, l, v in scrape(s.admin_port, s.name, s.admin_headers).samples
                    if n == "piko_link_open_streams"]
        for s in self.nodes:
            wait_for(lambda: open_streams(s) == [0.0], T(10),
                     what="%s: piko_link_open_streams 0" % s.name)

    def test_spec_matches_real_piko(self):
        """PIKO_SPEC is what the real Piko exposes (type, labels, buckets) for
        every metric it shows after a request (run.py --piko-peer)."""
        piko = need_peer(CONFIG.piko_peer, "the real Piko (--piko-peer)")
        ports = [free_port() for _ in range(4)]
        names = ("proxy", "upstream", "admin", "cluster.gossip")
        argv = [piko, "server"] + sum(
            (["--%s.bind-addr" % n, "127.0.0.1:%d" % p] for n, p in zip(names, ports)), [])
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)

        def up():
            try:
                return request(ports[2], "GET", "/ready", timeout=T(2)).status == 200
            except OSError:
                return False
        wait_for(up, T(15), what="the real Piko's /ready")
        request(ports[0], "GET", "/", headers={"x-piko-endpoint": "nope"}, timeout=T(5))
        time.sleep(0.1)
        e = scrape(ports[2], "the real Piko")
        checked = []
        for fam, spec in PIKO_SPEC.items():
            if e.label_sets(fam):
                e.check_spec(fam, spec, self)
                checked.append(fam)
        # all but the cross-node counter show on a lone node after a request
        self.assertEqual(sorted(set(PIKO_SPEC) - set(checked)),
                         ["piko_upstreams_remote_requests_total"])


if __name__ == "__main__":
    unittest.main()
