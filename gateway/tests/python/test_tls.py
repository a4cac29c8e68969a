"""TLS seen by clients nobody here wrote: Python `websockets` over `ssl`
and `grpcio` with TLS credentials, against a gateway serving `wss://` and
gRPC over TLS (client certificates required on gRPC) with the throwaway
CA auth_setup.py made in QUOTECAST_AUTH_DIR, and API keys required.

Run by gateway/tests/python_tls.rs; the gateway reloads its certificate
files every 200 ms.
"""

import asyncio
import json
import os
import ssl
import time

import grpc
import pytest
import websockets

HOSTPORT = os.environ.get("QUOTECAST_WS_HOSTPORT", "127.0.0.1:8080")
ADDR = os.environ.get("QUOTECAST_GRPC_ADDR", "127.0.0.1:50051")
DIR = os.environ.get("QUOTECAST_AUTH_DIR", ".")
SYMBOLS = os.environ.get("QUOTECAST_SYMBOLS", "AAPL,MSFT").split(",")
URL = f"wss://{HOSTPORT}/"


def path(name):
    return os.path.join(DIR, name)


def key():
    with open(path("api_keys_plain.json")) as f:
        return json.load(f)["all"]


def client_tls():
    ctx = ssl.create_default_context(cafile=path("ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(**kw):
    return websockets.connect(
        URL, ssl=client_tls(), open_timeout=10, additional_headers={"Authorization": f"Bearer {key()}"}, **kw
    )


def peer_cert(ws):
    return ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)


def updates(frame, pb):
    msg = pb.stream.ServerMessage()
    msg.ParseFromString(frame)
    return list(msg.updates.updates) if msg.WhichOneof("body") == "updates" else []


def test_wss_with_a_certificate_the_client_verifies(pb):
    async def run():
        async with connect() as ws:
            assert ws.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
            await ws.send(json.dumps({"op": "subscribe", "symbols": SYMBOLS[:3]}))
            n = 0
            while n < 20:
                m = await asyncio.wait_for(ws.recv(), timeout=10)
                if isinstance(m, bytes):
                    n += len(updates(m, pb))

    asyncio.run(run())


def test_plain_websocket_on_the_tls_port_fails():
    async def run():
        with pytest.raises(Exception):
            async with websockets.connect(f"ws://{HOSTPORT}/", open_timeout=5):
                pass

    asyncio.run(run())


def test_a_client_that_does_not_trust_the_ca_refuses_the_server():
    async def run():
        with pytest.raises(ssl.SSLCertVerificationError):
            async with websockets.connect(URL, ssl=ssl.create_default_context(), open_timeout=5):
                pass

    asyncio.run(run())


def test_grpc_over_tls_needs_a_client_certificate(pb):
    with open(path("ca.pem"), "rb") as f:
        ca = f.read()
    with open(path("client.pem"), "rb") as f:
        chain = f.read()
    with open(path("client.key"), "rb") as f:
        private = f.read()
    md = [("authorization", f"Bearer {key()}")]
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=private, certificate_chain=chain)
    stub = pb.snapshot_grpc.QuoteServiceStub(grpc.secure_channel(ADDR, creds))
    listed = stub.ListSymbols(pb.snapshot.ListSymbolsRequest(), timeout=10, metadata=md)
    assert {s.symbol for s in listed.symbols} == set(SYMBOLS)
    anonymous = pb.snapshot_grpc.QuoteServiceStub(
        grpc.secure_channel(ADDR, grpc.ssl_channel_credentials(root_certificates=ca))
    )
    with pytest.raises(grpc.RpcError) as e:
        anonymous.ListSymbols(pb.snapshot.ListSymbolsRequest(), timeout=10, metadata=md)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_renewal_drops_nobody(pb):
    """A client streams across the renewal without a gap; a connection
    made after it gets the new certificate."""

    async def run():
        async with connect() as ws:
            old = peer_cert(ws)
            await ws.send(json.dumps({"op": "subscribe", "symbols": SYMBOLS[:3]}))
            last, renewed_at, new = {}, None, None
            t0 = time.time()
            while time.time() - t0 < 8:
                m = await asyncio.wait_for(ws.recv(), timeout=10)
                if not isinstance(m, bytes):
                    continue
                for u in updates(m, pb):
                    if u.symbol in last:
                        assert u.seq == last[u.symbol] + 1 + u.skipped, "in order, nothing lost"
                    last[u.symbol] = u.seq
                if renewed_at is None and time.time() - t0 > 1:
                    for name in ["cert", "key"]:
                        src = {"cert": "next.pem", "key": "next.key"}[name]
                        dst = {"cert": "server.pem", "key": "server.key"}[name]
                        with open(path(src), "rb") as f, open(path(dst + ".new"), "wb") as g:
                            g.write(f.read())
                    os.replace(path("server.key.new"), path("server.key"))
                    os.replace(path("server.pem.new"), path("server.pem"))
                    renewed_at = time.time()
                if renewed_at and new is None and time.time() - renewed_at > 1:
                    async with connect() as fresh:
                        new = peer_cert(fresh)
            assert renewed_at is not None and new is not None
            assert new != old, "a new connection gets the renewed certificate"
            assert peer_cert(ws) == old, "the open one keeps its session"
            assert len(last) == 3

    asyncio.run(run())
