"""`piko server status ...` (protocol reference §4.3, §7.2) against a scripted
admin port: an in-test HTTP server that answers the status API's JSON shapes
and records every request (path, query, headers), so the tests check both
what the CLI asks and what it prints. The YAML output is parsed back with
PyYAML: quoting must keep "127.0.0.1:8000", "null" or "007" strings.

Checks against a real `piko server` belong to the server's status API tests."""

import http.server
import json
import os
import subprocess
import threading
import urllib.parse

import yaml

from harness import CONFIG, T, PikoTestCase, free_port


class FakeAdmin:
    """An admin port on 127.0.0.1: routes maps a path (without query) to
    (status, body); anything else is a 404. requests gets (raw path, parsed
    query, headers) of each request."""

    def __init__(self, routes, tls_context=None):
        self.routes = dict(routes)
        self.requests = []
        admin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                raw_path, _, query = self.path.partition("?")
                admin.requests.append((raw_path, urllib.parse.parse_qs(query),
                                       dict(self.headers.items())))
                status, body = admin.routes.get(raw_path, (404, "404 page not found"))
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        if tls_context:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


NODES = [
    {"id": "n2", "status": "unreachable", "proxy_addr": "127.0.0.1:8010",
     "admin_addr": "127.0.0.1:8012", "endpoints": 0, "upstreams": 0},
    {"id": "n1", "status": "active", "proxy_addr": "127.0.0.1:8000",
     "admin_addr": "127.0.0.1:8002", "endpoints": 2, "upstreams": 3},
    {"id": "null", "status": "left", "proxy_addr": "", "admin_addr": "10.0.0.1:8002",
     "endpoints": 1, "upstreams": 1},
    {"id": "007", "status": "active", "proxy_addr": "node-7:8000", "admin_addr": "node-7:8002",
     "endpoints": 5, "upstreams": 8},
]
NODE_KEYS = ["id", "status", "proxy_addr", "admin_addr", "endpoints", "upstreams"]


