"""`vov serve`: Triton, the decoder and the encoder on loopback (vov.serving.serve.Stack), until
Ctrl-C or SIGTERM; a process that dies is restarted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime

from vov.cli import flags
from vov.errors import UsageError

NAME = "serve"
HELP = "start Triton, the decoder and the encoder services on loopback"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vov.serving.client import DEFAULT_PORTS
    from vov.serving.contract import DEFAULT_MAX_RANK

    flags.add_backbone(p, name=True, device_help="cpu, cuda or cuda:N for the encoder's fits (default: the backbone's)")
    p.add_argument("--repository", help="Triton model repository (default: ~/.cache/vov/triton/BACKBONE-ENV; "
                                        "exported if needed)")
    p.add_argument("--host", default="127.0.0.1", help="address every service listens on (default 127.0.0.1)")
    p.add_argument("--encoder-port", type=int, default=DEFAULT_PORTS["encoder"],
                   help=f"(default {DEFAULT_PORTS['encoder']})")
    p.add_argument("--decoder-port", type=int, default=DEFAULT_PORTS["decoder"],
                   help=f"(default {DEFAULT_PORTS['decoder']})")
    p.add_argument("--triton-grpc-port", type=int, default=8001, help="(default 8001)")
    p.add_argument("--triton-http-port", type=int, default=8000, help="(default 8000)")
    p.add_argument("--triton-metrics-port", type=int, default=8002, help="Triton's Prometheus metrics (default 8002)")
    p.add_argument("--max-rank", type=flags.positive(int),
                   help=f"largest adapter rank the engine serves (default {DEFAULT_MAX_RANK})")
    p.add_argument("--no-triton", action="store_true", help="run the denoiser in the decoder with ONNX Runtime")
    p.add_argument("--work-dir", help="logs of the three processes (default: a temporary directory)")


def _ports(args) -> dict[str, int]:
    ports = {"--encoder-port": args.encoder_port, "--decoder-port": args.decoder_port}
    if not args.no_triton:
        ports.update({"--triton-grpc-port": args.triton_grpc_port, "--triton-http-port": args.triton_http_port,
                      "--triton-metrics-port": args.triton_metrics_port})
    return ports


def check_ports(host: str, ports: dict[str, int]) -> None:
    """UsageError naming the first port (by its flag) that is out of range or that another process holds."""
    import socket

    seen: dict[int, str] = {}
    for flag, port in ports.items():
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag} must be a port from 1 to 65535 (0: any free port), not {port}")
        if port in seen:
            raise UsageError(f"{flag} and {seen[port]} are both {port}; give each service its own port")
        if port == 0:
            continue
        seen[port] = flag
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError as e:
                raise UsageError(f"{host}:{port} is in use or not available ({e.strerror or e}); "
                                 f"choose another with {flag}") from None


def run(args) -> None:
    from vov.serving.serve import Stack

    def log(message: str) -> None:
        print(f"vov serve {datetime.now().isoformat(timespec='seconds')}: {message}", file=sys.stderr, flush=True)

    check_ports(args.host, _ports(args))
    stack = Stack(args.backbone, args.repository, args.work_dir, args.host, args.encoder_port, args.decoder_port,
                  args.triton_grpc_port, args.triton_http_port, args.max_rank, with_triton=not args.no_triton, log=log,
                  triton_metrics_port=args.triton_metrics_port, model=args.model, device=args.device)
    stopping = threading.Event()

    def handler(signum, _frame):
        stopping.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        stack.start()
        print(f"vov serve: ready on {stack.host}")
        if not args.no_triton:
            print(f"triton   {stack.triton_url} (gRPC), {stack.host}:{stack.ports['triton_http']} (HTTP), "
                  f"{stack.host}:{stack.ports['triton_metrics']} (metrics)")
        print(f"decoder  {stack.decoder_address}   (vov decompress --server {stack.decoder_address})")
        print(f"encoder  {stack.encoder_address}   (vov compress --server {stack.encoder_address})")
        print(f"logs     {stack.work}")
        print("Ctrl-C stops all three; a process that dies is restarted.", flush=True)
        stack.supervise(stopping)
    except KeyboardInterrupt:
        pass
    finally:
        print("vov: stopping", file=sys.stderr)
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
