"""Generated protocol-buffer and gRPC modules for proto/vov/v1/codec.proto (do not edit).

Regenerate from the repository root with:
    python -m grpc_tools.protoc -Iproto --python_out=src --pyi_out=src --grpc_python_out=src proto/vov/v1/codec.proto
tests/services/test_services_proto.py checks that the committed files match a fresh generation byte for byte.
Only the services and vov.serving.client import these; the codec library never does.
"""
