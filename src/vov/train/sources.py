"""Where the embedded model's photos come from: vov's own catalogue of openly licensed photographs.

`catalogue.json` (beside this module) lists every photo the embedded model may learn from, one
entry per file, grouped by source, each with the licence under which its source publishes it (as
the Debian copyright file, the repository's licence or attribution file, or the file's own notice
states) and its author where known. Each file was looked at: drawings, renders, logos, photos with
text overlaid, photos from sites whose licence forbids building a collection, files whose licence
could not be established, and the held-out photos are not listed.

Sources:
- `debian`: a Debian package; `path` is an installed file. `container` names a format that holds
  the photo: `rcc` (a Qt resource bundle; `member` is the path inside it) or `edj` (an
  Enlightenment theme file; the largest JPEG it holds).
- `git`: a public repository, read from a local clone; `blob` is the file's git object id (so any
  clone that has the object serves, whatever branch it was on), `path` where it lay.
- `python`: photos bundled with a Python package (scikit-image's, by name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from vov.errors import UsageError
from vov.train.manifest import LICENCES

KINDS = ("debian", "git", "python")
CONTAINERS = ("rcc", "edj")


@dataclass(frozen=True)
class CataloguedPhoto:
    path: str
    licence: str
    author: str = ""
    member: str = ""
    container: str = ""
    blob: str = ""

    @property
    def origin(self) -> str:
        inner = f" :: {self.member}" if self.member else (" (largest JPEG inside)" if self.container else "")
        return f"{self.path}{inner}" + (f" [blob {self.blob}]" if self.blob else "")

    @property
    def name(self) -> str:
        import posixpath

        return posixpath.splitext(posixpath.basename(self.member or self.path))[0]


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    photos: tuple[CataloguedPhoto, ...]
    commit: str = ""  # git: the snapshot the catalogue was made from


def load() -> tuple[Source, ...]:
    text = (resources.files("vov.train") / "catalogue.json").read_text(encoding="utf-8")
    body = json.loads(text)
    out = []
    for row in body["sources"]:
        photos = tuple(CataloguedPhoto(**p) for p in row["photos"])
        source = Source(row["name"], row["kind"], photos, row.get("commit", ""))
        if source.kind not in KINDS:
            raise UsageError(f"catalogue: {source.name}: unknown kind {source.kind!r}")
        for p in photos:
            if p.licence not in LICENCES or (p.container and p.container not in CONTAINERS):
                raise UsageError(f"catalogue: {source.name}: {p.path}: licence or container not known")
        out.append(source)
    return tuple(out)


CATALOGUE: tuple[Source, ...] = load()
