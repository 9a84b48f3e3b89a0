"""Training data in two compact forms: a photo pack to carry, and a latent cache to train from.

- The **photo pack** (`vov data pack SET -o photos.pack`) is one safetensors file: every photo of a
  gathered set (its manifest checked) re-encoded as JPEG at a chosen size, and the manifest's
  entries in the header. It is what travels to a machine without network (a GPU node): 1,000
  photos at 512 pixels on the long side fit in about 50 MB; `--max-mb` refuses a pack over budget.
- The **latent cache** (made by `vov train-base` in its run folder, once per pack and autoencoder)
  holds every photo's latents at a few scales and a pool of synthetic camera moves, as 8-bit
  numbers, so that a training step never runs the autoencoder. Building it is resumable (one shard
  per few dozen photos); on a GPU it takes minutes, on two CPU cores about an hour for 1,000 photos.

Both are read without unpickling anything, every tensor's dtype, shape and size checked.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vov.errors import UsageError
from vov.train import manifest

PACK_KIND = "vov photo pack"
PACK_VERSION = 1
MAX_PACK_PHOTOS = 100_000
MAX_PACK_SIDE = 4096


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality, subsampling=0, optimize=True)
    return out.getvalue()


def _resize_long_side(pixels: np.ndarray, long_side: int) -> np.ndarray:
    from PIL import Image

    h, w = pixels.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.LANCZOS))


def load_photo(path: str | os.PathLike) -> np.ndarray:
    """A photo of a gathered set as (H, W, 3) uint8, orientation applied."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.draft("RGB", (MAX_PACK_SIDE, MAX_PACK_SIDE))
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def build_pack(folder: str | os.PathLike, out: str | os.PathLike, long_side: int = 512, quality: int = 90,
               max_mb: float | None = 64.0, progress: bool = True) -> dict:
    """Write the photo pack of a gathered set; returns a summary (photos, bytes, licences)."""
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    if not 64 <= long_side <= MAX_PACK_SIDE:
        raise UsageError(f"--long-side must be between 64 and {MAX_PACK_SIDE}, not {long_side}")
    if not 50 <= quality <= 100:
        raise UsageError(f"--quality must be between 50 and 100, not {quality}")
    entries = manifest.verify(folder)
    if not entries:
        raise UsageError(f"{folder}: the manifest lists no photos")
    held_names, held = manifest.held_out_thumbnails()
    tensors, rows, total = {}, [], 0
    digest = hashlib.sha256()
    for i, entry in enumerate(tqdm(entries, desc="packing photos", unit="photo", disable=not progress)):
        pixels = load_photo(Path(folder) / entry.file)
        dup = manifest.near_duplicates(manifest.thumbnail(pixels)[None], held)[0]
        if dup >= 0:
            raise UsageError(f"{entry.file} looks like the held-out photo {held_names[dup]}; remove it from the set")
        small = _resize_long_side(pixels, long_side)
        blob = _jpeg(small, quality)
        total += len(blob)
        if max_mb is not None and total > max_mb * 2**20:
            raise UsageError(f"the pack passes {max_mb:g} MB after {i + 1} of {len(entries)} photos; choose a smaller "
                             f"--long-side (now {long_side}) or --quality (now {quality}), or a larger --max-mb")
        digest.update(blob)
        tensors[f"photo.{i}"] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        rows.append({**asdict(entry), "packed_width": small.shape[1], "packed_height": small.shape[0]})
    meta = {"version": PACK_VERSION, "long_side": long_side, "quality": quality, "photos": rows,
            "digest": digest.hexdigest()}
    tmp = f"{os.fspath(out)}.tmp"
    save_file(tensors, tmp, metadata={"kind": PACK_KIND, "meta": json.dumps(meta)})
    os.replace(tmp, out)
    licences = {}
    for row in rows:
        licences[row["licence"]] = licences.get(row["licence"], 0) + 1
    return {"photos": len(rows), "bytes": os.path.getsize(out), "licences": licences, "digest": meta["digest"]}


class PhotoPack:
    """A photo pack opened for reading: `len(pack)`, `pack.pixels(i)`, `pack.entries`, `pack.digest`."""

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.path = os.fspath(path)
        try:
            self._file = safe_open(self.path, framework="pt")
            header = self._file.metadata() or {}
            if header.get("kind") != PACK_KIND:
                raise ValueError("not a photo pack")
            meta = json.loads(header["meta"])
            if meta.get("version") != PACK_VERSION:
                raise ValueError(f"pack version {meta.get('version')!r}, expected {PACK_VERSION}")
            self.entries = [manifest.Entry(**{k: row[k] for k in manifest.Entry.__dataclass_fields__})
                            for row in meta["photos"]]
            self.sizes = [(int(row["packed_height"]), int(row["packed_width"])) for row in meta["photos"]]
            self.digest = str(meta["digest"])
            self.long_side = int(meta["long_side"])
        except FileNotFoundError:
            raise UsageError(f"{self.path}: no such file; `vov data pack` makes one") from None
        except Exception as e:  # a foreign, corrupt or hostile file
            raise UsageError(f"{self.path}: not a vov photo pack ({type(e).__name__}: {str(e)[:80]})") from None
        if not 0 < len(self.entries) <= MAX_PACK_PHOTOS or set(self._file.keys()) != {f"photo.{i}" for i in range(len(self.entries))}:
            raise UsageError(f"{self.path}: its photos and its header disagree")
        for entry, (h, w) in zip(self.entries, self.sizes):
            entry.check()
            if not (1 <= h <= MAX_PACK_SIDE and 1 <= w <= MAX_PACK_SIDE):
                raise UsageError(f"{self.path}: {entry.file} has an impossible size {w}x{h}")

    def __len__(self) -> int:
        return len(self.entries)

    def verify(self) -> None:
        """Check the photos' bytes against the pack's digest (a pack changed after it was made is refused)."""
        digest = hashlib.sha256()
        for i in range(len(self)):
            digest.update(self._file.get_tensor(f"photo.{i}").numpy().tobytes())
        if digest.hexdigest() != self.digest:
            raise UsageError(f"{self.path}: its photos do not match its digest (changed or corrupt)")

    def pixels(self, i: int) -> np.ndarray:
        from PIL import Image

        blob = self._file.get_tensor(f"photo.{i}").numpy().tobytes()
        h, w = self.sizes[i]
        with Image.open(io.BytesIO(blob)) as img:
            if img.format != "JPEG" or img.size != (w, h):
                raise UsageError(f"{self.path}: photo {i} is not the JPEG its header describes")
            return np.asarray(img.convert("RGB"))
