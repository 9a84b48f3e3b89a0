"""Golden files pin the format: a file written by format 1.0 must keep decoding the same way."""

import hashlib
import json
from pathlib import Path

import numpy as np
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
    assert (f.width, f.height, f.d, f.rank, f.qmax) == (META["width"], META["height"], META["d"], META["rank"], META["qmax"])
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
