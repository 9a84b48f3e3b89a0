"""The encoder says what the command says about a file's rate: the default raised for small media,
and a target the codec could not reach, in the result's note."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vov.method.adapters import AdapterSpec
from vov.options import EncodeOptions, Rate
from vov_services.encoder.server import EncoderServicer


def png(width: int = 53, height: int = 37) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_the_result_notes_a_rate_out_of_reach_and_a_raised_default(tiny_backbone):
    servicer = EncoderServicer(tiny_backbone, 1 << 20, 1, lambda *a, **k: None)
    options = EncodeOptions(backbone="tiny", adapter=AdapterSpec(rank=2, d=256), auto_d=False, steps=4,
                            sampler_steps=3)
    report, note = servicer._compress(png(), options.with_rate(Rate("bpp", 100)), Rate("bpp", 100), lambda p: None)
    assert "under the 100 bpp asked for" in note and report.bpp < 50
    report, note = servicer._compress(png(), options, Rate(), lambda p: None)
    assert "the default 0.05 bpp is too low" in note
