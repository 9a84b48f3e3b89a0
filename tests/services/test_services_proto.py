"""The committed gRPC stubs are exactly what the pinned grpcio-tools makes of proto/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUBS = ("codec_pb2.py", "codec_pb2.pyi", "codec_pb2_grpc.py")


def test_stubs_match_a_fresh_generation(tmp_path):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "proto/vov/v1/codec.proto")],
                   check=True)
    for name in STUBS:
        fresh = (tmp_path / "vov" / "v1" / name).read_bytes()
        committed = (ROOT / "src" / "vov" / "v1" / name).read_bytes()
        assert fresh == committed, f"src/vov/v1/{name} is stale: regenerate it (see src/vov/v1/__init__.py)"

