"""Makes the throwaway credentials of the access tests, in DIR.

Run by gateway/tests/python_auth.rs before it starts the gateway:
  python3 auth_setup.py DIR SYMBOL1,SYMBOL2,...
Writes Ed25519 and RSA key pairs (the gateway gets only the public halves,
in jwt_keys.pem), a second Ed25519 pair the gateway does not trust (for
wrong-signature tokens), and api_keys.json holding the SHA-256 of three
fresh random API keys, whose plain values go to api_keys_plain.json for
the tests.

And a throwaway CA with what TLS needs: two server certificates for
127.0.0.1 and localhost (server.pem/server.key, then next.pem/next.key for
the rotation test) and a client certificate for mutual TLS
(client.pem/client.key), all signed by ca.pem.
"""

import datetime
import hashlib
import ipaddress
import json
import os
import secrets
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def pem_private(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_public(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificate(subject, key, issuer, issuer_key, ca=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_tls(out):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("quotecast test CA", ca_key, "quotecast test CA", ca_key, ca=True)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
    with open(os.path.join(out, "ca.pem"), "wb") as f:
        f.write(pem(ca))
    for name, subject, server in [("server", "gateway", True), ("next", "gateway renewed", True), ("client", "desk", False)]:
        key = ec.generate_private_key(ec.SECP256R1())
        with open(os.path.join(out, f"{name}.key"), "wb") as f:
            f.write(pem_private(key))
        with open(os.path.join(out, f"{name}.pem"), "wb") as f:
            f.write(pem(certificate(subject, key, "quotecast test CA", ca_key, server=server)))


def main(out, symbols):
    make_tls(out)
    ed = ed25519.Ed25519PrivateKey.generate()
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = ed25519.Ed25519PrivateKey.generate()
    for name, key in [("ed25519", ed), ("rsa", rs), ("stranger", stranger)]:
        with open(os.path.join(out, f"{name}.key"), "wb") as f:
            f.write(pem_private(key))
    with open(os.path.join(out, "jwt_keys.pem"), "wb") as f:
        f.write(pem_public(ed) + pem_public(rs))
    plain = {name: secrets.token_urlsafe(24) for name in ["desk", "all", "single", "rated"]}
    entitled = {"desk": symbols[:2], "all": ["*"], "single": ["*"], "rated": ["*"]}
    keys = []
    for name, key in plain.items():
        k = {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "symbols": entitled[name]}
        if name == "single":
            k["max_connections"] = 1
        if name == "rated":
            k["max_requests_per_sec"] = 2
        keys.append(k)
    with open(os.path.join(out, "api_keys.json"), "w") as f:
        json.dump({"keys": keys}, f)
    with open(os.path.join(out, "api_keys_plain.json"), "w") as f:
        json.dump(plain, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))
