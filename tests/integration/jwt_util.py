"""Keys and JWTs for the auth tests, made with the openssl CLI (no Python
crypto package needed): RSA and EC key pairs as PEM files, tokens signed
HS*/RS*/ES*, and hand-made bad tokens."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_int(n, length=None):
    length = length or (n.bit_length() + 7) // 8
    return b64url(n.to_bytes(length, "big"))


def _run(args, data=None):
    return subprocess.run(args, input=data, capture_output=True, check=True).stdout


class KeyPair:
    """An RSA (kind "rsa") or EC P-256 (kind "ec") key pair in workdir."""

    def __init__(self, workdir, kind, name=None):
        self.kind = kind
        name = name or kind
        self.private = os.path.join(workdir, name + ".key")
        self.public = os.path.join(workdir, name + ".pub")
        if kind == "rsa":
            _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                  "-out", self.private])
        else:
            _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-out", self.private])
        _run(["openssl", "pkey", "-in", self.private, "-pubout", "-out", self.public])
        with open(self.public) as f:
            self.public_pem = f.read()

    def sign(self, data, bits=256):
        sig = _run(["openssl", "dgst", "-sha%d" % bits, "-sign", self.private], data)
        if self.kind == "ec":
            sig = _der_to_raw(sig, 32)
        return sig

    def jwk(self, kid):
        """The public key as a JWK (RSA n/e or EC x/y)."""
        text = _run(["openssl", "pkey", "-pubin", "-in", self.public, "-noout", "-text"]).decode()
        if self.kind == "rsa":
            mod = _hex_block(text, "Modulus:")
            exp = int(text.split("Exponent:")[1].split()[0])
            return {"kty": "RSA", "kid": kid, "n": b64url_int(mod), "e": b64url_int(exp)}
        point = _hex_block(text, "pub:").to_bytes(65, "big")
        return {"kty": "EC", "kid": kid, "crv": "P-256", "x": b64url(point[1:33]),
                "y": b64url(point[33:])}


def _hex_block(text, label):
    lines = text.split(label, 1)[1].splitlines()[1:]
    hexs = ""
    for line in lines:
        line = line.strip()
        if not line or not all(c in "0123456789abcdef:" for c in line):
            break
        hexs += line.replace(":", "")
    return int(hexs, 16)


def _der_to_raw(der, size):
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as JWS r||s."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(size, b"\0")
        i += 2 + n
    return out


def token(claims, alg="HS256", key=None, kid=None, header=None):
    """A signed JWT. key: bytes/str secret for HS*, a KeyPair for RS*/ES*."""
    h = {"alg": alg, "typ": "JWT"}
    if kid:
        h["kid"] = kid
    h.update(header or {})
    signing = (b64url(json.dumps(h, separators=(",", ":")).encode()) + "." +
               b64url(json.dumps(claims, separators=(",", ":")).encode()))
    bits = int(alg[2:]) if alg[2:].isdigit() else 256
    if alg.startswith("HS"):
        secret = key.encode() if isinstance(key, str) else key
        sig = hmac.new(secret, signing.encode(), getattr(hashlib, "sha%d" % bits)).digest()
    elif alg == "none":
        sig = b""
    else:
        sig = key.sign(signing.encode(), bits)
    return signing + "." + b64url(sig)


def tamper(tok):
    """The same token with one signature byte changed."""
    head, payload, sig = tok.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return "%s.%s.%s" % (head, payload, b64url(bytes(raw)))


def now():
    return int(time.time())
