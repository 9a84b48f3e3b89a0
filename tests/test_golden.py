"""Golden files pin the format: a file written by format 1.0 must keep decoding the same way."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from golden.make_golden import q_digest

from vov import codec

from vov.format import bitstream
from vov.media import load_image

GOLDEN = Path(__file__).parent / "golden"
META = json.loads((GOLDEN / "tiny-v1.json").read_text())


def test_header_and_vector_decode_exactly():
    data = (GOLDEN / "tiny-v1.vov").read_bytes()
    assert hashlib.sha256(data).hexdigest() == META["file_sha256"]
    f = bitstream.load(data)
    assert f.version == (1, 0) and len(f.segments) == 1
    assert (f.width, f.height, f.d, f.rank, f.segments[0].qmax) == (META["width"], META["height"], META["d"], META["rank"],
                                                                    META["qmax"])
    assert f.backbone_hash.hex() == META["backbone_hash"]
    assert q_digest(f) == META["q_sha256"]


def test_tiny_backbone_is_still_the_same():
    assert codec.get_backbone("tiny").content_hash.hex() == META["backbone_hash"]


def test_pixels_decode_as_before():
    data = (GOLDEN / "tiny-v1.vov").read_bytes()
    now = codec.decompress(data).pixels
    before = load_image(GOLDEN / "tiny-v1.png").pixels
    # the reference was written as 8-bit PNG; bf16 kernels may differ by a rounding between CPUs
    mse = float(np.mean((np.round(now * 255) / 255 - before) ** 2))
    assert mse == 0 or 10 * np.log10(1 / mse) > 45


@pytest.mark.parametrize("name", ["tiny-v2-clip", "tiny-v2-best-of-8"])
def test_format_2_goldens_decode_as_before(name):
    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    data = (GOLDEN / f"{name}.vov").read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["file_sha256"]
    f = bitstream.load(data)
    assert f.version == (2, 0)
    assert (f.frames, f.width, f.height, f.d, len(f.segments), f.search_bits) == (
        meta["frames"], meta["width"], meta["height"], meta["d"], meta["clips"], meta["search_bits"])
    assert q_digest(f) == meta["q_sha256"]
    now = np.round(codec.decompress(data).frames * 255).astype(np.uint8)
    before = np.load(GOLDEN / f"{name}.npy")
    assert now.shape == before.shape
    mse = float(np.mean((now.astype(np.float64) - before) ** 2)) / 255**2
    assert mse == 0 or 10 * np.log10(1 / mse) > 45  # bf16 kernels may differ by a rounding between CPUs
