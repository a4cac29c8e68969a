"""A WebSocket client nobody here wrote: Python `websockets` + `protobuf`.

Run by gateway/tests/python_clients.rs with a live gateway and feed:
QUOTECAST_WS_URL and QUOTECAST_SYMBOLS say where and what to subscribe.
"""

import asyncio
import json
import os

import websockets

URL = os.environ.get("QUOTECAST_WS_URL", "ws://127.0.0.1:8080/")
SYMBOLS = os.environ.get("QUOTECAST_SYMBOLS", "AAPL,MSFT").split(",")


async def read_updates(ws, pb, want, snapshot_first=True):
    """Reads binary frames until `want` updates arrived; checks the order.

    With `snapshot_first`, the first update of each symbol must be its
    snapshot (false when the caller already consumed it)."""
    last = {}
    n = 0
    while n < want:
        frame = await asyncio.wait_for(ws.recv(), timeout=10)
        if isinstance(frame, str):
            continue
        msg = pb.stream.ServerMessage()
        msg.ParseFromString(frame)
        if msg.WhichOneof("body") != "updates":
            continue
        assert msg.updates.ts_send > 0
        for u in msg.updates.updates:
            assert u.symbol in SYMBOLS, u.symbol
            if u.symbol not in last:
                assert u.snapshot or not snapshot_first, "first message of a symbol is its snapshot"
            else:
                assert u.seq == last[u.symbol] + 1 + u.skipped, (u.symbol, u.seq, last[u.symbol])
                assert u.ts_recv >= u.ts_event > 0
                assert 0 < u.bid_px < u.ask_px, "fixed-point prices, bid below ask"
                n += 1
            last[u.symbol] = u.seq
    return last


def test_json_subscribe_then_binary_updates(pb):
    async def run():
        async with websockets.connect(URL) as ws:
            await ws.send(json.dumps({"op": "subscribe", "id": "py-1", "symbols": SYMBOLS}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            assert ack["type"] == "ack" and ack["id"] == "py-1"
            assert sorted(ack["accepted"]) == sorted(SYMBOLS)
            last = await read_updates(ws, pb, 200)
            assert set(last) == set(SYMBOLS)

    asyncio.run(run())


def test_binary_protocol_and_errors(pb):
    async def run():
        async with websockets.connect(URL) as ws:
            req = pb.stream.ClientMessage(id="b-1")
            req.subscribe.symbols.extend(SYMBOLS[:1] + ["NOSUCH"])
            await ws.send(req.SerializeToString())
            msg = pb.stream.ServerMessage()
            msg.ParseFromString(await asyncio.wait_for(ws.recv(), timeout=10))
            assert msg.WhichOneof("body") == "ack"
            assert list(msg.ack.accepted) == SYMBOLS[:1]
            assert msg.ack.rejected[0].code == pb.stream.ERROR_CODE_UNKNOWN_SYMBOL
            await ws.send(json.dumps({"op": "nope"}))
            while True:
                frame = await asyncio.wait_for(ws.recv(), timeout=10)
                if isinstance(frame, str):
                    err = json.loads(frame)
                    assert err["type"] == "error" and err["code"] == "BAD_REQUEST"
                    break
            await read_updates(ws, pb, 20, snapshot_first=False)

    asyncio.run(run())


def test_trading_status_of_a_halted_symbol(pb):
    """feed-sim halts a few symbols now and then: a client of every symbol
    gets TradingStatus messages, and updates carry the state."""
    every = os.environ["QUOTECAST_ALL_SYMBOLS"].split(",")

    async def run():
        async with websockets.connect(URL) as ws:
            await ws.send(json.dumps({"op": "subscribe", "symbols": every}))
            seen = {}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while loop.time() < deadline and "halted" not in seen:
                frame = await asyncio.wait_for(ws.recv(), timeout=20)
                if isinstance(frame, str):
                    continue
                msg = pb.stream.ServerMessage()
                msg.ParseFromString(frame)
                if msg.WhichOneof("body") == "trading":
                    t = msg.trading
                    assert set(t.symbols) <= set(every)
                    assert t.ts > 0
                    if t.state == pb.stream.TRADING_STATE_HALTED:
                        seen["halted"] = list(t.symbols)
            assert "halted" in seen, "no halt within 20 s"

    asyncio.run(run())


def test_resume_on_epoch_and_seq_after_a_reconnect(pb):
    """Every update carries the feed session as `epoch`; a client that
    reconnects with from_seq + from_epoch gets the updates after what it
    held, no snapshot; a stale epoch gets a fresh snapshot, flagged."""

    async def subscribe(ws, from_seq=None, epoch=""):
        req = pb.stream.ClientMessage(id="r")
        req.subscribe.symbols.extend(SYMBOLS)
        for sym, seq in (from_seq or {}).items():
            req.subscribe.from_seq[sym] = seq
        req.subscribe.from_epoch = epoch
        await ws.send(req.SerializeToString())

    async def updates(ws, n):
        got = []
        while len(got) < n:
            frame = await asyncio.wait_for(ws.recv(), timeout=10)
            msg = pb.stream.ServerMessage()
            msg.ParseFromString(frame)
            if msg.WhichOneof("body") == "updates":
                got.extend(msg.updates.updates)
        return got

    async def run():
        async with websockets.connect(URL) as ws:
            await subscribe(ws)
            seen = await updates(ws, 50)
        epochs = {u.epoch for u in seen}
        assert len(epochs) == 1 and "" not in epochs, epochs
        epoch = epochs.pop()
        held = {}
        for u in seen:
            held[u.symbol] = u.seq
        async with websockets.connect(URL) as ws:
            await subscribe(ws, held, epoch)
            after = await updates(ws, 20)
            first = {}
            for u in after:
                first.setdefault(u.symbol, u)
            for sym, u in first.items():
                assert not u.snapshot and not u.resume_failed, (sym, u)
                assert u.seq == held[sym] + 1, (sym, u.seq, held[sym])
                assert u.epoch == epoch
        async with websockets.connect(URL) as ws:
            await subscribe(ws, held, "S-OLD")
            u = (await updates(ws, 1))[0]
            assert u.snapshot and u.resume_failed and u.epoch == epoch

    asyncio.run(run())
