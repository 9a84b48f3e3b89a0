"""The decoder service: `Decoder.Decompress` turns a .vov bitstream into a PNG, or a clip's frames.

Per call: vov.codec.decompress with the engine's sessions and latent decoder (vov.serving.engines):
the codec rebuilds each clip's adapter, the engine takes its factors and caption once per clip, and
each sampler step sends latents and t. The engine is Triton over gRPC when --triton-url is set
(Triton's sequence batcher then groups the steps of concurrent calls), ONNX Runtime in this process
otherwise. `Decoder.Edit` decodes an edit of one or more files (vov.edit: another caption, merged
adaptations, a strength) through the same loop and engine, in Decompress's stream.

Run: python -m services.decoder --backbone tiny --triton-url 127.0.0.1:8001   (flags: --help)
"""

from __future__ import annotations

import argparse
import io
import os
import time


from vov import codec, limits
from vov import edit as editing
from vov.v1 import codec_pb2, codec_pb2_grpc

from .. import common, metrics
from ..common import (CHUNK, MESSAGE_SLACK, MIB, Server, Throttle, TooLarge, abort_with, common_arguments,
                      event, logger, stream_worker)
from ..environment import env_default
from vov.serving.engines.base import EngineUnavailable
from vov.serving.engines.local import make_engine

from .health import EngineWatch

SERVICE = "vov.v1.Decoder"


class DecoderServicer(codec_pb2_grpc.DecoderServicer):
    def __init__(self, backbone, engine, max_file_bytes: int, log, limits=None, watch=None):
        from vov.limits import Limits

        self.backbone, self.engine, self.max_file_bytes, self.log = backbone, engine, max_file_bytes, log
        self.limits = limits or Limits()
        self.watch = watch  # the engine's health watch, told at once when a call finds the engine down

    def stream(self, f, emit, edit=None):
        """Decode the file `f` (as codec.parse read it) clip by clip through the engine, one engine
        session per clip (the clip's adaptation and caption cross to the engine once, each step sends
        latents and t): emit ("file", f) first, ("step", i, n) as the sampler goes (throttled) and
        ("clip", DecodedClip) as each clip is ready.

        `edit` (a vov.edit.EditPlan whose header is `f`) decodes the edit instead."""
        emit(("file", f))
        throttle = Throttle()

        def on_step(i: int, n: int) -> None:
            if throttle(i, n):
                emit(("step", i, n))

        if edit is None:
            clips = codec.decode_clips(f, backbone=self.backbone, engine=self.engine, on_step=on_step,
                                       limits=self.limits)
        else:
            clips = editing.decode_plan(edit, self.backbone, engine=self.engine, on_step=on_step, limits=self.limits)
        for clip in clips:
            emit(("clip", clip))
        return f

    def Decompress(self, request, context):
        data = request.bitstream

        def work(emit):
            return self.stream(codec.parse(data, self.limits), emit)

        yield from self._respond("Decompress", len(data), work, context)

    def Edit(self, request, context):
        """Decompress's stream for an edit of the request's files (docs/editing.md)."""
        files = list(request.files)

        def work(emit):
            options = editing.EditOptions(
                caption=request.caption if request.HasField("caption") else None,
                weights=tuple(request.weights) or None,
                strength=request.strength if request.HasField("strength") else 1.0, replay=request.replay)
            the_plan = editing.plan(files, options, self.limits, self.max_rank())
            return self.stream(the_plan.header, emit, the_plan)

        yield from self._respond("Edit", sum(len(b) for b in files), work, context)

    def max_rank(self) -> int | None:
        """The largest adapter rank the engine serves (None: any)."""
        current = getattr(self.engine, "current_layout", None)
        return current().max_rank if current is not None else None

    def _respond(self, rpc: str, size: int, work, context):
        """Run `work(emit)` (`stream`'s events) and turn its events into DecompressResponses: progress,
        then an image's PNG in chunks, or a clip's description and its frames as each clip is ready."""
        start = time.perf_counter()
        image, frames_sent, f = None, 0, None

        def first_picture() -> None:
            if not frames_sent and image is None:
                metrics.first_frame(rpc, time.perf_counter() - start)

        try:
            if size > self.max_file_bytes:
                raise TooLarge(f"the file is {size} bytes; this decoder accepts at most {self.max_file_bytes}"
                               if rpc == "Decompress" else
                               f"the files are {size} bytes together; this decoder accepts at most "
                               f"{self.max_file_bytes}")
            for kind, item in stream_worker(work, context):
                if kind != "event":
                    continue
                if item[0] == "step":
                    yield codec_pb2.DecompressResponse(progress=codec_pb2.DecompressProgress(step=item[1], total=item[2]))
                elif item[0] == "file":
                    f = item[1]
                    if f.frames > 1:
                        yield codec_pb2.DecompressResponse(video=codec_pb2.VideoInfo(
                            width=f.width, height=f.height, frames=f.frames, fps_num=f.fps_num, fps_den=f.fps_den,
                            grey=f.colour == 1, clips=len(f.segments)))
                elif f.frames == 1:
                    first_picture()
                    image = _png(item[1].frames[0], f.colour == 1)
                else:  # a clip's frames, streamed as soon as the clip is decoded
                    for frame in item[1].frames:
                        first_picture()
                        yield codec_pb2.DecompressResponse(frame=codec_pb2.Frame(
                            index=frames_sent, clip=item[1].index, png=_png(frame, f.colour == 1)))
                        frames_sent += 1
        except Exception as e:
            if isinstance(e, EngineUnavailable) and self.watch is not None:
                self.watch.report_failure()
            abort_with(context, self.log, rpc, e, bytes=size)
            return
        if image is not None:
            yield codec_pb2.DecompressResponse(image=codec_pb2.ImageInfo(width=f.width, height=f.height,
                                                                         grey=f.colour == 1, png_bytes=len(image)))
            for offset in range(0, len(image), CHUNK):
                last = offset + CHUNK >= len(image)
                yield codec_pb2.DecompressResponse(png_chunk=codec_pb2.PngChunk(data=image[offset: offset + CHUNK],
                                                                                 last=last))
        event(self.log, f"{rpc} done", rpc=rpc, bytes=size, width=f.width, height=f.height,
              frames=f.frames, clips=len(f.segments), steps=f.sampler_steps,
              seconds=round(time.perf_counter() - start, 3))

    def ListModels(self, request, context):
        try:
            layout = self.engine.current_layout()  # Triton's configs give the served rank, before any decode
        except Exception as e:
            abort_with(context, self.log, "ListModels", e)
            return
        return codec_pb2.ListModelsResponse(models=[model_info(self.backbone, layout.max_rank, self.engine.describe())])


