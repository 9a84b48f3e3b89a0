"""`vov data gather`: collect the allowed photos into one folder with a manifest.

Sources are vov's own catalogue (`vov.train.sources`): Debian packages (installed with apt-get when
missing and the command runs as root), photos bundled with Python packages, and public git
repositories of openly licensed photos, read at a pinned commit from local clones (this command
never touches the network itself; `--repos DIR` names a folder of clones, `owner+name` or
`owner/name`, bare or not, and a missing one is reported with the `git clone` that makes it).

Every photo is decoded (orientation applied), scaled down to at most `MAX_SIDE` pixels on its long
side, stored as a high-quality JPEG under `OUT/<source>/`, and listed in `OUT/manifest.json` with its
source, origin, licence and hash (`vov.train.manifest`). Held-out photos are refused by name and by
look, and photos that look the same as one already gathered (the same wallpaper in two packages or
at two resolutions) are kept once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vov.errors import UsageError
from vov.train import containers, manifest, sources

MAX_SIDE = 2048
MIN_SIDE = 200  # smaller photos teach little at the scales trained on
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
MAX_FILE_BYTES = 200 << 20
MAX_PIXELS = 120_000_000


@dataclass
class Report:
    gathered: int = 0
    per_source: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # reason -> count
    missing: list = field(default_factory=list)  # sources not available here, with how to get them

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "photo"


def _decode(blob: bytes) -> np.ndarray:
    import io

    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with Image.open(io.BytesIO(blob)) as img:
        img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced size when the file is huge
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


# ---------------------------------------------------------------------------------------- the sources


def ensure_debian(packages: list[str], install: bool) -> list[str]:
    """The packages of `packages` that are not installed (after installing them when asked and allowed)."""
    def missing() -> list[str]:
        return [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]

    absent = missing() if shutil.which("dpkg") else list(packages)
    if absent and install and shutil.which("apt-get") and os.geteuid() == 0:
        print(f"data: installing Debian packages: {' '.join(absent)}", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "--no-install-recommends",
                        *absent], check=False, env=env, stdout=subprocess.DEVNULL)
        absent = missing()
    return absent


def _debian_version(package: str) -> str:
    run = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return run.stdout.strip() if run.returncode == 0 else "?"


def _git_dir(repos: Path | None, repo: str) -> Path | None:
    if repos is None:
        return None
    owner, name = repo.split("/")
    for candidate in (repos / f"{owner}+{name}", repos / owner / name, repos / name):
        for git in (candidate / "repo", candidate / ".git", candidate):
            if (git / "HEAD").is_file() and (git / "objects").is_dir():
                return git
    return None


def _git_blob(git_dir: Path, blob: str) -> bytes:
    if not re.fullmatch(r"[0-9a-f]{40}", blob):
        raise UsageError(f"catalogue: {blob!r} is not a git object id")
    run = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "blob", blob], capture_output=True)
    if run.returncode:
        raise FileNotFoundError(f"object {blob[:12]} is not in {git_dir}")
    return run.stdout


def _read_file(path: str) -> bytes:
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise UsageError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MB")
    return Path(path).read_bytes()


def _reader(source: sources.Source, photo: sources.CataloguedPhoto, git_dir: Path | None):
    """A function that returns the photo's encoded bytes."""
    if source.kind == "git":
        read = lambda: _git_blob(git_dir, photo.blob)  # noqa: E731
    elif source.kind == "debian":
        read = lambda: _read_file(photo.path)  # noqa: E731
    else:
        read = lambda: _skimage_png(photo.path)  # noqa: E731
    if photo.container == "rcc":
        return lambda: containers.rcc_member(read(), photo.member)
    if photo.container == "edj":
        return lambda: containers.largest_jpeg(read())
    return read


def _skimage_png(name: str) -> bytes:
    import io

    from PIL import Image

    from vov.train import data

    out = io.BytesIO()
    Image.fromarray(data.load_rgb(data.Photo(name, "scikit-image", None))).save(out, "PNG")
    return out.getvalue()


def _skimage_photos() -> tuple[sources.CataloguedPhoto, ...]:
    from vov.train import data

    return tuple(sources.CataloguedPhoto(name, licence) for name, licence in data.SKIMAGE_LICENCES.items())


