"""Which decode is the reference, what every other engine must meet, and how close the exported
graphs are to torch.

`TorchEngine` (the torch path that `vov decompress` runs, in the backbone's own device, dtype and
autocast) is the reference; every other engine's pixels must be within `MAX_ABS_DIFF` of its pixels at
every pixel and `MIN_PSNR` over the image (docs/services.md, "Decoders that agree"). `parity` checks
the exported graphs against torch in fp32, where they are one computation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vov.backbones import Condition
from vov.errors import UsageError
from vov.method.adapters import AdaptedDenoiser, AdapterSpec, lora_entry_count
from vov.serving.contract import ANY_FRAMES, condition_arrays
from vov.serving.engines.onnx import OrtEngine

REFERENCE = "torch"
# The reference multiplies in bf16 (autocast) and the exported graphs in fp32; fifty sampler steps
# carry the difference forward. Measured on the shipped embedded backbone at 768x512: 46.6-51.1 dB
# with 3.5-17.9 levels at the worst pixel (docs/services.md, "Decoders that agree").
MAX_ABS_DIFF = 32 / 255  # largest difference of one pixel channel from the reference decode
MIN_PSNR = 40.0  # dB between an engine's decode and the reference decode, over the whole image


def agreement(pixels: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max abs difference (0..1 scale) and PSNR (dB, peak 1) of a decode against the reference decode."""
    a, b = np.asarray(pixels, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise UsageError(f"decodes of different shapes: {a.shape} and {b.shape}")
    diff = np.clip(a, 0, 1) - np.clip(b, 0, 1)
    mse = float(np.mean(diff ** 2))
    return {"max_abs": float(np.abs(diff).max()), "psnr": math.inf if mse == 0 else 10 * math.log10(1 / mse)}


def agrees(pixels: np.ndarray, reference: np.ndarray) -> bool:
    a = agreement(pixels, reference)
    return a["max_abs"] <= MAX_ABS_DIFF and a["psnr"] >= MIN_PSNR


def parity(backbone, repository: str | Path, rank: int = 4, d: int = 512, seed: int = 0) -> dict[str, float]:
    """Max abs difference between the ONNX graphs and torch (fp32, no autocast) on random inputs.

    Two different adaptations and captions ride in one batch, so row-wise independence is checked
    too; the denoiser at one frame and, where its frames axis is dynamic, at two; each latent
    decoder at its frame counts (one to three where it takes any: a chunked decoder's loop then
    runs its first graph, its next graph, and its next graph on the cache that graph returned).
    """
    engine = OrtEngine(repository, backbone=backbone, device="cpu")
    info = engine.info
    axes = info["axes"]
    g = torch.Generator().manual_seed(seed)
    m = axes["spatial_multiple"]
    c, tokens = axes["latent_channels"], axes["text_tokens"]
    d = min(d, lora_entry_count(backbone, AdapterSpec(rank=rank, d=d)))
    adapters, conditions, rows = [], [], []
    for i in range(2):
        adapter = AdaptedDenoiser(backbone, AdapterSpec(rank=rank, d=d, seed=seed + i))
        adapter.set_theta(torch.randn(adapter.d, generator=g) * 0.5)
        adapters.append(adapter)
        rows.append(engine.layout.pack_adapter(adapter))
        length = tokens if not axes["takes_mask"] else max(1, min(tokens, 6 - i))
        mask = torch.ones(1, length, dtype=torch.bool)
        if axes["takes_mask"] and i == 1:
            mask[:, -1] = False
        conditions.append(Condition(torch.randn(1, length, axes["text_dim"], generator=g), mask))
    arrays = [condition_arrays(x, tokens, axes["takes_mask"]) for x in conditions]
    embeddings = np.concatenate([e for e, _ in arrays])
    masks = np.concatenate([k for _, k in arrays])
    results = {}
    frame_counts = [1, 2] if info["denoiser"]["frames"] == ANY_FRAMES else [1]
    worst = 0.0
    for frames in frame_counts:
        latents = torch.randn(2, c, frames, 4 * m, 6 * m, generator=g)
        t = torch.rand(2, generator=g)
        with torch.no_grad():
            expected = torch.cat([adapters[i](latents[i: i + 1], t[i: i + 1], conditions[i]).float()
                                  for i in range(2)]).numpy()
        got = engine.run_denoiser(latents.numpy(), t.numpy(), embeddings, masks, np.stack(rows))
        worst = max(worst, float(np.abs(got - expected).max()))
    results["denoiser"] = worst
    for key, name in engine.decoders.items():
        counts = [1, 2, 3] if key == ANY_FRAMES else [int(key)]  # a chunked decoder: first, next, and next again
        worst = 0.0
        for frames in counts:
            latents = torch.randn(2, c, frames, 4, 6, generator=g)
            with torch.no_grad():
                expected = backbone.decode(latents).float().numpy()
            worst = max(worst, float(np.abs(engine.run_decoder(latents.numpy()) - expected).max()))
        results[name] = worst
    return results
