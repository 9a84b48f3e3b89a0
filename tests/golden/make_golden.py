"""Regenerate the golden files. Only for a new format version: old goldens must keep decoding."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
from fast_options import fast_options  # noqa: E402

from vov import codec

from vov.format import bitstream, entropy  # noqa: E402
from vov.backbones.embedded import tiny  # noqa: E402
from vov.media import Picture, save_image  # noqa: E402

HERE = Path(__file__).parent


def golden_picture() -> Picture:
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    img = np.stack([x / 64, y / 48, 0.5 + 0.4 * np.sin(x / 5) * np.cos(y / 7)], axis=-1)
    return Picture(img.astype(np.float32))


def q_digest(f: bitstream.VovFile) -> str:
    q = entropy.decode(f.payload, entropy.PriorParams(f.prior_weights, f.prior_scale_codes), f.qmax, f.d)
    return hashlib.sha256(q.astype("<i8").tobytes()).hexdigest()


if __name__ == "__main__":
    backbone = tiny()
    data = codec.compress(golden_picture(), fast_options(steps=16), backbone=backbone).data
    (HERE / "tiny-v1.vov").write_bytes(data)
    f = bitstream.load(data)
    save_image(codec.decompress(data, backbone=backbone).pixels, HERE / "tiny-v1.png")
    meta = {"size": len(data), "width": f.width, "height": f.height, "d": f.d, "rank": f.rank, "qmax": f.qmax,
            "backbone_hash": f.backbone_hash.hex(), "q_sha256": q_digest(f),
            "file_sha256": hashlib.sha256(data).hexdigest()}
    (HERE / "tiny-v1.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(meta)
