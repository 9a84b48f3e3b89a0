"""Bytes the decoder sends to Triton per decode: the adaptation with every step (before) against once
per decode (after, a `denoiser_session` sequence).

    python bench/triton_bytes.py [--size 768x512] [--sampler-steps 50] [--out bench/results/triton_bytes.json]

Measured, with the shipped embedded backbone exported and served by a real Triton on loopback: one
.vov file decoded twice,
  before  each step one request to the stateless `denoiser` model carrying the latents, t, the caption
          and the file's packed LoRA row (every slot layer at R_max), which is what the decoder sent,
  after   each step one request of the decode's sequence carrying latents and t; the first also carries
          the file's own factors and the caption; a release at the end,
plus the latent decoder's request. Both decodes must give the same pixels. Counted on the client:
the tensor bytes of every request and the size of every serialized gRPC request (exact). The same
file is also decoded by torch in this process (the reference) and by ONNX Runtime in this process,
and each engine's agreement with the reference is reported (docs/services.md, "Decoders that agree").

Computed for Wan2.1-T2V-1.3B's real layer sizes (its transformer built on torch's meta device: shapes
without weights): 81 frames of 832x480, the paper's adapter (rank 1, q/k/v/out of both attentions in
all 30 blocks), UMT5's 512 x 4096 caption, 50 steps, R_max 8 and 4.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vov import codec  # noqa: E402
from vov.method.adapters import AdapterSpec  # noqa: E402
from vov.method.fit import FitConfig  # noqa: E402
from vov.serving import contract, repository  # noqa: E402
from vov.serving.engines.base import BaseSession  # noqa: E402
from vov.serving.engines.onnx import OrtEngine  # noqa: E402
from vov.serving.engines.torch import TorchEngine  # noqa: E402
from vov.serving.parity import agreement  # noqa: E402
from vov.serving.serve import Stack  # noqa: E402


class WireCounter:
    """Counts the serialized size of every gRPC inference request tritonclient sends."""

    def __init__(self):
        self.bytes, self.requests = 0, 0

    def __enter__(self):
        import tritonclient.grpc as tc
        from tritonclient.grpc._utils import _get_inference_request

        self._original = original = tc.InferenceServerClient.infer
        counter = self

        def infer(client, model_name, inputs, model_version="", outputs=None, request_id="", sequence_id=0,
                  sequence_start=False, sequence_end=False, priority=0, timeout=None, **kwargs):
            request = _get_inference_request(model_name=model_name, inputs=inputs, model_version=model_version,
                                             request_id=request_id, outputs=outputs, sequence_id=sequence_id,
                                             sequence_start=sequence_start, sequence_end=sequence_end,
                                             priority=priority, timeout=timeout, parameters=kwargs.get("parameters"))
            counter.bytes += request.ByteSize()
            counter.requests += 1
            return original(client, model_name, inputs, model_version, outputs, request_id, sequence_id,
                            sequence_start, sequence_end, priority, timeout, **kwargs)

        tc.InferenceServerClient.infer = infer
        return self

    def __exit__(self, *exc):
        import tritonclient.grpc as tc

        tc.InferenceServerClient.infer = self._original


class StatelessEngine:
    """The decoder's protocol before sessions, as an engine: every step carries the caption and the
    packed row to the stateless denoiser model."""

    def __init__(self, engine):
        self.engine = engine

    def open(self, adapter, condition=None):
        from vov.serving.contract import condition_arrays

        engine = self.engine
        row = engine.current_layout().pack_adapter(adapter)[None]
        embeddings, _ = condition_arrays(condition, engine.text_tokens, engine.takes_mask)

        class Session(BaseSession):
            def denoise(self, x, t):
                out = engine.infer(contract.DENOISER_MODEL, {
                    "latents": np.ascontiguousarray(x.numpy(), dtype=np.float32),
                    "t": t.numpy().reshape(-1, 1).astype(np.float32), "embeddings": embeddings, "lora": row}, "velocity")
                return torch.from_numpy(np.array(out))

        return Session()

    def decode(self, latents):
        return self.engine.decode(latents)

    def describe(self) -> str:
        return f"{self.engine.describe()}, stateless"


def measure_embedded(size: tuple[int, int], steps: int, work: Path) -> dict:
    from vov.serving.engines.triton import TritonEngine
    from vov import backbones
    from vov.media import Picture

    backbone = backbones.load("embedded")
    repo = repository.default_repository(backbone.name)
    if not repository.is_current(repo, backbone, contract.DEFAULT_MAX_RANK):
        repository.export_repository(backbone, repo, contract.DEFAULT_MAX_RANK,
                                     log=lambda m: print(f"  {m}", file=sys.stderr))
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    picture = Picture(np.stack([x / w, y / h, 0.5 + 0.3 * np.sin(x / 9)], -1).astype(np.float32))
    defaults = backbone.adapter_defaults
    options = codec.EncodeOptions(backbone="embedded", adapter=AdapterSpec(rank=defaults.rank, d=defaults.d),
                                  fit=FitConfig(steps=10, lam=0.02), sampler_steps=steps, target_bpp=None, auto_d=False)
    data = codec.compress(picture, options, backbone=backbone).data
    f = codec.parse(data)
    stack = Stack("embedded", repository=repo, work=work)
    stack.start_triton()
    try:
        engine = TritonEngine(stack.triton_url, backbone)
        adapter = codec.adapter_for(f, backbone)
        results = {}
        for name in ("before", "after"):
            start = engine.traffic()
            with WireCounter() as wire:
                clock = time.perf_counter()
                if name == "before":
                    pixels = codec.decompress(data, engine=StatelessEngine(engine), backbone=backbone).pixels
                else:
                    pixels = codec.decompress(data, engine=engine, backbone=backbone).pixels
                seconds = time.perf_counter() - clock
            sent = engine.traffic()
            results[name] = {"tensor_bytes": sent["bytes"] - start["bytes"], "wire_bytes": wire.bytes,
                             "requests": sent["requests"] - start["requests"], "seconds": round(seconds, 3),
                             "pixels": pixels}
        served = results["after"]["pixels"]
        same = bool(np.array_equal(results["before"].pop("pixels"), results["after"].pop("pixels")))
        layout = engine.current_layout()
        reference = codec.decompress(data, engine=TorchEngine(backbone), backbone=backbone).pixels
        local = codec.decompress(data, engine=OrtEngine(repo, backbone=backbone), backbone=backbone).pixels
        agree = {"reference": "torch (bf16 autocast, fp32 weights, CPU)",
                 "onnxruntime in process": agreement(local, reference), "triton": agreement(served, reference),
                 "triton == onnxruntime in process": bool(np.array_equal(served, local))}
        for figures in agree.values():
            if isinstance(figures, dict):
                figures["max_abs_255"] = round(figures["max_abs"] * 255, 2)
                figures["psnr"] = round(figures["psnr"], 2)
    finally:
        stack.stop_triton()
    return {"backbone": "embedded", "size": f"{w}x{h}", "sampler_steps": steps, "rank": f.rank, "d": f.d,
            "targets": f.targets, "max_rank": layout.max_rank, "lora_row_floats": layout.total,
            "adapted_layers": len(adapter.layers()), "factors_floats": adapter.lora_entries,
            "same_pixels": same, **results, "agreement": agree,
            "ratio_wire": round(results["before"]["wire_bytes"] / results["after"]["wire_bytes"], 2)}


def photo_agreement(count: int, steps: int) -> list[dict]:
    """Each engine's decode against the torch reference on held-out photos (768x512, a short fit)."""
    from vov import backbones
    from vov.media import Picture
    from vov.train import data

    backbone = backbones.load("embedded")
    engine = OrtEngine(repository.default_repository(backbone.name), backbone=backbone)
    rows = []
    for photo in list(data.held_out_photos())[:count]:
        picture = Picture(data.kodak_like(data.load_rgb(photo), 768, 512).astype(np.float32) / 255.0)
        options = codec.EncodeOptions(backbone="embedded", fit=FitConfig(steps=30, lam=0.02), sampler_steps=steps)
        file = codec.compress(picture, options, backbone=backbone).data
        reference = codec.decompress(file, engine=TorchEngine(backbone), backbone=backbone).pixels
        figures = agreement(codec.decompress(file, engine=engine, backbone=backbone).pixels, reference)
        rows.append({"photo": photo.name, "bytes": len(file), "max_abs_255": round(figures["max_abs"] * 255, 2),
                     "psnr": round(figures["psnr"], 2)})
    return rows


