"""The decoder service: `Decoder.Decompress` turns a .vov bitstream into a PNG.

Per call: parse the file (vov.codec.parse), rebuild its adapter (vov.codec.adapter_for), expand it
into the engine's packed LoRA row (vov.serving.export.LoraLayout), and run vov.codec.decompress with the
denoiser and latent decoder of the engine: Triton over gRPC when --triton-url is set (Triton's
dynamic batcher then groups the steps of concurrent calls), ONNX Runtime in this process otherwise.

Run: python -m services.decoder --backbone tiny --triton-url 127.0.0.1:8001   (flags: --help)
"""

from __future__ import annotations

import argparse
import io
import time

import grpc

from vov import codec
from vov.v1 import codec_pb2, codec_pb2_grpc

from .. import common
from ..common import (CHUNK, MESSAGE_SLACK, MIB, Server, Throttle, TooLarge, abort_with, common_arguments,
                      env_default, event, logger, stream_worker)
from .engines import make_engine

SERVICE = "vov.v1.Decoder"


class DecoderServicer(codec_pb2_grpc.DecoderServicer):
    def __init__(self, backbone, engine, max_file_bytes: int, log):
        self.backbone, self.engine, self.max_file_bytes, self.log = backbone, engine, max_file_bytes, log

    def decode(self, data: bytes, emit=None):
        """.vov bytes -> vov.codec.Decoded, through the engine."""
        from vov.serving.engine import callables

        f = codec.parse(data)
        adapter = codec.adapter_for(f, self.backbone)
        row = self.engine.current_layout().pack_adapter(adapter)
        velocity, decode = callables(self.engine, row)
        throttle = Throttle()

        def on_step(i: int, n: int) -> None:
            if emit is not None and throttle(i, n):
                emit((i, n))

        return codec.decompress(data, backbone=self.backbone, velocity=velocity, decode=decode, on_step=on_step)

    def Decompress(self, request, context):
        start = time.perf_counter()
        data = request.bitstream
        try:
            if len(data) > self.max_file_bytes:
                raise TooLarge(f"the file is {len(data)} bytes; this decoder accepts at most {self.max_file_bytes}")
            decoded = None
            for kind, item in stream_worker(lambda emit: self.decode(data, emit), context):
                if kind == "event":
                    yield codec_pb2.DecompressResponse(progress=codec_pb2.DecompressProgress(step=item[0], total=item[1]))
                else:
                    decoded = item
            png = _png(decoded.pixels, decoded.grey)
        except Exception as e:
            abort_with(context, self.log, "Decompress", e, bytes=len(data))
            return
        h, w = decoded.pixels.shape[:2]
        yield codec_pb2.DecompressResponse(image=codec_pb2.ImageInfo(width=w, height=h, grey=decoded.grey, png_bytes=len(png)))
        for offset in range(0, len(png), CHUNK):
            last = offset + CHUNK >= len(png)
            yield codec_pb2.DecompressResponse(png_chunk=codec_pb2.PngChunk(data=png[offset: offset + CHUNK], last=last))
        event(self.log, "Decompress done", rpc="Decompress", bytes=len(data), width=w, height=h,
              steps=decoded.file.sampler_steps, seconds=round(time.perf_counter() - start, 3))

    def Search(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "Decoder.Search (best-of-N candidate search) is not implemented in this version")

    def ListModels(self, request, context):
        layout = getattr(self.engine, "layout", None)
        return codec_pb2.ListModelsResponse(models=[model_info(self.backbone, layout.max_rank if layout else 0,
                                                               self.engine.describe())])


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
                        help="Triton gRPC address HOST:PORT (env VOV_TRITON_URL); empty: ONNX Runtime in-process")
    parser.add_argument("--repository", default=env_default("VOV_MODEL_REPOSITORY", ""),
                        help="exported model repository for the in-process engine (env VOV_MODEL_REPOSITORY; "
                             "default ~/.cache/vov/triton/BACKBONE, exported on first use)")
    parser.add_argument("--max-file-bytes", type=int, default=env_default("VOV_MAX_FILE_BYTES", 16 * MIB, int),
                        help="largest .vov file accepted (env VOV_MAX_FILE_BYTES, default 16 MiB)")
    parser.add_argument("--ort-threads", type=int, default=env_default("VOV_ORT_THREADS", 0, int),
                        help="ONNX Runtime threads of the in-process engine (env VOV_ORT_THREADS; 0: auto)")


def serve(args: argparse.Namespace) -> Server:
    """Build and start the decoder server; returns it running (call .stop(grace) to end it)."""
    log = logger("decoder")
    backbone = common.load_backbone(args, log)
    engine = make_engine(backbone, args.triton_url or None, args.repository or None, args.ort_threads or None)
    servicer = DecoderServicer(backbone, engine, args.max_file_bytes, log)
    server = Server([SERVICE], lambda s: codec_pb2_grpc.add_DecoderServicer_to_server(servicer, s), args.host,
                    args.port, args.workers, args.max_file_bytes + MESSAGE_SLACK, log)
    server.start()
    event(log, "serving", address=server.address, engine=engine.describe(), max_file_bytes=args.max_file_bytes)
    return server


def main(argv: list[str] | None = None) -> int:
    return common.main("decoder", add_arguments, serve, argv)
