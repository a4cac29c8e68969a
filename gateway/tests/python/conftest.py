"""Shared pytest fixtures: protobuf classes generated from proto/ at test time."""

import os
import subprocess
import sys
import tempfile

import pytest

PROTO_DIR = os.environ.get(
    "QUOTECAST_PROTO_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "proto", "proto"),
)


@pytest.fixture(scope="session")
def pb():
    """Generates Python modules for quotecast/v1/*.proto and imports them."""
    out = tempfile.mkdtemp(prefix="quotecast-pb-")
    protos = ["quotecast/v1/stream.proto", "quotecast/v1/snapshot.proto"]
    subprocess.check_call(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_DIR,
         f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    sys.path.insert(0, out)
    from quotecast.v1 import stream_pb2, snapshot_pb2, snapshot_pb2_grpc  # noqa: E402

    class Modules:
        stream = stream_pb2
        snapshot = snapshot_pb2
        snapshot_grpc = snapshot_pb2_grpc

    return Modules
