"""Makes the throwaway credentials of the access tests, in DIR.

Run by gateway/tests/python_auth.rs before it starts the gateway:
  python3 auth_setup.py DIR SYMBOL1,SYMBOL2,...
Writes Ed25519 and RSA key pairs (the gateway gets only the public halves,
in jwt_keys.pem), a second Ed25519 pair the gateway does not trust (for
wrong-signature tokens), and api_keys.json holding the SHA-256 of three
fresh random API keys, whose plain values go to api_keys_plain.json for
the tests.
"""

import hashlib
import json
import os
import secrets
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


def pem_private(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_public(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def main(out, symbols):
    ed = ed25519.Ed25519PrivateKey.generate()
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = ed25519.Ed25519PrivateKey.generate()
    for name, key in [("ed25519", ed), ("rsa", rs), ("stranger", stranger)]:
        with open(os.path.join(out, f"{name}.key"), "wb") as f:
            f.write(pem_private(key))
    with open(os.path.join(out, "jwt_keys.pem"), "wb") as f:
        f.write(pem_public(ed) + pem_public(rs))
    plain = {name: secrets.token_urlsafe(24) for name in ["desk", "all", "single"]}
    entitled = {"desk": symbols[:2], "all": ["*"], "single": ["*"]}
    keys = []
    for name, key in plain.items():
        k = {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "symbols": entitled[name]}
        if name == "single":
            k["max_connections"] = 1
        keys.append(k)
    with open(os.path.join(out, "api_keys.json"), "w") as f:
        json.dump({"keys": keys}, f)
    with open(os.path.join(out, "api_keys_plain.json"), "w") as f:
        json.dump(plain, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))