def model_info(backbone, max_rank: int, engine: str):
    return codec_pb2.ModelInfo(backbone=backbone.name, content_hash=backbone.content_hash.hex(),
                               latent_channels=backbone.latent_channels, pixel_multiple=backbone.pixel_multiple,
                               max_rank=max_rank, target_presets=sorted(backbone.target_presets), engine=engine)


def _png(pixels, grey: bool) -> bytes:
    from PIL import Image

    from vov.media import to_uint8

    img = Image.fromarray(to_uint8(pixels))
    if grey:
        img = img.convert("L")
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common_arguments(parser, "VOV_DECODER", 50052)
    parser.add_argument("--triton-url", default=env_default("VOV_TRITON_URL", ""),
                        help="Triton gRPC address HOST:PORT, or dns:///NAME:PORT: every Triton NAME lists, each decode "
                             "on the least busy (env VOV_TRITON_URL); empty: ONNX Runtime in-process")
    parser.add_argument("--repository", default=env_default("VOV_MODEL_REPOSITORY", ""),
                        help="exported model repository for the in-process engine (env VOV_MODEL_REPOSITORY; "
                             "default ~/.cache/vov/triton/BACKBONE-ENV, exported on first use)")
    parser.add_argument("--max-file-bytes", type=int, default=env_default("VOV_MAX_FILE_BYTES", 16 * MIB, int),
                        help="largest .vov file accepted (env VOV_MAX_FILE_BYTES, default 16 MiB)")
    parser.add_argument("--ort-threads", type=int, default=env_default("VOV_ORT_THREADS", 0, int),
                        help="ONNX Runtime threads of the in-process engine (env VOV_ORT_THREADS; 0: auto)")
    parser.add_argument("--triton-tls-ca", default=env_default("VOV_TRITON_TLS_CA", ""),
                        help="CA (PEM) of Triton's gRPC certificate: TLS to Triton (env VOV_TRITON_TLS_CA)")
    parser.add_argument("--triton-tls-cert", default=env_default("VOV_TRITON_TLS_CERT", ""),
                        help="client certificate (PEM) for mutual TLS with Triton (env VOV_TRITON_TLS_CERT)")
    parser.add_argument("--triton-tls-key", default=env_default("VOV_TRITON_TLS_KEY", ""),
                        help="client key (PEM) for mutual TLS with Triton (env VOV_TRITON_TLS_KEY)")
    parser.add_argument("--health-interval", type=float, default=env_default("VOV_HEALTH_INTERVAL_SECONDS", 1.0, float),
                        help="seconds between checks of the engine behind health (env VOV_HEALTH_INTERVAL_SECONDS, "
                             "default 1)")
    parser.add_argument("--triton-retry-seconds", type=float,
                        default=env_default("VOV_TRITON_RETRY_SECONDS", 120.0, float),
                        help="how long a decode that lost Triton waits for one to serve again before it fails "
                             "with UNAVAILABLE (env VOV_TRITON_RETRY_SECONDS, default 120)")
    parser.add_argument("--triton-retry-attempts", type=int, default=env_default("VOV_TRITON_RETRY_ATTEMPTS", 20, int),
                        help="attempts a decode makes to start its sequence again on Triton, at most "
                             "(env VOV_TRITON_RETRY_ATTEMPTS, default 20)")


