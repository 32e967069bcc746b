#!/usr/bin/env python3
"""Build OCI image layers and archives by hand (python3 stdlib only).

hack/image.sh uses this to make container images without a registry or a
container engine. Two subcommands:

  oci.py layer OUT.tar.gz [--from-tar ROOTFS.tar] [--file SRC:DEST[:MODE]]...
      Writes one gzip'd layer tar and prints "<digest> <diff_id> <size>".
      --from-tar copies a rootfs tar (mmdebstrap's), dropping /dev/* (the
      runtime provides /dev) and the root entry; --file adds a regular file
      (root:root, parent directories created 0755). Entries are sorted by
      path, numeric owners only (no user/group names), every mtime 0, and
      gzip without a name or time stamp, so the same input gives the same
      digest.

  oci.py image OUT.oci.tar --name REF --layer BLOB:DIFF_ID... --config JSON
      Writes an OCI image layout as a tar (oci-layout, index.json, blobs):
      the config (JSON given: "config" object, "history" optional; os,
      architecture and rootfs are filled in), the manifest, and an index whose
      one entry carries the full REF in org.opencontainers.image.ref.name
      (and io.containerd.image.name) so `ctr images import` names it REF.
      Prints "<manifest digest> <archive path>".
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import sys
import tarfile

MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"


class HashWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, inner):
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        if self.inner is not None:
            self.inner.write(b)
        return len(b)

    def flush(self):
        if self.inner is not None:
            self.inner.flush()

    def tell(self):
        return self.size


def arch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m)


def sort_key(name):
    # tar --sort=name order: component by component, so "a/b" comes before
    # "a.b" and a directory always right before its contents.
    return name.split("/")


def norm(name):
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def clean(ti):
    ti.mtime = 0
    ti.uname = ""
    ti.gname = ""
    ti.pax_headers = {}
    return ti


def write_rootfs(out, src):
    with tarfile.open(src, "r:") as tin:
        members = []
        for m in tin.getmembers():
            name = norm(m.name)
            if name in ("", ".") or name.startswith("dev/"):
                continue
            if m.ischr() or m.isblk() or m.isfifo():
                continue  # device nodes belong to the runtime, not the image
            m.name = name
            if m.islnk():
                m.linkname = norm(m.linkname)
            members.append(m)
        members.sort(key=lambda m: sort_key(m.name))
        done = set()
        waiting = {}  # hard links whose target is later in the order
        for m in members:
            if m.islnk() and m.linkname not in done:
                waiting.setdefault(m.linkname, []).append(m)
                continue
            f = tin.extractfile(m) if m.isreg() else None
            out.addfile(clean(m), f)
            done.add(m.name)
            for link in waiting.pop(m.name, []):
                out.addfile(clean(link))
                done.add(link.name)
        if waiting:
            sys.exit("oci.py: hard links to missing files: %s" % sorted(waiting))


def write_files(out, files, have_dirs):
    entries = []
    for spec in files:
        parts = spec.split(":")
        src, dest = parts[0], norm(parts[1].lstrip("/"))
        mode = int(parts[2], 8) if len(parts) > 2 else 0o755
        d = os.path.dirname(dest)
        while d and d not in have_dirs:
            have_dirs.add(d)
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            entries.append((ti, None))
            d = os.path.dirname(d)
        ti = tarfile.TarInfo(dest)
        ti.mode = mode
        ti.size = os.path.getsize(src)
        entries.append((ti, src))
    entries.sort(key=lambda e: sort_key(e[0].name))
    for ti, src in entries:
        if src is None:
            out.addfile(clean(ti))
        else:
            with open(src, "rb") as f:
                out.addfile(clean(ti), f)


def cmd_layer(a):
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as raw:
        zhash = HashWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=zhash, mtime=0, compresslevel=6) as gz:
            thash = HashWriter(gz)
            with tarfile.open(fileobj=thash, mode="w|", format=tarfile.PAX_FORMAT) as out:
                if a.from_tar:
                    write_rootfs(out, a.from_tar)
                write_files(out, a.file or [], set())
    os.replace(tmp, a.out)
    print("sha256:%s sha256:%s %d" % (zhash.sha.hexdigest(), thash.sha.hexdigest(), zhash.size))


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def add_bytes(tar, name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    tar.addfile(clean(ti), io.BytesIO(data))


def cmd_image(a):
    cfg = json.loads(a.config)
    layers = []  # (path, digest, diff_id, size)
    for spec in a.layer:
        path, diff_id = spec.rsplit(":", 2)[0], ":".join(spec.rsplit(":", 2)[1:])
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        layers.append((path, "sha256:" + h.hexdigest(), diff_id, os.path.getsize(path)))
    config = {
        "created": cfg.get("created", "1970-01-01T00:00:00Z"),
        "architecture": arch(),
        "os": "linux",
        "config": cfg["config"],
        "rootfs": {"type": "layers", "diff_ids": [l[2] for l in layers]},
        "history": cfg.get("history", []),
    }
    cdigest, cdata = blob(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": len(cdata)},
        "layers": [{"mediaType": MT_LAYER, "digest": l[1], "size": l[3]} for l in layers],
    }
    mdigest, mdata = blob(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": mdigest,
                "size": len(mdata),
                "platform": {"architecture": arch(), "os": "linux"},
                "annotations": {
                    "org.opencontainers.image.ref.name": a.name,
                    "io.containerd.image.name": a.name,
                },
            }
        ],
    }
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        for d in ("blobs", "blobs/sha256"):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            tar.addfile(clean(ti))
        add_bytes(tar, "blobs/sha256/" + cdigest[7:], cdata)
        add_bytes(tar, "blobs/sha256/" + mdigest[7:], mdata)
        seen = set()
        for path, digest, _, size in layers:
            if digest in seen:
                continue
            seen.add(digest)
            ti = tarfile.TarInfo("blobs/sha256/" + digest[7:])
            ti.size = size
            ti.mode = 0o644
            with open(path, "rb") as f:
                tar.addfile(clean(ti), f)
    os.replace(tmp, a.out)
    print("%s %s" % (mdigest, a.out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("layer")
    pl.add_argument("out")
    pl.add_argument("--from-tar")
    pl.add_argument("--file", action="append")
    pi = sub.add_parser("image")
    pi.add_argument("out")
    pi.add_argument("--name", required=True)
    pi.add_argument("--layer", action="append", required=True, help="BLOB:sha256:DIFF_ID")
    pi.add_argument("--config", required=True)
    a = p.parse_args()
    {"layer": cmd_layer, "image": cmd_image}[a.cmd](a)


if __name__ == "__main__":
    main()
