"""Access control seen by clients nobody here wrote: Python `websockets`,
`grpcio`, and tokens signed by PyJWT with keys made by `cryptography`.

Run by gateway/tests/python_auth.rs against a live gateway started with
the credentials auth_setup.py made in QUOTECAST_AUTH_DIR: API keys (desk:
the first two of QUOTECAST_SYMBOLS; all: every symbol; single: one
connection at most; rated: 2 requests per second), and the Ed25519 and
RSA public keys for JWTs. The
gateway runs with --auth-timeout-ms 1500, --auth-expiry-warning-ms 2000,
--jwt-leeway-secs 0, --max-auth-failures-per-min 20, --max-connections-per-ip 8,
--trusted-proxies 127.0.0.8 and --allowed-origins https://app.example.com.

Tests that fail on purpose connect from their own loopback address, so
the failure budget of one never blocks another.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import grpc
import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

URL = os.environ.get("QUOTECAST_WS_URL", "ws://127.0.0.1:8080/")
ADDR = os.environ.get("QUOTECAST_GRPC_ADDR", "127.0.0.1:50051")
DIR = os.environ.get("QUOTECAST_AUTH_DIR", ".")
SYMBOLS = os.environ.get("QUOTECAST_SYMBOLS", "AAPL,MSFT,NVDA").split(",")
DESK = SYMBOLS[:2]
OTHER = SYMBOLS[5]


def keys():
    with open(os.path.join(DIR, "api_keys_plain.json")) as f:
        return json.load(f)


def token(kind="ed25519", sub="alice", symbols=None, exp_in=300, nbf_in=None, alg=None):
    now = int(time.time())
    claims = {"sub": sub, "exp": now + exp_in, "symbols": symbols if symbols is not None else DESK}
    if nbf_in is not None:
        claims["nbf"] = now + nbf_in
    with open(os.path.join(DIR, f"{kind}.key"), "rb") as f:
        pem = f.read()
    return jwt.encode(claims, pem, algorithm=alg or ("RS256" if kind == "rsa" else "EdDSA"))


def connect(url=URL, src="127.0.0.1", **kw):
    """websockets.connect from source address `src`."""
    u = urlsplit(url)
    sock = socket.socket()
    sock.bind((src, 0))
    sock.connect((u.hostname, u.port))
    return websockets.connect(url, sock=sock, open_timeout=10, **kw)


def bearer(t):
    return {"additional_headers": {"Authorization": f"Bearer {t}"}}


async def refused(src, **kw):
    """The HTTP answer to an upgrade that must be refused: (status, body)."""
    with pytest.raises(InvalidStatus) as e:
        async with connect(src=src, **kw):
            pass
    r = e.value.response
    return r.status_code, r.body.decode(), r.headers


async def reply(ws, kind):
    """The next JSON message of `kind` ("ack", "error", "authenticated"),
    skipping binary frames and other JSON."""
    while True:
        m = await asyncio.wait_for(ws.recv(), timeout=10)
        if isinstance(m, str):
            j = json.loads(m)
            if j["type"] == kind:
                return j


async def subscribe(ws, symbols):
    await ws.send(json.dumps({"op": "subscribe", "symbols": symbols}))
    return await reply(ws, "ack")


def updates(frame, pb):
    msg = pb.stream.ServerMessage()
    msg.ParseFromString(frame)
    return list(msg.updates.updates) if msg.WhichOneof("body") == "updates" else []


@pytest.fixture(scope="module", autouse=True)
def bystander(pb):
    """A client with a valid key streams through every test of this module
    (refused tokens, brute force, revocation of another key, limits) from
    its own address, and must see every update in order and stay open."""
    state = {"updates": 0, "problems": [], "stop": False}

    def run():
        async def go():
            async with connect(src="127.0.0.9", **bearer(keys()["all"])) as ws:
                await ws.send(json.dumps({"op": "subscribe", "symbols": SYMBOLS[:4]}))
                last = {}
                while not state["stop"]:
                    try:
                        m = await asyncio.wait_for(ws.recv(), timeout=1)
                    except asyncio.TimeoutError:
                        continue
                    if not isinstance(m, bytes):
                        continue
                    for u in updates(m, pb):
                        if u.symbol in last and u.seq != last[u.symbol] + 1 + u.skipped:
                            state["problems"].append(f"{u.symbol}: {last[u.symbol]} then {u.seq}")
                        last[u.symbol] = u.seq
                        state["updates"] += 1

        try:
            asyncio.run(go())
        except Exception as e:  # noqa: BLE001 - any end is a failure here
            state["problems"].append(f"bystander ended: {e!r}")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield state
    state["stop"] = True
    t.join(timeout=10)
    assert not state["problems"], state["problems"]
    assert state["updates"] > 1000, state


def test_an_api_key_sees_only_its_symbols_and_probing_learns_nothing(pb):
    async def run():
        async with connect(**bearer(keys()["desk"])) as ws:
            ack = await subscribe(ws, [*DESK, OTHER, "ZZZZ"])
            assert sorted(ack["accepted"]) == sorted(DESK)
            codes = {r["symbol"]: r["code"] for r in ack["rejected"]}
            # An existing and a non-existent symbol answer alike.
            assert codes == {OTHER: "NOT_ENTITLED", "ZZZZ": "NOT_ENTITLED"}
            seen = set()
            while len(seen) < 2:
                m = await asyncio.wait_for(ws.recv(), timeout=10)
                if isinstance(m, bytes):
                    seen |= {u.symbol for u in updates(m, pb)}
                    assert seen <= set(DESK)

    asyncio.run(run())


def test_jwts_by_query_parameter_and_header_eddsa_and_rs256():
    async def run():
        async with connect(url=f"{URL}?token={token()}") as ws:
            assert (await subscribe(ws, DESK[:1]))["accepted"] == DESK[:1]
        async with connect(**bearer(token("rsa", symbols=["*"]))) as ws:
            assert (await subscribe(ws, [OTHER]))["accepted"] == [OTHER]

    asyncio.run(run())


def raw_jwt(alg, claims, secret=None):
    """A JWT put together by hand, for what PyJWT refuses to make: `alg`
    none (no signature) and HS256 keyed with a public key."""
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signing = head + b"." + body
    sig = b64(hmac.new(secret, signing, hashlib.sha256).digest()) if secret else b""
    return (signing + b"." + sig).decode()


def test_every_refused_credential_gets_401_and_its_reason():
    claims = {"sub": "x", "exp": int(time.time()) + 60, "symbols": ["*"]}
    with open(os.path.join(DIR, "jwt_keys.pem"), "rb") as f:
        public = f.read()
    none_alg = raw_jwt("none", claims)
    # The classic confusion: the server's public key used as an HMAC secret.
    confused = raw_jwt("HS256", claims, secret=public)
    cases = [
        (token(exp_in=-10), "token expired"),
        (token(nbf_in=60), "not valid yet"),
        (token("stranger"), "signature does not verify"),
        (none_alg, "algorithm"),
        (confused, "algorithm"),
        ("a.b.c", "malformed"),
        ("not-a-key", "unknown API key"),
    ]

    async def run():
        for t, want in cases:
            status, body, headers = await refused("127.0.0.2", **bearer(t))
            assert status == 401, (t, status, body)
            assert want in body, (want, body)
            assert headers["WWW-Authenticate"].startswith("Bearer")

    asyncio.run(run())


def test_a_credential_as_the_first_message():
    async def run():
        async with connect() as ws:
            await ws.send(json.dumps({"op": "subscribe", "symbols": DESK}))
            err = await reply(ws, "error")
            assert err["code"] == "NOT_AUTHENTICATED"
            await ws.send(json.dumps({"op": "auth", "id": "a1", "token": keys()["desk"]}))
            ok = await reply(ws, "authenticated")
            assert (ok["id"], ok["subject"], ok["expires_at_ms"]) == ("a1", "desk", 0)
            assert sorted((await subscribe(ws, DESK))["accepted"]) == sorted(DESK)

    asyncio.run(run())


def test_no_credential_in_time_closes_with_4401():
    async def run():
        async with connect(src="127.0.0.3") as ws:
            with pytest.raises(ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), timeout=10)
            assert e.value.rcvd.code == 4401
            assert "no credential" in e.value.rcvd.reason

    asyncio.run(run())


def test_a_refresh_keeps_the_stream_and_applies_new_entitlements_at_once(pb):
    async def run():
        async with connect(**bearer(token(symbols=DESK, exp_in=4))) as ws:
            await ws.send(json.dumps({"op": "subscribe", "symbols": DESK}))
            last, warned, refreshed_at = {}, False, None
            t0 = time.time()
            while time.time() - t0 < 7:
                m = await asyncio.wait_for(ws.recv(), timeout=10)
                if isinstance(m, str):
                    j = json.loads(m)
                    if j["type"] == "authenticated" and j["expiring"]:
                        warned = True
                        new = token(symbols=DESK[:1], exp_in=120)
                        await ws.send(json.dumps({"op": "auth", "id": "r", "token": new}))
                    elif j["type"] == "error":
                        assert j["code"] == "NOT_ENTITLED" and DESK[1] in j["message"], j
                        refreshed_at = time.time()
                    continue
                for u in updates(m, pb):
                    if u.symbol in last:
                        assert u.seq == last[u.symbol] + 1 + u.skipped, "gapless through the refresh"
                    last[u.symbol] = u.seq
                    if refreshed_at is not None and u.symbol == DESK[1]:
                        pytest.fail(f"{DESK[1]} after its entitlement was removed")
            # Past the first token's expiry and still open.
            assert warned and refreshed_at is not None
            assert DESK[0] in last

    asyncio.run(run())


def test_expiry_is_warned_then_closes_with_4401(pb):
    def expiring(m):
        # In the encoding of the client's last request: binary until the
        # gateway has read the subscribe below, JSON after.
        if isinstance(m, str):
            return json.loads(m).get("expiring", False)
        msg = pb.stream.ServerMessage()
        msg.ParseFromString(m)
        return msg.WhichOneof("body") == "authenticated" and msg.authenticated.expiring

    async def run():
        async with connect(**bearer(token(exp_in=2))) as ws:
            await ws.send(json.dumps({"op": "subscribe", "symbols": DESK[:1]}))
            warned = False
            with pytest.raises(ConnectionClosed) as e:
                while True:
                    m = await asyncio.wait_for(ws.recv(), timeout=10)
                    warned |= expiring(m)
            assert warned
            assert (e.value.rcvd.code, e.value.rcvd.reason) == (4401, "token expired")

    asyncio.run(run())


def test_origin_allowlist():
    async def run():
        for origin in ["https://evil.example", "null"]:
            status, body, _ = await refused("127.0.0.4", origin=origin, **bearer(keys()["all"]))
            assert status == 403 and "--allowed-origins" in body
        async with connect(origin="https://app.example.com", **bearer(keys()["all"])):
            pass

    asyncio.run(run())


def test_brute_force_gets_429_per_address():
    async def run():
        for _ in range(20):
            status, _, _ = await refused("127.0.0.5", **bearer(f"guess-{time.time()}"))
            assert status == 401
        status, body, headers = await refused("127.0.0.5", **bearer(keys()["all"]))
        assert status == 429 and int(headers["Retry-After"]) > 0, body
        async with connect(src="127.0.0.6", **bearer(keys()["all"])):
            pass

    asyncio.run(run())


def test_a_keys_connection_limit_then_its_revocation():
    async def run():
        async with connect(**bearer(keys()["single"])) as first:
            async with connect(**bearer(keys()["single"])) as second:
                with pytest.raises(ConnectionClosed) as e:
                    await asyncio.wait_for(second.recv(), timeout=10)
                assert e.value.rcvd.code == 1013 and "1 connections" in e.value.rcvd.reason
            path = os.path.join(DIR, "api_keys.json")
            with open(path) as f:
                original = f.read()
            kept = [k for k in json.loads(original)["keys"] if k["name"] != "single"]
            with open(path + ".new", "w") as f:
                json.dump({"keys": kept}, f)
            os.replace(path + ".new", path)
            try:
                with pytest.raises(ConnectionClosed) as e:
                    while True:
                        await asyncio.wait_for(first.recv(), timeout=5)
                assert (e.value.rcvd.code, e.value.rcvd.reason) == (4401, "API key revoked")
            finally:
                with open(path + ".new", "w") as f:
                    f.write(original)
                os.replace(path + ".new", path)

    asyncio.run(run())


def test_a_keys_request_rate_counts_all_its_connections():
    async def run():
        async with connect(**bearer(keys()["rated"])) as a, connect(**bearer(keys()["rated"])) as b:
            # 2 per second with a burst of 4, shared: 3 pings on each.
            for ws in (a, b, a, b, a, b):
                await ws.send(json.dumps({"op": "ping", "ts": 1}))
            errors = []
            for ws in (a, b):
                for _ in range(3):
                    m = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                    if m["type"] == "error":
                        errors.append(m)
            assert len(errors) == 2, errors
            assert all(e["code"] == "RATE_LIMITED" and "for rated" in e["message"] for e in errors)
            assert all(e["retry_after_ms"] > 0 for e in errors)

    asyncio.run(run())


def test_connections_per_address_are_bounded_with_429():
    async def run():
        held = [await connect(src="127.0.0.7", **bearer(keys()["all"])).__aenter__() for _ in range(8)]
        try:
            status, body, headers = await refused("127.0.0.7", **bearer(keys()["all"]))
            assert status == 429 and headers["Retry-After"] == "1", body
            assert "too many connections from this address" in body
        finally:
            for ws in held:
                await ws.close()

    asyncio.run(run())


def via_proxy(client, **kw):
    """websockets.connect through "the balancer" 127.0.0.8 (a trusted
    proxy of this gateway), which names `client` in a PROXY v1 header."""
    u = urlsplit(URL)
    sock = socket.socket()
    sock.bind(("127.0.0.8", 0))
    sock.connect((u.hostname, u.port))
    sock.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 {u.port}\r\n".encode())
    return websockets.connect(URL, sock=sock, open_timeout=10, **kw)


def test_behind_a_trusted_proxy_limits_count_the_real_client():
    async def run():
        held = [await via_proxy("198.51.100.7", **bearer(keys()["all"])).__aenter__() for _ in range(8)]
        try:
            with pytest.raises(InvalidStatus) as e:
                async with via_proxy("198.51.100.7", **bearer(keys()["all"])):
                    pass
            assert e.value.response.status_code == 429, "the 9th of one client behind the balancer"
            async with via_proxy("198.51.100.8", **bearer(keys()["all"])) as other:
                assert (await subscribe(other, [OTHER]))["accepted"] == [OTHER], "another client has its own"
        finally:
            for ws in held:
                await ws.close()
        status, body, _ = await refused("127.0.0.8", **bearer(keys()["all"]))
        assert status == 400 and "PROXY protocol header" in body, "the balancer must send the header"

    asyncio.run(run())


@pytest.fixture(scope="module")
def stub(pb):
    return pb.snapshot_grpc.QuoteServiceStub(grpc.insecure_channel(ADDR))


def test_grpc_needs_a_credential(pb, stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.ListSymbols(pb.snapshot.ListSymbolsRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        stub.ListSymbols(pb.snapshot.ListSymbolsRequest(), timeout=10, metadata=[("authorization", "Bearer nope")])
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "unknown API key" in e.value.details()


def test_grpc_entitlements_on_every_method(pb, stub):
    md = [("authorization", f"Bearer {keys()['desk']}")]
    listed = {s.symbol for s in stub.ListSymbols(pb.snapshot.ListSymbolsRequest(), timeout=10, metadata=md).symbols}
    assert listed == set(DESK)
    snap = stub.GetSnapshot(pb.snapshot.GetSnapshotRequest(symbols=[DESK[0], OTHER]), timeout=10, metadata=md)
    assert [q.symbol for q in snap.quotes] == [DESK[0]]
    assert [(r.symbol, r.code) for r in snap.rejected] == [(OTHER, pb.stream.ERROR_CODE_NOT_ENTITLED)]
    paged, page_token = set(), ""
    while True:
        r = stub.GetSnapshot(
            pb.snapshot.GetSnapshotRequest(page_size=2, page_token=page_token), timeout=10, metadata=md
        )
        paged |= {q.symbol for q in r.quotes}
        page_token = r.next_page_token
        if not page_token:
            break
    assert paged == set(DESK), "a paged snapshot leaks nothing"
    with pytest.raises(grpc.RpcError) as e:
        next(iter(stub.StreamQuotes(pb.snapshot.StreamQuotesRequest(symbols=[OTHER]), timeout=10, metadata=md)))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    call = stub.StreamQuotes(pb.snapshot.StreamQuotesRequest(symbols=[DESK[0], OTHER]), timeout=10, metadata=md)
    first = next(iter(call))
    assert list(first.ack.accepted) == [DESK[0]]
    assert [r.symbol for r in first.ack.rejected] == [OTHER]
    call.cancel()


def test_a_grpc_stream_ends_at_its_tokens_expiry(pb, stub):
    md = [("authorization", f"Bearer {token(symbols=DESK, exp_in=2)}")]
    call = stub.StreamQuotes(pb.snapshot.StreamQuotesRequest(symbols=DESK[:1]), timeout=20, metadata=md)
    t0 = time.time()
    with pytest.raises(grpc.RpcError) as e:
        for _ in call:
            pass
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "token expired" in e.value.details()
    assert time.time() - t0 < 10


def relay(client):
    """A stand-in balancer: accepts on a loopback port, connects to the
    gateway's gRPC port from 127.0.0.8 (a trusted proxy), sends a PROXY v1
    header naming `client`, then relays both ways. Returns its address."""
    host, port = ADDR.rsplit(":", 1)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        while True:
            c, _ = srv.accept()
            up = socket.socket()
            up.bind(("127.0.0.8", 0))
            up.connect((host, int(port)))
            up.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 {port}\r\n".encode())
            threading.Thread(target=pipe, args=(c, up), daemon=True).start()
            threading.Thread(target=pipe, args=(up, c), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{srv.getsockname()[1]}"


def test_grpc_behind_a_trusted_proxy_limits_count_the_real_client(pb):
    guesser = pb.snapshot_grpc.QuoteServiceStub(grpc.insecure_channel(relay("198.51.100.20")))
    other = pb.snapshot_grpc.QuoteServiceStub(grpc.insecure_channel(relay("198.51.100.21")))
    req = pb.snapshot.ListSymbolsRequest()
    for _ in range(20):
        with pytest.raises(grpc.RpcError) as e:
            guesser.ListSymbols(req, timeout=10, metadata=[("authorization", "Bearer guess")])
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        guesser.ListSymbols(req, timeout=10, metadata=[("authorization", f"Bearer {keys()['all']}")])
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, "that client is blocked"
    ok = other.ListSymbols(req, timeout=10, metadata=[("authorization", f"Bearer {keys()['all']}")])
    assert len(ok.symbols) == len(SYMBOLS), "another client behind the same balancer is not"