def triton_tls(args: argparse.Namespace) -> dict | None:
    """tritonclient's TLS options from the --triton-tls-* flags (file paths), or None for plaintext."""
    from vov.errors import UsageError

    if not (args.triton_tls_ca or args.triton_tls_cert or args.triton_tls_key):
        return None
    if bool(args.triton_tls_cert) != bool(args.triton_tls_key):
        raise UsageError("--triton-tls-cert and --triton-tls-key go together")
    for path in (args.triton_tls_ca, args.triton_tls_cert, args.triton_tls_key):
        if path and not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
    return {"root_certificates": args.triton_tls_ca or None, "private_key": args.triton_tls_key or None,
            "certificate_chain": args.triton_tls_cert or None}


def serve(args: argparse.Namespace) -> Server:
    """Build and start the decoder server; returns it running (call .stop(grace) to end it)."""
    log = logger("decoder")
    backbone = common.load_backbone(args, log)
    engine = make_engine(backbone, args.triton_url or None, args.repository or None, args.ort_threads or None,
                         triton_tls(args), retry_seconds=args.triton_retry_seconds,
                         max_attempts=args.triton_retry_attempts)
    servicer = DecoderServicer(backbone, engine, args.max_file_bytes, log, limits.from_args(args))
    server = Server([SERVICE], lambda s: codec_pb2_grpc.add_DecoderServicer_to_server(servicer, s), args.host,
                    args.port, args.workers, args.max_file_bytes + MESSAGE_SLACK, log, common.server_credentials(args),
                    capped=("Decompress", "Edit"), max_queued=args.max_queued)
    server.start(serving=False)  # SERVING once the engine's first check passes
    servicer.watch = EngineWatch(engine, server.set_serving, log, interval=args.health_interval).start()
    if hasattr(engine, "on_unavailable"):  # Triton: a call that finds it unavailable has health check at once
        engine.on_unavailable = servicer.watch.report_failure
    event(log, "serving", address=server.address, tls=server.tls, engine=engine.describe(),
          max_file_bytes=args.max_file_bytes)
    return server


def main(argv: list[str] | None = None) -> int:
    return common.main("decoder", add_arguments, serve, argv)
