"""`helm test`: both vov services answer gRPC health checks and ListModels.

Run inside the decoder image (grpcio, the health stubs and vov's generated stubs are there):
  python helm-test.py --encoder HOST:PORT --decoder HOST:PORT [--ca FILE [--cert FILE --key FILE]]
Exit status 0 when every check passed; one line per check either way.
"""

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vov.v1 import codec_pb2, codec_pb2_grpc

SERVICES = {"encoder": ("vov.v1.Encoder", codec_pb2_grpc.EncoderStub),
            "decoder": ("vov.v1.Decoder", codec_pb2_grpc.DecoderStub)}


def channel(address: str, args) -> grpc.Channel:
    if not args.ca:
        return grpc.insecure_channel(address)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(read(args.ca), read(args.key) if args.key else None,
                                               read(args.cert) if args.cert else None)
    return grpc.secure_channel(address, credentials)


def check(name: str, address: str, args) -> list[str]:
    service, stub_class = SERVICES[name]
    failures = []
    with channel(address, args) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for asked in ("", service):
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=asked), timeout=args.timeout).status
                ok = status == health_pb2.HealthCheckResponse.SERVING
                detail = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as e:
                ok, detail = False, f"{e.code().name}: {e.details()}"
            print(f"{'ok  ' if ok else 'FAIL'} {name} {address} health {asked or '(server)'}: {detail}")
            if not ok:
                failures.append(f"{name} health {asked or '(server)'}")
        try:
            models = stub_class(ch).ListModels(codec_pb2.ListModelsRequest(), timeout=args.timeout).models
            ok = len(models) > 0
            detail = ", ".join(f"{m.backbone} ({m.engine or 'torch'})" for m in models) or "no models"
        except grpc.RpcError as e:
            ok, detail = False, f"{e.code().name}: {e.details()}"
        print(f"{'ok  ' if ok else 'FAIL'} {name} {address} ListModels: {detail}")
        if not ok:
            failures.append(f"{name} ListModels")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", help="encoder address HOST:PORT (omit to skip)")
    parser.add_argument("--decoder", help="decoder address HOST:PORT (omit to skip)")
    parser.add_argument("--ca", help="CA certificate that signed the services' certificates (TLS)")
    parser.add_argument("--cert", help="client certificate (mutual TLS)")
    parser.add_argument("--key", help="client key (mutual TLS)")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    failures = []
    for name in ("encoder", "decoder"):
        address = getattr(args, name)
        if address:
            failures += check(name, address, args)
    if failures:
        print(f"helm test: {len(failures)} check(s) failed: {', '.join(failures)}")
        return 1
    print("helm test: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
