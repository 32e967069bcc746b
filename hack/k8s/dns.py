#!/usr/bin/env python3
"""Cluster DNS for the test bed's node: a small resolver that answers the
names pods look up from the API's Services and EndpointSlices.

    hack/k8s/dns.py --listen IP --kubeconfig-dir DIR [--domain cluster.local]

DIR is the control plane's directory (hack/k8s/up.sh): its env file names the
apiserver, its pki/ the admin client certificate. The kubelet points pods'
resolv.conf at IP (clusterDNS). Answers, UDP and TCP, TTL 5 s:

  <svc>.<ns>.svc.<domain>             A: the ClusterIP; for a headless
                                      Service, its endpoints' addresses (ready
                                      ones, or all with
                                      publishNotReadyAddresses)
  <host>.<svc>.<ns>.svc.<domain>      A: the endpoint with that hostname
                                      (StatefulSet pods under their Service)
  anything else                       NXDOMAIN (no upstream: this machine has
                                      no network beyond itself)

Known names get an empty NOERROR for other types (AAAA, say), so resolvers
do not wait. The tables are re-read every second. What CoreDNS's kubernetes
plugin does in a real cluster, reduced to what the test bed needs; the
CoreDNS module builds here too, but brings a large dependency tree for these
few records.
"""
import argparse
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.request

TTL = 5


def api_client(dirname):
    env = {}
    with open(os.path.join(dirname, "env")) as f:
        for line in f:
            if "=" in line and not line.startswith("export"):
                k, v = line.strip().split("=", 1)
                env[k] = v
    base = env["PK_K8S_APISERVER"]
    pki = os.path.join(dirname, "pki")
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    ctx.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))

    def get(path):
        with urllib.request.urlopen(base + path, context=ctx, timeout=5) as r:
            return json.load(r)

    return get


class Tables:
    def __init__(self, domain):
        self.domain = domain.strip(".").lower()
        self.names = {}  # name -> [ip]
        self.lock = threading.Lock()

    def rebuild(self, services, slices):
        names = {}
        headless = {}
        for s in services.get("items", []):
            md, sp = s["metadata"], s.get("spec", {})
            key = f"{md['name']}.{md['namespace']}.svc.{self.domain}"
            ip = sp.get("clusterIP")
            if ip and ip != "None":
                names[key] = [ip]
            else:
                names.setdefault(key, [])
                headless[(md["namespace"], md["name"])] = bool(sp.get("publishNotReadyAddresses"))
        for es in slices.get("items", []):
            md = es["metadata"]
            svc = md.get("labels", {}).get("kubernetes.io/service-name")
            if es.get("addressType") != "IPv4" or (md["namespace"], svc) not in headless:
                continue
            all_ok = headless[(md["namespace"], svc)]
            key = f"{svc}.{md['namespace']}.svc.{self.domain}"
            for ep in es.get("endpoints") or []:
                if not all_ok and ep.get("conditions", {}).get("ready") is False:
                    continue
                addrs = ep.get("addresses") or []
                names[key].extend(addrs)
                if ep.get("hostname") and addrs:
                    names[f"{ep['hostname']}.{key}"] = addrs[:1]
        with self.lock:
            self.names = names

    def lookup(self, name):
        with self.lock:
            return self.names.get(name.lower().rstrip("."))


def parse_query(msg):
    """(id, flags, qname, qtype, end of question) or None."""
    if len(msg) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", msg[:6])
    if qd != 1 or flags & 0x8000:
        return None
    labels, i = [], 12
    while True:
        if i >= len(msg):
            return None
        n = msg[i]
        i += 1
        if n == 0:
            break
        if n > 63 or i + n > len(msg):
            return None
        labels.append(msg[i : i + n].decode("ascii", "replace"))
        i += n
    if i + 4 > len(msg):
        return None
    qtype, qclass = struct.unpack("!HH", msg[i : i + 4])
    return qid, flags, ".".join(labels), qtype, i + 4


def answer(tables, msg):
    q = parse_query(msg)
    if q is None:
        return None
    qid, flags, name, qtype, end = q
    question = msg[12:end]
    ips = tables.lookup(name)
    rd = flags & 0x0100
    if ips is None:
        rcode, rrs = 3, []  # NXDOMAIN
    else:
        rcode = 0
        rrs = [socket.inet_aton(ip) for ip in ips] if qtype in (1, 255) else []
    head = struct.pack("!HHHHHH", qid, 0x8400 | rd | rcode, 1, len(rrs), 0, 0)
    body = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, TTL, 4) + a for a in rrs)
    return head + question + body


def serve_udp(sock, tables):
    while True:
        msg, peer = sock.recvfrom(4096)
        r = answer(tables, msg)
        if r is not None:
            if len(r) > 512:
                # Too long for UDP: the question alone with TC set, and
                # the client asks again over TCP.
                end = parse_query(msg)[4]
                r = r[:2] + bytes([r[2] | 0x02, r[3]]) + b"\x00\x01\x00\x00\x00\x00\x00\x00" + msg[12:end]
            sock.sendto(r, peer)


def serve_tcp_conn(conn, tables):
    conn.settimeout(5)
    try:
        while True:
            hdr = conn.recv(2, socket.MSG_WAITALL)
            if len(hdr) < 2:
                return
            (n,) = struct.unpack("!H", hdr)
            msg = conn.recv(n, socket.MSG_WAITALL)
            r = answer(tables, msg)
            if r is None:
                return
            conn.sendall(struct.pack("!H", len(r)) + r)
    except OSError:
        pass
    finally:
        conn.close()


def serve_tcp(sock, tables):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_tcp_conn, args=(conn, tables), daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--kubeconfig-dir", required=True)
    ap.add_argument("--domain", default="cluster.local")
    a = ap.parse_args()
    get = api_client(a.kubeconfig_dir)
    tables = Tables(a.domain)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((a.listen, 53))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((a.listen, 53))
    tcp.listen(64)
    threading.Thread(target=serve_udp, args=(udp, tables), daemon=True).start()
    threading.Thread(target=serve_tcp, args=(tcp, tables), daemon=True).start()
    print(f"dns: serving {a.domain} on {a.listen}:53", file=sys.stderr, flush=True)
    while True:
        try:
            tables.rebuild(
                get("/api/v1/services"), get("/apis/discovery.k8s.io/v1/endpointslices")
            )
        except Exception as e:  # the apiserver restarting, say: keep the last tables
            print(f"dns: refresh failed: {e}", file=sys.stderr, flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main()
