"""How connections end, seen by clients nobody here wrote: Python
`websockets` (and raw sockets where a library refuses to misbehave).

Run by gateway/tests/python_closing.rs, one case per gateway set up for it:
QUOTECAST_WS_URL says where, QUOTECAST_SYMBOLS what to subscribe.
"""

import asyncio
import json
import os
import socket
import struct
import time

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

URL = os.environ.get("QUOTECAST_WS_URL", "ws://127.0.0.1:8080/")
SYMBOLS = os.environ.get("QUOTECAST_SYMBOLS", "AAPL,MSFT").split(",")
HOST, PORT = URL.split("//")[1].rstrip("/").split(":")
PORT = int(PORT)


async def closed_by_server(ws, timeout=20):
    """Reads until the server closes; returns the ConnectionClosed."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout=timeout)
    except ConnectionClosed as e:
        return e


# -- client-initiated closes: the gateway echoes the Close frame -----------

@pytest.mark.parametrize("code", [1000, 4000])
def test_client_close_is_echoed(code):
    async def run():
        async with connect(URL) as ws:
            await ws.send(json.dumps({"op": "subscribe", "symbols": SYMBOLS}))
            await asyncio.wait_for(ws.recv(), timeout=10)
            await ws.close(code=code, reason="bye")
            assert ws.protocol.close_rcvd is not None, "no Close frame came back"
            assert ws.protocol.close_rcvd.code == code
            assert ws.close_code == code

    asyncio.run(run())


def raw_upgrade(local="127.0.0.1"):
    """A raw socket that did the HTTP upgrade; returns it."""
    s = socket.create_connection((HOST, PORT), timeout=10, source_address=(local, 0))
    s.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def masked(opcode, payload, fin=True):
    """A client frame (masked, as RFC 6455 requires)."""
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def read_frames_until_close(s):
    """Reads server frames until a Close frame; returns its payload, and
    whether the server then closed TCP cleanly (EOF, not a reset)."""
    buf = b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk

    while True:
        need(2)
        opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
        off = 2
        if n == 126:
            need(4)
            n, off = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            need(10)
            n, off = struct.unpack("!Q", buf[2:10])[0], 10
        need(off + n)
        payload, buf = buf[off:off + n], buf[off + n:]
        if opcode == 0x8:
            break
    try:
        clean = s.recv(1) == b""
    except ConnectionResetError:
        clean = False
    return payload, clean


def test_empty_close_is_echoed_empty():
    s = raw_upgrade()
    s.sendall(masked(0x8, b""))
    payload, clean = read_frames_until_close(s)
    assert payload == b""
    assert clean, "TCP reset instead of a clean close"


@pytest.mark.parametrize(
    "payload",
    [struct.pack("!H", 999), struct.pack("!H", 1005), struct.pack("!H", 1006),
     struct.pack("!H", 5000), b"\x03"],
    ids=["999", "1005", "1006", "5000", "one-byte"],
)
def test_invalid_close_is_answered_1002(payload):
    s = raw_upgrade()
    s.sendall(masked(0x8, payload))
    reply, clean = read_frames_until_close(s)
    assert struct.unpack("!H", reply[:2])[0] == 1002, reply
    assert clean


def test_frame_length_with_top_bit_is_a_protocol_error():
    s = raw_upgrade()
    s.sendall(struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63) + b"\x01\x02\x03\x04")
    reply, clean = read_frames_until_close(s)
    assert struct.unpack("!H", reply[:2])[0] == 1002, reply
    assert clean


# -- too much at once: 1009, every time ------------------------------------

def big_messages():
    limit = 16384
    many = {"op": "subscribe", "symbols": [f"S{i}" for i in range(100_000)]}
    return [
        ("16KiB+1", lambda: "x" * (limit + 1)),
        ("1MB-json", lambda: json.dumps({"op": "ping", "id": "y" * 1_000_000})),
        ("100k-symbols", lambda: json.dumps(many)),
        ("fragmented-40KB", lambda: ["z" * 4000 for _ in range(10)]),
    ]


@pytest.mark.parametrize("name,make", big_messages(), ids=[n for n, _ in big_messages()])
def test_oversized_message_gets_1009_every_time(name, make):
    async def once():
        async with connect(URL, max_queue=None) as ws:
            try:
                await ws.send(make())
            except ConnectionClosed:
                pass
            e = await closed_by_server(ws)
            assert e.rcvd is not None, f"{name}: no Close frame ({e})"
            assert e.rcvd.code == 1009, (name, e.rcvd)
            assert "exceeds" in e.rcvd.reason or "too" in e.rcvd.reason.lower(), e.rcvd.reason

    async def run():
        for _ in range(5):
            await once()

    asyncio.run(run())


# -- pipelined requests are all answered -----------------------------------

def test_pipelined_requests_are_answered_without_a_close():
    async def run():
        async with connect(URL) as ws:
            n = 200
            for i in range(n):
                await ws.send(json.dumps({"op": "ping", "id": str(i), "ts": i}))
            kinds = {}
            ids = set()
            while len(ids) < n:
                reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                kinds[reply.get("code", reply["type"])] = kinds.get(reply.get("code", reply["type"]), 0) + 1
                ids.add(reply["id"])
            assert ids == {str(i) for i in range(n)}
            assert kinds.get("pong", 0) >= 1 and kinds.get("RATE_LIMITED", 0) >= 1, kinds
            # Still open and served once the rate allows.
            await asyncio.sleep(2)
            await ws.send(json.dumps({"op": "ping", "id": "after"}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            assert reply == {"type": "pong", "id": "after", "ts": 0} or reply["id"] == "after", reply

    asyncio.run(run())


def test_one_hundred_requests_in_one_tcp_write():
    s = raw_upgrade()
    frames = b"".join(masked(0x1, json.dumps({"op": "ping", "id": str(i)}).encode()) for i in range(100))
    s.sendall(frames)
    seen = set()
    buf = b""
    deadline = time.time() + 15
    while len(seen) < 100 and time.time() < deadline:
        chunk = s.recv(65536)
        assert chunk, f"closed after {len(seen)} replies"
        buf += chunk
        while len(buf) >= 2:
            opcode, n, off = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            if len(buf) < off + n:
                break
            payload, buf = buf[off:off + n], buf[off + n:]
            assert opcode != 0x8, f"closed with {payload!r} after {len(seen)} replies"
            if opcode == 0x1:
                seen.add(json.loads(payload)["id"])
    assert seen == {str(i) for i in range(100)}
    s.close()


# -- a slow reader learns why it was closed --------------------------------

@pytest.mark.parametrize("pause", [0.02, 0.05])
def test_slow_reader_gets_4008_with_its_reason(pb, pause):
    """Reads one frame per `pause` s: closed with 4008 and told why. (Its
    socket stays full, so the conflated values it skipped to are dropped
    with the rest of its queue at the close.) The Close frame comes after what the
    client's own buffers already hold (hundreds of small frames), so the
    client's keepalive is off: its pings would time out behind them."""
    async def run():
        async with connect(URL, max_queue=4, ping_interval=None) as ws:
            await ws.send(json.dumps({"op": "subscribe", "symbols": SYMBOLS}))
            t0 = time.time()
            skipped = 0
            try:
                while True:
                    frame = await asyncio.wait_for(ws.recv(), timeout=60)
                    if isinstance(frame, bytes):
                        msg = pb.stream.ServerMessage()
                        msg.ParseFromString(frame)
                        if msg.WhichOneof("body") == "updates":
                            skipped += sum(u.skipped for u in msg.updates.updates)
                    await asyncio.sleep(pause)
            except ConnectionClosed as e:
                took = time.time() - t0
                assert e.rcvd is not None, f"no Close frame after {took:.1f} s: {e}"
                assert e.rcvd.code == 4008, e.rcvd
                assert e.rcvd.reason.startswith("slow consumer"), e.rcvd.reason
                print(f"pause {pause}: 4008 after {took:.1f} s, {skipped} updates skipped")

    asyncio.run(run())


