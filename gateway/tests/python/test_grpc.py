"""A gRPC client nobody here wrote: Python `grpcio` with stubs generated from
proto/ at test time, plus the standard health and reflection clients.

Run by gateway/tests/grpc_python.rs against a live gateway and feed:
QUOTECAST_GRPC_ADDR is where, QUOTECAST_SYMBOLS what to ask for,
QUOTECAST_PROTO_DIR where the .proto files are.
"""

import importlib
import os
import subprocess
import sys
import tempfile

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

ADDR = os.environ.get("QUOTECAST_GRPC_ADDR", "127.0.0.1:50051")
SYMBOLS = os.environ.get("QUOTECAST_SYMBOLS", "AAPL,MSFT").split(",")
PROTO_DIR = os.environ.get(
    "QUOTECAST_PROTO_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "proto", "proto"),
)
SERVICE = "quotecast.v1.QuoteService"


@pytest.fixture(scope="module")
def qc():
    """Generates quotecast/v1 messages and gRPC stubs with grpc_tools.protoc."""
    out = tempfile.mkdtemp(prefix="quotecast-grpc-py-")
    protos = ["quotecast/v1/stream.proto", "quotecast/v1/snapshot.proto"]
    subprocess.check_call(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_DIR,
         f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    sys.path.insert(0, out)

    class Modules:
        stream = importlib.import_module("quotecast.v1.stream_pb2")
        snapshot = importlib.import_module("quotecast.v1.snapshot_pb2")
        grpc = importlib.import_module("quotecast.v1.snapshot_pb2_grpc")

    return Modules


@pytest.fixture(scope="module")
def channel():
    with grpc.insecure_channel(ADDR) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


def test_get_snapshot_by_name_with_unknown_reported_per_symbol(qc, channel):
    stub = qc.grpc.QuoteServiceStub(channel)
    resp = stub.GetSnapshot(qc.snapshot.GetSnapshotRequest(symbols=SYMBOLS + ["NOPE9"]), timeout=10)
    assert [q.symbol for q in resp.quotes] == SYMBOLS
    for q in resp.quotes:
        assert q.snapshot and q.seq > 0
        assert 0 < q.bid_px < q.ask_px, "fixed-point prices, bid below ask"
        assert q.ts_recv >= q.ts_event > 0
    assert resp.feed_seq > 0 and resp.ts > 0
    assert [r.symbol for r in resp.rejected] == ["NOPE9"]
    assert resp.rejected[0].code == qc.stream.ERROR_CODE_UNKNOWN_SYMBOL


def test_all_symbols_paged_match_list_symbols(qc, channel):
    stub = qc.grpc.QuoteServiceStub(channel)
    universe = stub.ListSymbols(qc.snapshot.ListSymbolsRequest(), timeout=10).symbols
    assert len(universe) >= len(SYMBOLS)
    # One update per sequence number (the count may trail by the update
    # being applied while we read).
    assert all(s.update_count + 1 >= s.seq for s in universe)
    assert any(s.seq > 0 for s in universe)
    seen, token, pages = [], "", 0
    while True:
        req = qc.snapshot.GetSnapshotRequest(page_size=7, page_token=token)
        resp = stub.GetSnapshot(req, timeout=10)
        assert len(resp.quotes) <= 7
        seen += [q.symbol for q in resp.quotes]
        pages += 1
        token = resp.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(s.symbol for s in universe)
    assert pages == -(-len(universe) // 7)


def test_bad_requests_get_status_codes(qc, channel):
    stub = qc.grpc.QuoteServiceStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.GetSnapshot(qc.snapshot.GetSnapshotRequest(symbols=["not valid"]), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not valid" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.GetSnapshot(qc.snapshot.GetSnapshotRequest(symbols=["A"] * 1001), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_quotes_ack_snapshot_then_in_order(qc, channel):
    stub = qc.grpc.QuoteServiceStub(channel)
    call = stub.StreamQuotes(qc.snapshot.StreamQuotesRequest(symbols=SYMBOLS), timeout=30)
    first = next(call)
    assert first.WhichOneof("body") == "ack"
    assert list(first.ack.accepted) == SYMBOLS
    last, updates = {}, 0
    for msg in call:
        if msg.WhichOneof("body") != "updates":
            continue
        assert msg.updates.ts_send > 0
        for u in msg.updates.updates:
            assert u.symbol in SYMBOLS
            if u.symbol not in last:
                assert u.snapshot, "a symbol starts with its snapshot"
            else:
                assert not u.snapshot
                assert u.seq == last[u.symbol] + 1 + u.skipped, (u.symbol, u.seq, last[u.symbol])
                updates += 1
            last[u.symbol] = u.seq
        if updates >= 200:
            break
    call.cancel()
    assert set(last) == set(SYMBOLS)


def test_stream_ends_at_the_deadline(qc, channel):
    stub = qc.grpc.QuoteServiceStub(channel)
    call = stub.StreamQuotes(qc.snapshot.StreamQuotesRequest(symbols=SYMBOLS[:1]), timeout=0.5)
    with pytest.raises(grpc.RpcError) as e:
        for _ in call:
            pass
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_health_check_and_watch(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ["", SERVICE]:
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    with pytest.raises(grpc.RpcError) as e:
        stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_v1alpha_describes_the_service(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = db.get_services()
    assert SERVICE in services and "grpc.health.v1.Health" in services, services
    pool = descriptor_pool.DescriptorPool(db)
    svc = pool.FindServiceByName(SERVICE)
    assert {m.name for m in svc.methods} == {"GetSnapshot", "ListSymbols", "StreamQuotes"}
    stream = svc.methods_by_name["StreamQuotes"]
    assert stream.output_type.full_name == "quotecast.v1.StreamQuotesResponse"
    update = pool.FindMessageTypeByName("quotecast.v1.QuoteUpdate")
    assert {"seq", "bid_px", "skipped", "resume_failed"} <= set(update.fields_by_name)


def test_reflection_v1_lists_services(channel):
    # grpcurl asks v1 first. v1 and v1alpha messages are identical on the
    # wire, so the v1alpha classes serve for a raw v1 call.
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    reqs = iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
    ])
    answers = list(info(reqs, timeout=10))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
    assert answers[1].file_descriptor_response.file_descriptor_proto, "descriptors for describe"