def _source_version(source: sources.Source) -> str:
    if source.kind == "debian":
        run = subprocess.run(["dpkg-query", "-W", "-f=${Version}", source.name], capture_output=True, text=True)
        return f"{source.name} {run.stdout.strip() or '?'} (Debian)"
    if source.kind == "git":
        return f"github.com/{source.name} (snapshot {source.commit[:12]})"
    try:
        from importlib.metadata import version

        return f"{source.name} {version(source.name)} (PyPI)"
    except Exception:
        return source.name


# ---------------------------------------------------------------------------------------- gathering


def gather(out: str | os.PathLike, repos: str | os.PathLike | None = None, install: bool = True,
           only: list[str] | None = None, progress: bool = True) -> Report:
    """Collect every available photo of the catalogue into `out` and write its manifest."""
    from PIL import Image
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    repos = Path(repos) if repos else None
    catalogue = [s for s in sources.CATALOGUE if not only or s.name in only]
    if only and len(catalogue) != len(set(only)):
        known = {s.name for s in sources.CATALOGUE}
        raise UsageError(f"unknown source(s): {', '.join(sorted(set(only) - known))}")
    absent = set(ensure_debian([s.name for s in catalogue if s.kind == "debian"], install))
    report = Report()
    held_names, held = manifest.held_out_thumbnails()
    held_lower = [n.lower() for n in held_names]
    kept_thumbs: list[np.ndarray] = []
    entries: list[manifest.Entry] = []
    used_files: set[str] = set()
    for source in catalogue:
        if source.kind == "debian" and source.name in absent:
            report.missing.append(f"{source.name}: apt-get install {source.name} (as root)")
            continue
        git_dir = _git_dir(repos, source.name) if source.kind == "git" else None
        if source.kind == "git" and git_dir is None:
            report.missing.append(f"{source.name}: git clone https://github.com/{source.name} "
                                  f"{(repos or Path('REPOS')) / source.name.replace('/', '+')} (then --repos)")
            continue
        version = _source_version(source)
        folder = out / _slug(source.name.replace("/", "+"))
        count = 0
        photos = _skimage_photos() if source.kind == "python" else source.photos
        for photo in tqdm(photos, desc=f"gathering {source.name}", unit="photo", disable=not progress, leave=False):
            if any(photo.name.lower().startswith(n) for n in held_lower):
                report.skip("held out")
                continue
            try:
                pixels = _decode(_reader(source, photo, git_dir)())
            except FileNotFoundError:
                report.skip("absent from the source here")
                continue
            except UsageError as e:
                report.skip(f"unreadable ({str(e)[:40]})")
                continue
            except Exception as e:  # a file Pillow cannot read: say so and go on
                report.skip(f"unreadable ({type(e).__name__})")
                continue
            if min(pixels.shape[:2]) < MIN_SIDE:
                report.skip(f"smaller than {MIN_SIDE} pixels")
                continue
            thumb = manifest.thumbnail(pixels)
            if manifest.near_duplicates(thumb[None], held)[0] >= 0:
                report.skip("looks like a held-out photo")
                continue
            if kept_thumbs and manifest.near_duplicates(thumb[None], np.stack(kept_thumbs))[0] >= 0:
                report.skip("duplicate of a photo already gathered")
                continue
            h, w = pixels.shape[:2]
            scale = MAX_SIDE / max(h, w)
            if scale < 1.0:
                pixels = np.asarray(Image.fromarray(pixels).resize((round(w * scale), round(h * scale)), Image.LANCZOS))
            name = _slug(photo.name)
            relative = f"{folder.name}/{name}.jpg"
            n = 1
            while relative in used_files:
                n += 1
                relative = f"{folder.name}/{name}-{n}.jpg"
            used_files.add(relative)
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(out / relative, "JPEG", quality=95, subsampling=0)
            entries.append(manifest.Entry(file=relative, sha256=manifest.sha256_file(out / relative), source=version,
                                          origin=photo.origin, licence=photo.licence, width=pixels.shape[1],
                                          height=pixels.shape[0], author=photo.author))
            kept_thumbs.append(thumb)
            count += 1
        report.per_source[source.name] = count
        report.gathered += count
    manifest.verify(out, entries)
    manifest.write(out, entries)
    return report