class StatusCliTest(PikoTestCase):

    def admin(self, routes, **kw):
        a = FakeAdmin(routes, **kw)
        self.addCleanup(a.close)
        return a

    def status(self, *args, url=None, code=0):
        """Runs `piko server status args...`; returns (stdout, stderr) after
        checking the exit code."""
        argv = [CONFIG.bin, "server", "status"] + list(args)
        if url:
            argv += ["--server.url", url]
        r = subprocess.run(argv, capture_output=True, timeout=T(30))
        out, err = r.stdout.decode(), r.stderr.decode()
        self.assertEqual(r.returncode, code, "%s: stdout %r stderr %r" % (argv, out, err))
        return out, err

    def keys_in_order(self, text, keys):
        """The lines of text that start one of keys (after '- ' or indent)."""
        seen = []
        for line in text.splitlines():
            k = line.lstrip("- ").split(":", 1)[0].strip("'\"")
            if k in keys:
                seen.append(k)
        return seen

    # --- upstream endpoints -------------------------------------------------

    def test_upstream_endpoints(self):
        eps = {"b-ep": 2, "a-ep": 1, "3000": 4, "null": 1, "true": 2, "x: y": 1}
        a = self.admin({"/status/upstream/endpoints": (200, eps)})
        out, err = self.status("upstream", "endpoints", url=a.url)
        self.assertEqual(yaml.safe_load(out), eps)
        self.assertEqual(err, "")
        # sorted by key (byte order, as Go sorts map keys)
        order = [yaml.safe_load(line)
                 for line in out.splitlines()]
        self.assertEqual([list(d)[0] for d in order], sorted(eps))
        self.assertEqual([r[0] for r in a.requests], ["/status/upstream/endpoints"])
        self.assertEqual(a.requests[0][1], {})
        self.assertNotIn("Authorization", a.requests[0][2])

    def test_upstream_endpoints_empty(self):
        a = self.admin({"/status/upstream/endpoints": (200, {})})
        out, _ = self.status("upstream", "endpoints", url=a.url)
        self.assertEqual(out, "{}\n")

    # --- cluster nodes --------------------------------------------------------

    def test_cluster_nodes_sorted_by_id(self):
        a = self.admin({"/status/cluster/nodes": (200, NODES)})
        out, _ = self.status("cluster", "nodes", url=a.url)
        doc = yaml.safe_load(out)
        self.assertEqual(doc, {"nodes": sorted(NODES, key=lambda n: n["id"])})
        self.assertEqual([n["id"] for n in doc["nodes"]], ["007", "n1", "n2", "null"])
        # Piko's struct order, not alphabetical
        self.assertEqual(self.keys_in_order(out, NODE_KEYS), NODE_KEYS * len(NODES))
        self.assertTrue(out.startswith("nodes:\n"), out)

    def test_cluster_nodes_status_filter(self):
        a = self.admin({"/status/cluster/nodes": (200, NODES)})
        out, _ = self.status("cluster", "nodes", "--status", "active", url=a.url)
        self.assertEqual([n["id"] for n in yaml.safe_load(out)["nodes"]], ["007", "n1"])
        out, _ = self.status("cluster", "nodes", "--status=left", url=a.url)
        self.assertEqual(yaml.safe_load(out)["nodes"], [NODES[2]])
        a.routes["/status/cluster/nodes"] = (200, NODES[:1])
        out, _ = self.status("cluster", "nodes", "--status", "active", url=a.url)
        self.assertEqual(yaml.safe_load(out), {"nodes": []})
        # the filter is the CLI's: the server is asked for every node
        self.assertEqual({r[1].get("status") for r in a.requests}, {None})

    def test_bad_status_value_and_misplaced_status(self):
        _, err = self.status("cluster", "nodes", "--status", "gone", code=1)
        self.assertIn("config: invalid status: gone", err)
        _, err = self.status("upstream", "endpoints", "--status", "active", code=1)
        self.assertIn("--status applies only to 'cluster nodes'", err)

    # --- cluster node -----------------------------------------------------------

    def test_cluster_node_local(self):
        node = {"id": "n1", "status": "active", "proxy_addr": "127.0.0.1:8000",
                "admin_addr": "127.0.0.1:8002", "endpoints": {"b": 1, "a": 2, "1.5": 1}}
        a = self.admin({"/status/cluster/nodes/local": (200, node)})
        out, _ = self.status("cluster", "node", "local", url=a.url)
        self.assertEqual(yaml.safe_load(out), node)
        self.assertEqual(self.keys_in_order(out, NODE_KEYS[:5]), NODE_KEYS[:5])
        self.assertEqual(self.keys_in_order(out, ["1.5", "a", "b"]), ["1.5", "a", "b"])

    def test_cluster_node_without_endpoints(self):
        node = {"id": "n2", "status": "left", "proxy_addr": "h:1", "admin_addr": "h:2",
                "endpoints": None}
        a = self.admin({"/status/cluster/nodes/n2": (200, node),
                        "/status/cluster/nodes/n3": (200, dict(node, id="n3", endpoints={}))})
        out, _ = self.status("cluster", "node", "n2", url=a.url)
        self.assertEqual(yaml.safe_load(out), node)
        self.assertIn("endpoints: null\n", out)
        out, _ = self.status("cluster", "node", "n3", url=a.url)
        self.assertEqual(yaml.safe_load(out)["endpoints"], {})
        self.assertIn("endpoints: {}\n", out)

    def test_cluster_node_id_is_path_escaped(self):
        a = self.admin({})
        for node_id, path in [("a b", "a%20b"), ("x/y", "x%2Fy"), ("..", "%2E%2E"),
                              ("n?1#2", "n%3F1%232"), ("é", "%C3%A9")]:
            with self.subTest(node_id=node_id):
                body = {"id": node_id, "status": "active", "proxy_addr": "",
                        "admin_addr": "", "endpoints": None}
                a.routes["/status/cluster/nodes/" + path] = (200, body)
                out, _ = self.status("cluster", "node", node_id, url=a.url)
                self.assertEqual(a.requests[-1][0], "/status/cluster/nodes/" + path)
                self.assertEqual(yaml.safe_load(out), body)

    def test_unknown_node_is_a_404(self):
        a = self.admin({})
        out, err = self.status("cluster", "node", "nope", url=a.url, code=1)
        self.assertEqual(out, "")
        self.assertEqual(err, "request: bad status: 404\n")

    # --- persistent flags and config ------------------------------------------

    def test_forward_adds_the_query(self):
        a = self.admin({"/status/cluster/nodes": (200, NODES)})
        self.status("cluster", "nodes", "--forward", "n2", url=a.url)
        self.assertEqual(a.requests[-1][1], {"forward": ["n2"]})
        self.status("cluster", "nodes", "--forward", "a b&c=d", url=a.url)
        self.assertEqual(a.requests[-1][0], "/status/cluster/nodes")
        self.assertEqual(a.requests[-1][1], {"forward": ["a b&c=d"]})

    def test_server_url_path_is_kept(self):
        a = self.admin({"/admin/status/upstream/endpoints": (200, {"e": 1})})
        out, _ = self.status("upstream", "endpoints", url=a.url + "/admin/")
        self.assertEqual(yaml.safe_load(out), {"e": 1})

    def test_token_is_sent_as_bearer(self):
        a = self.admin({"/status/upstream/endpoints": (200, {})})
        self.status("upstream", "endpoints", "--server.token", "s3cret", url=a.url)
        self.assertEqual(a.requests[-1][2].get("Authorization"), "Bearer s3cret")

    def test_config_file(self):
        a = self.admin({"/status/upstream/endpoints": (200, {"e": 3})})
        path = self.write_file("status.yaml",
                               "server:\n  url: ${ADMIN_URL}\n  token: tok\nforward: n9\n"
                               "log:\n  level: debug\n")
        env = dict(os.environ, ADMIN_URL=a.url)
        r = subprocess.run([CONFIG.bin, "server", "status", "upstream", "endpoints",
                            "--config.path", path, "--config.expand-env"],
                           capture_output=True, timeout=T(30), env=env)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(yaml.safe_load(r.stdout), {"e": 3})
        self.assertEqual(a.requests[-1][1], {"forward": ["n9"]})
        self.assertEqual(a.requests[-1][2].get("Authorization"), "Bearer tok")
        # --log.level debug logs the request URL as a JSON line on stderr
        self.assertIn('"url":"%s/status/upstream/endpoints?forward=n9"' % a.url,
                      r.stderr.decode())
        bad = self.write_file("bad.yaml", "status: active\n")
        _, err = self.status("cluster", "nodes", "--config.path", bad, code=1)
        self.assertTrue(err.startswith("config: "), err)
        self.assertIn("unknown key: status", err)

    # --- failures -------------------------------------------------------------

    def test_bad_status(self):
        a = self.admin({"/status/cluster/nodes": (503, "")})
        out, err = self.status("cluster", "nodes", url=a.url, code=1)
        self.assertEqual(out, "")
        self.assertEqual(err, "request: bad status: 503\n")

    def test_connection_refused(self):
        port = free_port()  # nothing listens there
        out, err = self.status("upstream", "endpoints", url="http://127.0.0.1:%d" % port,
                               code=1)
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("request: "), err)

    def test_undecodable_answers(self):
        a = self.admin({"/status/upstream/endpoints": (200, "{not json"),
                        "/status/cluster/nodes": (200, {"id": "n1"}),
                        "/status/cluster/nodes/n1": (200, {"id": 7})})
        for args, msg in [(("upstream", "endpoints"), "decode response: "),
                          (("cluster", "nodes"), "decode response: nodes: expected an array"),
                          (("cluster", "node", "n1"), "decode response: id: expected a string")]:
            with self.subTest(args=args):
                out, err = self.status(*args, url=a.url, code=1)
                self.assertEqual(out, "")
                self.assertTrue(err.startswith(msg), err)

    def test_gossip_is_refused(self):
        a = self.admin({})
        for args in (("gossip", "nodes"), ("gossip", "node", "n1")):
            with self.subTest(args=args):
                out, err = self.status(*args, url=a.url, code=1)
                self.assertEqual(out, "")
                self.assertEqual(err, "gossip: not used by this server (see cluster nodes)\n")
        self.assertEqual(a.requests, [])

    def test_usage_errors(self):
        for args, msg in [((), "config: missing command"),
                          (("proxy", "endpoints"), "config: unknown command: proxy"),
                          (("cluster",), "config: missing command after cluster"),
                          (("cluster", "node"), "config: missing argument: <id>"),
                          (("cluster", "nodes", "extra"), "config: unexpected argument: extra"),
                          (("upstream", "endpoints", "--nope"), "config: unknown flag: --nope"),
                          (("upstream", "endpoints", "--server.url", "ftp://x"),
                           "config: invalid server url")]:
            with self.subTest(args=args):
                out, err = self.status(*args, code=1)
                self.assertEqual(out, "")
                self.assertTrue(err.startswith(msg), err)

    def test_help(self):
        out, _ = self.status("--help")
        for words in ("upstream endpoints", "cluster nodes", "cluster node <id|local>",
                      "--server.url", "--forward", "--server.token"):
            self.assertIn(words, out)
        out, _ = self.status("cluster", "nodes", "-h")
        self.assertIn("--status", out)
        out, _ = self.status("cluster", "node", "--help", "--server.url", "http://x")
        self.assertIn("piko server status cluster node <id|local>", out)
        r = subprocess.run([CONFIG.bin, "server", "--help"], capture_output=True,
                           timeout=T(30))
        self.assertEqual(r.returncode, 0)
        self.assertIn("piko server status", r.stdout.decode())

    # --- https ----------------------------------------------------------------

    def test_https_root_cas_and_insecure_skip_verify(self):
        import ssl
        from test_tls import Pki
        pki = Pki(self.tmpdir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.path("server.crt"), pki.path("server.key"))
        a = self.admin({"/status/upstream/endpoints": (200, {"e": 1})}, tls_context=ctx)
        url = "https://127.0.0.1:%d" % a.port
        out, _ = self.status("upstream", "endpoints", "--server.tls.root-cas",
                             pki.path("ca.crt"), url=url)
        self.assertEqual(yaml.safe_load(out), {"e": 1})
        # the system CAs do not know our CA
        _, err = self.status("upstream", "endpoints", url=url, code=1)
        self.assertTrue(err.startswith("request: "), err)
        out, _ = self.status("upstream", "endpoints", "--server.tls.insecure-skip-verify",
                             url=url)
        self.assertEqual(yaml.safe_load(out), {"e": 1})
