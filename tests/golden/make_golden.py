"""Regenerate the golden files of the current format version. Old goldens (tiny-v1.*) are never
rewritten: they must keep decoding as they did."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
from fast_options import fast_options  # noqa: E402

from vov import codec  # noqa: E402
from vov.backbones.embedded import tiny  # noqa: E402
from vov.format import bitstream, entropy  # noqa: E402
from vov.media import Clip, Picture, save_video  # noqa: E402
from vov.options import ScalingOptions  # noqa: E402

HERE = Path(__file__).parent


def golden_picture() -> Picture:
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    img = np.stack([x / 64, y / 48, 0.5 + 0.4 * np.sin(x / 5) * np.cos(y / 7)], axis=-1)
    return Picture(img.astype(np.float32))


def golden_clip() -> Clip:
    """20 frames of 48x32 (two clips on the tiny backbone: 17 + 3) of a moving pattern."""
    f, y, x = np.mgrid[0:20, 0:32, 0:48].astype(np.float32)
    frames = np.stack([(x + 2 * f) % 48 / 48, y / 32, 0.5 + 0.4 * np.sin((x - f) / 5)], axis=-1)
    return Clip(frames.astype(np.float32), fps=(25, 1))


def q_digest(f: bitstream.VovFile) -> str:
    digest = hashlib.sha256()
    for s in f.segments:
        q = entropy.decode(s.payload, entropy.PriorParams(s.prior_weights, s.prior_scale_codes), s.qmax, f.d)
        digest.update(q.astype("<i8").tobytes())
    return digest.hexdigest()


def write(name: str, media, options) -> dict:
    backbone = tiny()
    data = codec.compress(media, options, backbone=backbone).data
    (HERE / f"{name}.vov").write_bytes(data)
    f = bitstream.load(data)
    frames = codec.decompress(data, backbone=backbone).frames
    np.save(HERE / f"{name}.npy", np.round(frames * 255).astype(np.uint8))
    meta = {"size": len(data), "frames": f.frames, "width": f.width, "height": f.height, "d": f.d, "rank": f.rank,
            "clips": len(f.segments), "search_bits": f.search_bits, "backbone_hash": f.backbone_hash.hex(),
            "q_sha256": q_digest(f), "file_sha256": hashlib.sha256(data).hexdigest()}
    (HERE / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


if __name__ == "__main__":
    import dataclasses

    print(write("tiny-v2-clip", golden_clip(), dataclasses.replace(fast_options(steps=8), target_bpp=2.0)))
    scaled = dataclasses.replace(fast_options(steps=8), target_bpp=4.0,
                                 scaling=ScalingOptions(candidates=8, steps=6, g_cap=1.0, tile=0))
    print(write("tiny-v2-best-of-8", golden_picture(), scaled))
    _ = save_video  # the clip's frames are kept as .npy (exact), not re-encoded
