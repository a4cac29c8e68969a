"""SIGTERM drains a node, as clients nobody here wrote see it: Python
`websockets` for WebSocket, `grpcio` for health and StreamQuotes, urllib
for /readyz (what a load balancer's health check does).

Run by gateway/tests/drain.rs against a gateway *binary* it started, with a
feed running: QUOTECAST_WS_URL, QUOTECAST_HTTP (host:port of /readyz),
QUOTECAST_GRPC_ADDR, QUOTECAST_GATEWAY_PID (the test sends SIGTERM itself),
QUOTECAST_SYMBOLS, QUOTECAST_DRAIN_DELAY_MS, QUOTECAST_DRAIN_SPREAD_MS.
"""

import asyncio
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import grpc
import websockets
from grpc_health.v1 import health_pb2, health_pb2_grpc

URL = os.environ["QUOTECAST_WS_URL"]
HTTP = os.environ["QUOTECAST_HTTP"]
GRPC = os.environ["QUOTECAST_GRPC_ADDR"]
PID = int(os.environ["QUOTECAST_GATEWAY_PID"])
SYMBOLS = os.environ["QUOTECAST_SYMBOLS"].split(",")
DELAY = int(os.environ["QUOTECAST_DRAIN_DELAY_MS"]) / 1000
SPREAD = int(os.environ["QUOTECAST_DRAIN_SPREAD_MS"]) / 1000
CLIENTS = 40


def readyz():
    """(status, body) of GET /readyz."""
    try:
        with urllib.request.urlopen(f"http://{HTTP}/readyz", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Client:
    """One WebSocket client: counts binary frames (update batches) and
    records when and how the server closed it."""

    def __init__(self, i):
        self.i = i
        self.frames = 0
        self.frame_times = []
        self.code = None
        self.reason = None
        self.closed_at = None
        self.got_first = asyncio.Event()

    async def run(self):
        syms = ",".join(SYMBOLS[self.i % len(SYMBOLS):] + SYMBOLS[: self.i % len(SYMBOLS)])
        async with websockets.connect(f"{URL}?symbols={syms}", max_size=1 << 20) as ws:
            try:
                async for m in ws:
                    if isinstance(m, bytes):
                        self.frames += 1
                        self.frame_times.append(time.monotonic())
                        self.got_first.set()
            except websockets.ConnectionClosed:
                pass
            self.closed_at = time.monotonic()
            self.code = ws.close_code
            self.reason = ws.close_reason


def grpc_stream(pb, out):
    """StreamQuotes until the server ends it; records the final status."""
    with grpc.insecure_channel(GRPC) as ch:
        stub = pb.snapshot_grpc.QuoteServiceStub(ch)
        try:
            for _ in stub.StreamQuotes(pb.snapshot.StreamQuotesRequest(symbols=SYMBOLS[:3])):
                out.setdefault("first", time.monotonic())
        except grpc.RpcError as e:
            out["code"] = e.code()
            out["details"] = e.details()
            out["at"] = time.monotonic()


def health(ch):
    stub = health_pb2_grpc.HealthStub(ch)
    r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)


def test_sigterm_fails_readiness_first_then_closes_clients_1012_spread_out(pb):
    assert readyz()[0] == 200, "the gateway must be ready before the drain"
    stream = {}
    t = threading.Thread(target=grpc_stream, args=(pb, stream), daemon=True)
    t.start()
    hch = grpc.insecure_channel(GRPC)
    assert health(hch) == "SERVING"

    async def run():
        clients = [Client(i) for i in range(CLIENTS)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        await asyncio.wait_for(asyncio.gather(*(c.got_first.wait() for c in clients)), 10)
        os.kill(PID, signal.SIGTERM)
        t0 = time.monotonic()
        # Not ready at once: the balancer's next check fails.
        status, body = None, ""
        while time.monotonic() - t0 < 1.0:
            status, body = await asyncio.to_thread(readyz)
            if status == 503:
                break
            await asyncio.sleep(0.02)
        became_unready = time.monotonic() - t0
        assert status == 503 and "draining" in body, (status, body)
        assert became_unready < min(0.5, DELAY / 2), became_unready
        assert await asyncio.to_thread(health, hch) == "NOT_SERVING"
        # ... while every client is still served during the delay.
        await asyncio.sleep(DELAY * 0.7)
        for c in clients:
            assert c.code is None, f"client {c.i} closed during the drain delay: {c.code} {c.reason}"
        await asyncio.wait_for(asyncio.gather(*tasks), DELAY + SPREAD + 5)
        return t0, clients

    t0, clients = asyncio.run(run())
    hch.close()
    for c in clients:
        assert c.code == 1012, (c.i, c.code, c.reason)
        assert "reconnect" in c.reason and "from_seq" in c.reason, c.reason
        # Served until shortly before its own turn, not cut off at the signal.
        assert c.frame_times and c.frame_times[-1] > t0 + DELAY * 0.7, c.i
    at = sorted(c.closed_at - t0 for c in clients)
    assert at[0] >= DELAY * 0.9, f"first close {at[0]:.3f} s after SIGTERM, before the drain delay"
    assert at[-1] <= DELAY + SPREAD + 1.0, f"last close {at[-1]:.3f} s after SIGTERM"
    # Spread out: not all in one instant (uniform turns over the spread).
    assert at[-1] - at[0] >= SPREAD * 0.5, at
    t.join(DELAY + SPREAD + 5)
    assert stream.get("code") == grpc.StatusCode.UNAVAILABLE, stream
    assert "reconnect" in stream.get("details", ""), stream
    assert stream["at"] - t0 >= DELAY * 0.9, stream
