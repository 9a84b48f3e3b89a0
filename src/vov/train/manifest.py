"""The training set's manifest: every photo's file, hash, source and licence, checked before training.

`vov data gather` writes `manifest.json` beside the photos it collects; `vov data pack` and
`vov train-base` refuse a set whose manifest does not hold:

- every entry names a file inside the set's folder whose SHA-256 matches;
- every licence is one of `LICENCES` (openly licensed: public domain, CC0, CC-BY, CC-BY-SA, and
  free-software licences under which a distribution ships the file);
- no source is a standard evaluation set (`EVALUATION_SETS`), and no photo is one of the held-out
  photos, by name or by look (`thumbnail`: a photo whose 16x16 grey thumbnail correlates above
  `NEAR_DUPLICATE` with a held-out photo's is refused, whatever its name or resolution).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vov.errors import UsageError

MANIFEST = "manifest.json"
VERSION = 1

LICENCES = {
    "public-domain": "no copyright (e.g. works of NASA and other US-government agencies), or dedicated to it",
    "CC0-1.0": "Creative Commons Zero",
    "CC-BY-2.0": "Creative Commons Attribution 2.0", "CC-BY-3.0": "Creative Commons Attribution 3.0",
    "CC-BY-4.0": "Creative Commons Attribution 4.0",
    "CC-BY-SA-2.0": "Creative Commons Attribution-ShareAlike 2.0",
    "CC-BY-SA-2.5": "Creative Commons Attribution-ShareAlike 2.5",
    "CC-BY-SA-3.0": "Creative Commons Attribution-ShareAlike 3.0",
    "CC-BY-SA-4.0": "Creative Commons Attribution-ShareAlike 4.0",
    "GPL-2+": "GNU GPL 2 or later (as shipped by a Debian package)",
    "GPL-3+": "GNU GPL 3 or later (as shipped by a Debian package)",
    "LGPL-2.1+": "GNU LGPL 2.1 or later (as shipped by a Debian package)",
    "LGPL-3.0+": "GNU LGPL 3 or later",
    "GFDL-1.2+": "GNU Free Documentation License 1.2 or later",
    "FAL-1.3": "Free Art License 1.3",
    "BSD-2-Clause": "BSD 2-clause",
    "BSD-3-Clause": "BSD 3-clause",
    "MIT": "MIT",
}

EVALUATION_SETS = ("kodak", "kodim", "clic", "tecnick", "div2k", "uvg", "mcl-jcv", "bsds", "set5", "set14", "urban100",
                   "usc-sipi", "flickr2k", "imagenet", "coco")

NEAR_DUPLICATE = 0.95
THUMBNAIL = 16


@dataclass(frozen=True)
class Entry:
    file: str  # relative to the set's folder
    sha256: str
    source: str  # a Debian package, a Python package or a repository (owner/name@commit)
    origin: str  # where inside the source the photo came from
    licence: str  # one of LICENCES
    width: int
    height: int
    author: str = ""

    def check(self) -> None:
        if self.licence not in LICENCES:
            raise UsageError(f"manifest: {self.file}: licence {self.licence!r} is not one of the allowed "
                             f"({', '.join(LICENCES)})")
        words = f"{_words(self.source)} {_words(self.origin)}"
        for name in EVALUATION_SETS:
            if re.search(rf"(?<![a-z]){re.escape(_words(name))}(?![a-z])", words):
                raise UsageError(f"manifest: {self.file}: comes from the evaluation set {name!r}")
        if Path(self.file).is_absolute() or ".." in Path(self.file).parts:
            raise UsageError(f"manifest: {self.file}: must be a path inside the set's folder")


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """A 16x16 grey thumbnail of the central square, zero-mean and unit-norm: a look that survives rescaling."""
    from PIL import Image

    h, w = pixels.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    grey = Image.fromarray(pixels[y:y + side, x:x + side]).convert("L").resize((THUMBNAIL, THUMBNAIL), Image.BOX)
    v = np.asarray(grey, dtype=np.float64).ravel()
    v -= v.mean()
    return v / max(np.linalg.norm(v), 1e-9)


def near_duplicates(thumbs: np.ndarray, references: np.ndarray) -> np.ndarray:
    """For each row of `thumbs`, the index of a reference it duplicates (correlation > threshold), or -1."""
    if len(thumbs) == 0 or len(references) == 0:
        return np.full(len(thumbs), -1)
    corr = thumbs @ references.T
    best = corr.argmax(axis=1)
    return np.where(corr[np.arange(len(thumbs)), best] > NEAR_DUPLICATE, best, -1)


def held_out_thumbnails() -> tuple[list[str], np.ndarray]:
    from vov.train import data

    photos = data.held_out_photos()
    return [p.name for p in photos], np.stack([thumbnail(data.load_rgb(p)) for p in photos]) if photos else np.zeros((0, THUMBNAIL ** 2))


def write(folder: str | os.PathLike, entries: list[Entry]) -> Path:
    path = Path(folder) / MANIFEST
    body = {"version": VERSION, "photos": [asdict(e) for e in entries],
            "licences": {k: sum(e.licence == k for e in entries) for k in LICENCES if any(e.licence == k for e in entries)}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read(folder: str | os.PathLike) -> list[Entry]:
    path = Path(folder) / MANIFEST
    try:
        body = json.loads(path.read_text())
        if body.get("version") != VERSION:
            raise ValueError(f"version {body.get('version')!r}, expected {VERSION}")
        entries = [Entry(**row) for row in body["photos"]]
    except FileNotFoundError:
        raise UsageError(f"{path}: no manifest; `vov data gather {folder}` makes the set and its manifest") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not a vov photo manifest ({e})") from None
    for e in entries:
        e.check()
    return entries


def verify(folder: str | os.PathLike, entries: list[Entry] | None = None, hashes: bool = True) -> list[Entry]:
    """The manifest's entries, after checking licences, sources, files, hashes and the held-out photos."""
    from vov.train import data

    folder = Path(folder)
    entries = read(folder) if entries is None else entries
    held_names = {n.lower() for n in data.HELD_OUT}
    seen = set()
    for e in entries:
        e.check()
        stem = Path(e.origin).stem.lower()
        if any(stem.startswith(n) for n in held_names) or Path(e.file).stem.lower() in held_names:
            raise UsageError(f"manifest: {e.file}: is a held-out photo ({e.origin})")
        if e.sha256 in seen:
            raise UsageError(f"manifest: {e.file}: the same file is listed twice")
        seen.add(e.sha256)
        path = folder / e.file
        if not path.is_file():
            raise UsageError(f"manifest: {e.file}: missing from {folder}")
        if hashes and sha256_file(path) != e.sha256:
            raise UsageError(f"manifest: {e.file}: its SHA-256 differs from the manifest's")
    return entries