# -- handshakes: a flood of silent sockets keeps no real client out --------

def test_silent_sockets_do_not_keep_real_clients_out():
    silent = []
    refused = 0
    for _ in range(40):
        s = socket.create_connection((HOST, PORT), timeout=5, source_address=("127.0.0.3", 0))
        silent.append(s)
    # Those over the per-address bound are told so at once.
    for s in silent:
        s.settimeout(0.5)
        try:
            head = s.recv(200)
            if head.startswith(b"HTTP/1.1 503") and b"Retry-After:" in head:
                refused += 1
        except socket.timeout:
            pass
    assert refused >= 40 - int(os.environ.get("QUOTECAST_PER_IP", "8")), refused

    async def run():
        # Another address still gets in and is served...
        async with connect(URL, local_addr=("127.0.0.2", 0)) as a, \
                connect(URL, local_addr=("127.0.0.4", 0)) as b:
            for ws in (a, b):
                await ws.send(json.dumps({"op": "ping", "id": "p"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), timeout=10))["type"] == "pong"
            # ...until the connection limit, which is told with 1013.
            async with connect(URL, local_addr=("127.0.0.5", 0)) as c:
                e = await closed_by_server(c)
                assert e.rcvd is not None and e.rcvd.code == 1013, e
                assert "retry" in e.rcvd.reason, e.rcvd.reason

    asyncio.run(run())
    for s in silent:
        s.close()
