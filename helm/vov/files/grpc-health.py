"""A readiness probe that asks grpc.health.v1 over TLS (kubelet's own gRPC probe speaks plaintext only).

  python grpc-health.py --port 50052 --service vov.v1.Decoder --name vov-decoder.vov.svc \
      --ca /etc/vov/tls/ca.crt [--cert /etc/vov/tls/tls.crt --key /etc/vov/tls/tls.key]

Connects to 127.0.0.1:PORT, checks the certificate against --ca for the Service's DNS name (the name
the certificate carries), presents --cert/--key when the server requires client certificates, and
exits 0 only when the service answers SERVING. Every run reads the files again, so a renewed
certificate is used as soon as it is mounted.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", default="", help="the service to ask about ('' : the whole server)")
    parser.add_argument("--name", required=True, help="a DNS name the server's certificate carries")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    credentials = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))
    options = [("grpc.ssl_target_name_override", args.name), ("grpc.default_authority", args.name)]
    with grpc.secure_channel(f"127.0.0.1:{args.port}", credentials, options=options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=args.service),
                                                              timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"{e.code().name}: {e.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