def wan_figures(steps: int = 50, frames: int = 81, width: int = 832, height: int = 480) -> dict:
    from diffusers import WanTransformer3DModel

    from vov.backbones.testing import wan_config
    from vov.backbones.wan import MAX_SEQUENCE_LENGTH, WanBackbone, WanDenoiser

    class ShapesOnly(WanBackbone):  # the real 1.3B layer list, without weights
        def __init__(self):
            with torch.device("meta"):
                self.transformer = WanTransformer3DModel(**wan_config("1.3B"))
            self.denoiser = WanDenoiser(self.transformer, None)
            self.latent_channels = 16

    backbone = ShapesOnly()
    defaults = backbone.adapter_defaults
    layers = backbone.adaptable_layers()
    targets = backbone.target_layers(defaults.targets)
    factors = 4 * defaults.rank * sum(layers[n].in_features + layers[n].out_features for n in targets)
    latents = 4 * 16 * backbone.latent_frames(frames) * (height // 8) * (width // 8)
    caption = 4 * MAX_SEQUENCE_LENGTH * 4096
    out = {"backbone": "wan (Wan2.1-T2V-1.3B layer sizes)", "frames": frames, "size": f"{width}x{height}",
           "sampler_steps": steps, "rank": defaults.rank, "targets": defaults.targets, "adapted_layers": len(targets),
           "slot_layers": None, "latents_bytes_per_step": latents, "caption_bytes": caption,
           "factors_bytes": factors, "theta_bytes": 4 * defaults.d}
    for max_rank in (8, 4):
        layout = contract.LoraLayout.for_backbone(backbone, max_rank)
        out["slot_layers"] = len(layout.slots)
        row = 4 * layout.total
        before = steps * (latents + 4 + caption + row) + latents
        after = steps * (latents + 4) + (4 + 4 * len(targets) + factors + caption + MAX_SEQUENCE_LENGTH) + 4 + latents
        out[f"R_max {max_rank}"] = {"lora_row_bytes": row, "before_bytes": before, "after_bytes": after,
                                    "adaptation_before_bytes": steps * row, "adaptation_after_bytes": factors,
                                    "ratio": round(before / after, 2)}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="768x512")
    parser.add_argument("--sampler-steps", type=int, default=50)
    parser.add_argument("--photos", type=int, default=2,
                        help="held-out photos whose ONNX Runtime decode is compared with torch's (0: none)")
    parser.add_argument("--out", default="bench/results/triton_bytes.json")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    with tempfile.TemporaryDirectory(prefix="vov-bytes-") as work:
        embedded = measure_embedded((w, h), args.sampler_steps, Path(work))
    result = {"name": "triton bytes per decode", "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                             "torch": torch.__version__},
              "measured": embedded, "computed": wan_figures(args.sampler_steps)}
    if args.photos:
        try:
            result["agreement_on_photos"] = photo_agreement(args.photos, args.sampler_steps)
        except (OSError, StopIteration, ValueError) as e:  # the photo packages are missing
            result["agreement_on_photos"] = f"not measured: {e}"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
