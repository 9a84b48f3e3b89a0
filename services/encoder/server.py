"""The encoder service: `Encoder.Compress` fits an adaptation to one image and returns its .vov file.

The call streams the image in (options first, then chunks), runs vov.codec.compress in a worker
thread with the server's backbone, and streams progress events (throttled) until the bitstream.
At most --max-fits fits run at once (each uses every torch thread); further calls wait their turn.
If the client goes away, the fit stops at its next step.

Run: python -m services.encoder --backbone tiny   (flags: --help)
"""

from __future__ import annotations

import argparse
import threading
import time

from vov import codec
from vov.v1 import codec_pb2, codec_pb2_grpc

from .. import common, metrics
from ..common import (MESSAGE_SLACK, MIB, Server, Throttle, TooLarge, abort_with, common_arguments, env_default, event,
                      logger, stream_worker)

SERVICE = "vov.v1.Encoder"
STAGES = {1: "fit", 2: "rate"}


def encode_options(o: codec_pb2.CompressOptions, server_backbone: str) -> codec.EncodeOptions:
    """The wire options -> vov.codec.EncodeOptions (defaults as the `vov compress` command's)."""
    from vov.method.adapters import AdapterSpec
    from vov.errors import BackboneMismatch, UsageError
    from vov.method.fit import FitConfig

    if o.backbone and o.backbone != server_backbone:
        raise BackboneMismatch(f"this encoder serves backbone {server_backbone!r}, not {o.backbone!r}")
    rate = o.WhichOneof("rate")
    if rate == "target_bpp" and not o.target_bpp > 0:
        raise UsageError(f"target_bpp must be positive, not {o.target_bpp}")
    if rate == "lambda" and not getattr(o, "lambda") > 0:
        raise UsageError(f"lambda must be positive, not {getattr(o, 'lambda')}")
    if o.steps > 100_000 or o.sampler_steps > 10_000:
        raise UsageError("steps must be at most 100000 and sampler_steps at most 10000")
    target = o.target_bpp if rate == "target_bpp" else (None if rate == "lambda" else 0.05)
    spec = AdapterSpec(o.kind or "one-vector", o.rank or 4, o.dim or 16384, o.seed, o.targets)
    spec.validate()
    fit = FitConfig(steps=o.steps or 1200, seed=o.seed, target_bpp=target,
                    **({"lam": getattr(o, "lambda")} if rate == "lambda" else {}))
    return codec.EncodeOptions(backbone=server_backbone, adapter=spec, fit=fit, sampler_steps=o.sampler_steps or 50,
                               noise_seed=o.seed, auto_d=o.dim == 0)


class EncoderServicer(codec_pb2_grpc.EncoderServicer):
    def __init__(self, backbone, max_image_bytes: int, max_fits: int, log):
        self.backbone, self.max_image_bytes, self.log = backbone, max_image_bytes, log
        self.slots = threading.BoundedSemaphore(max_fits)
        metrics.set_fit_slots(max_fits)

    def _receive(self, request_iterator) -> tuple[codec_pb2.CompressOptions, bytes]:
        from vov.errors import UsageError

        options, chunks, size = None, [], 0
        for message in request_iterator:
            part = message.WhichOneof("part")
            if part == "options":
                if options is not None or chunks:
                    raise UsageError("options must come once, in the first message")
                options = message.options
            elif part == "chunk":
                size += len(message.chunk)
                if size > self.max_image_bytes:
                    raise TooLarge(f"the image is over {self.max_image_bytes} bytes, this encoder's limit")
                chunks.append(message.chunk)
        if options is None:
            raise UsageError("the first message must carry the options")
        if not size:
            raise UsageError("no image bytes were sent")
        return options, b"".join(chunks)

    def _compress(self, image: bytes, options: codec.EncodeOptions, emit):
        from vov.media import load_image

        picture = load_image(image)
        throttle = Throttle()

        def on_progress(p) -> None:
            if throttle(p.step, p.total):
                emit(p)

        with metrics.fit_slot(self.slots):  # counted as queued while it waits
            return codec.compress(picture, options, backbone=self.backbone, on_progress=on_progress)

    def Compress(self, request_iterator, context):
        start = time.perf_counter()
        size = 0
        try:
            wire, image = self._receive(request_iterator)
            size = len(image)
            options = encode_options(wire, self.backbone.name)
            report = None
            for kind, item in stream_worker(lambda emit: self._compress(image, options, emit), context):
                if kind == "event":
                    yield codec_pb2.CompressResponse(progress=codec_pb2.CompressProgress(
                        step=item.step, total=item.total, stage=STAGES.get(item.stage, str(item.stage)),
                        loss=item.distortion, estimated_bits=item.est_bits, **{"lambda": item.lam}))
                else:
                    report = item
        except Exception as e:
            abort_with(context, self.log, "Compress", e, bytes=size)
            return
        from vov.format import bitstream

        f = bitstream.load(report.data)
        yield codec_pb2.CompressResponse(result=codec_pb2.CompressResult(
            bitstream=report.data, bpp=report.bpp, width=f.width, height=f.height, d=report.d,
            payload_bits=report.payload_bits, estimated_bits=report.est_bits, seconds=report.seconds))
        event(self.log, "Compress done", rpc="Compress", bytes=size, width=f.width, height=f.height,
              file_bytes=len(report.data), bpp=round(report.bpp, 5), seconds=round(time.perf_counter() - start, 3))

    def ListModels(self, request, context):
        b = self.backbone
        return codec_pb2.ListModelsResponse(models=[codec_pb2.ModelInfo(
            backbone=b.name, content_hash=b.content_hash.hex(), latent_channels=b.latent_channels,
            pixel_multiple=b.pixel_multiple, target_presets=sorted(b.target_presets), engine="torch")])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common_arguments(parser, "VOV_ENCODER", 50051)
    parser.add_argument("--max-image-bytes", type=int, default=env_default("VOV_MAX_IMAGE_BYTES", 64 * MIB, int),
                        help="largest image upload accepted (env VOV_MAX_IMAGE_BYTES, default 64 MiB)")
    parser.add_argument("--max-fits", type=int, default=env_default("VOV_MAX_FITS", 1, int),
                        help="fits that run at once; others wait (env VOV_MAX_FITS, default 1)")


def serve(args: argparse.Namespace) -> Server:
    """Build and start the encoder server; returns it running (call .stop(grace) to end it)."""
    log = logger("encoder")
    backbone = common.load_backbone(args, log)
    servicer = EncoderServicer(backbone, args.max_image_bytes, max(1, args.max_fits), log)
    # the image arrives in chunks of at most 1 MiB, so messages stay small; the limit is generous anyway
    server = Server([SERVICE], lambda s: codec_pb2_grpc.add_EncoderServicer_to_server(servicer, s), args.host,
                    args.port, args.workers, 4 * MIB + MESSAGE_SLACK, log)
    server.start()
    event(log, "serving", address=server.address, max_image_bytes=args.max_image_bytes, max_fits=args.max_fits)
    return server


def main(argv: list[str] | None = None) -> int:
    return common.main("encoder", add_arguments, serve, argv)
