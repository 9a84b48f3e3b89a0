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
from vov.options import from_wire
from vov.v1 import codec_pb2, codec_pb2_grpc

from .. import common, metrics
from ..common import (MESSAGE_SLACK, MIB, Server, Throttle, TooLarge, abort_with, common_arguments, event, logger,
                      stream_worker)
from ..environment import env_default
from .device import DeviceWatch, cuda_check, is_device_failure

SERVICE = "vov.v1.Encoder"
STAGES = {1: "fit", 2: "rate", 3: "search"}


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

    def _compress(self, upload: bytes, options: codec.EncodeOptions, rate, emit):
        """The report of the compress, and what to tell the caller about its rate ("": nothing)."""
        from vov.media import load_media_bytes
        from vov.options import rate_note

        media = load_media_bytes(upload, "the upload")
        # refusals before the queue, not after it; the default rate adapts to small media here
        the_plan = codec.plan(media, options, self.backbone, self.limits, rate=rate)
        throttle = Throttle()

        def on_progress(p) -> None:
            if throttle(p.step, p.total):
                emit(p)

        with metrics.fit_slot(self.slots):  # counted as queued while it waits
            report = codec.compress(media, the_plan.options, backbone=self.backbone, on_progress=on_progress,
                                    limits=self.limits, planned=the_plan)
        notes = [the_plan.note, rate_note(the_plan.options.target_bpp, report.bpp, report.d)]
        return report, "; ".join(n for n in notes if n)

    def Compress(self, request_iterator, context):
        start = time.perf_counter()
        size = 0
        try:
            wire, image = self._receive(request_iterator)
            size = len(image)
            options, rate = from_wire(wire, self.backbone.name)
            report, note = None, ""
            for kind, item in stream_worker(lambda emit: self._compress(image, options, rate, emit), context):
                if kind == "event":
                    yield codec_pb2.CompressResponse(progress=codec_pb2.CompressProgress(
                        step=item.step, total=item.total, stage=STAGES.get(item.stage, str(item.stage)),
                        loss=item.distortion, estimated_bits=item.est_bits, clip=item.clip, clips=item.clips,
                        **{"lambda": item.lam}))
                else:
                    report, note = item
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
            clips=len(f.segments), note=note))
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
