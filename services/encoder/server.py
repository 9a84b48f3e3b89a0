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
from vov import limits
from vov.v1 import codec_pb2, codec_pb2_grpc

from .. import common, metrics
from ..common import (MESSAGE_SLACK, MIB, Server, Throttle, TooLarge, abort_with, common_arguments, env_default, event,
                      logger, stream_worker)
from .device import DeviceWatch, cuda_check, is_device_failure

SERVICE = "vov.v1.Encoder"
STAGES = {1: "fit", 2: "rate", 3: "search"}


def encode_options(o: codec_pb2.CompressOptions, server_backbone: str) -> tuple[codec.EncodeOptions, bool]:
    """The wire options -> (vov.codec.EncodeOptions, whether the rate is the default), checked.

    Zero means "the default" for every numeric field: vov.options' defaults and, for the adapter and
    the fit, the served backbone's, as for `vov compress`. Options out of range are refused here,
    before the media is decoded or a fit starts.
    """
    from vov.errors import BackboneMismatch
    from vov.method.adapters import AdapterSpec
    from vov.options import ScalingOptions

    if o.backbone and o.backbone != server_backbone:
        raise BackboneMismatch(f"this encoder serves backbone {server_backbone!r}, not {o.backbone!r}")
    defaults = codec.EncodeOptions()
    rate = o.WhichOneof("rate")
    spec = AdapterSpec(o.kind or defaults.adapter.kind, o.rank or None, o.dim or None, o.seed, o.targets)
    scaling = None
    if o.best_of or o.scaling_steps:
        scaling = ScalingOptions(candidates=o.best_of or ScalingOptions().candidates,
                                 steps=o.scaling_steps or ScalingOptions().steps)
    options = codec.EncodeOptions(backbone=server_backbone, adapter=spec, steps=o.steps or None,
                                  lam=getattr(o, "lambda") if rate == "lambda" else None,
                                  target_bpp=o.target_bpp if rate == "target_bpp" else (
                                      None if rate == "lambda" else defaults.target_bpp),
                                  sampler_steps=o.sampler_steps or defaults.sampler_steps, noise_seed=o.seed,
                                  auto_d=o.dim == 0, caption=o.caption, scaling=scaling)
    options.validate()
    return options, rate is None


class EncoderServicer(codec_pb2_grpc.EncoderServicer):
    def __init__(self, backbone, max_image_bytes: int, max_fits: int, log, limits=None):
        from vov.limits import Limits

        self.backbone, self.max_image_bytes, self.log = backbone, max_image_bytes, log
        self.limits = limits or Limits()
        self.slots = threading.BoundedSemaphore(max_fits)
        self.watch: DeviceWatch | None = None  # the GPU's health watch, told at once when a fit fails on it
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

    def _compress(self, upload: bytes, options: codec.EncodeOptions, default_rate: bool, emit):
        import dataclasses

        from vov.media import load_media_bytes

        media = load_media_bytes(upload, "the upload")
        if default_rate:
            rate, _ = codec.default_rate(media, options, self.backbone, self.limits)
            options = dataclasses.replace(options, target_bpp=rate)
        codec.plan(media, options, self.backbone, self.limits)  # refusals before the queue, not after it
        throttle = Throttle()

        def on_progress(p) -> None:
            if throttle(p.step, p.total):
                emit(p)

        with metrics.fit_slot(self.slots):  # counted as queued while it waits
            return codec.compress(media, options, backbone=self.backbone, on_progress=on_progress,
                                  limits=self.limits)

    def Compress(self, request_iterator, context):
        start = time.perf_counter()
        size = 0
        try:
            wire, image = self._receive(request_iterator)
            size = len(image)
            options, default_rate = encode_options(wire, self.backbone.name)
            report = None
            for kind, item in stream_worker(lambda emit: self._compress(image, options, default_rate, emit), context):
                if kind == "event":
                    yield codec_pb2.CompressResponse(progress=codec_pb2.CompressProgress(
                        step=item.step, total=item.total, stage=STAGES.get(item.stage, str(item.stage)),
                        loss=item.distortion, estimated_bits=item.est_bits, clip=item.clip, clips=item.clips,
                        **{"lambda": item.lam}))
                else:
                    report = item
        except Exception as e:
            if self.watch is not None and is_device_failure(e):
                self.watch.report_failure()
            abort_with(context, self.log, "Compress", e, bytes=size)
            return
        from vov.format import bitstream

        f = bitstream.load(report.data)
        yield codec_pb2.CompressResponse(result=codec_pb2.CompressResult(
            bitstream=report.data, bpp=report.bpp, width=f.width, height=f.height, d=report.d,
            payload_bits=report.payload_bits, estimated_bits=report.est_bits, seconds=report.seconds, frames=f.frames,
            clips=len(f.segments)))
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
    parser.add_argument("--health-interval", type=float, default=env_default("VOV_HEALTH_INTERVAL_SECONDS", 15.0, float),
                        help="seconds between checks of the GPU behind health (env VOV_HEALTH_INTERVAL_SECONDS, "
                             "default 15); a failed check stops the server for a restart")


def serve(args: argparse.Namespace) -> Server:
    """Build and start the encoder server; returns it running (call .stop(grace) to end it)."""
    log = logger("encoder")
    backbone = common.load_backbone(args, log)
    servicer = EncoderServicer(backbone, args.max_image_bytes, max(1, args.max_fits), log, limits.from_args(args))
    # the image arrives in chunks of at most 1 MiB, so messages stay small; the limit is generous anyway
    server = Server([SERVICE], lambda s: codec_pb2_grpc.add_EncoderServicer_to_server(servicer, s), args.host,
                    args.port, args.workers, 4 * MIB + MESSAGE_SLACK, log, common.server_credentials(args),
                    capped=("Compress",), max_queued=args.max_queued)
    server.start()
    if backbone.device.type == "cuda":
        servicer.watch = DeviceWatch(cuda_check(backbone.device), server.set_serving,
                                     lambda: server.stop(min(args.grace, 30.0)), log, args.health_interval,
                                     str(backbone.device)).start()
    event(log, "serving", address=server.address, tls=server.tls, max_image_bytes=args.max_image_bytes,
          max_fits=args.max_fits)
    return server


def main(argv: list[str] | None = None) -> int:
    return common.main("encoder", add_arguments, serve, argv)
