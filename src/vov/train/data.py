"""The photos the embedded model may learn from, and the crops and camera moves made of them.

Only natural photos from a few Debian packages and scikit-image's bundled photos are allowed
(MODEL_CARD.md lists each source and its licence). A fixed set of photos is held out for evaluation
and never trained on.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from vov.media.camera import RANDOM_MOVE, camera_move

DEBIAN_PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds", "lomiri-wallpapers-16.04", "libjxl-testdata")

# Plasma ships artwork as well as photos; these wallpapers are photographs.
PLASMA_PHOTOS = (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
    "OneStandsOut", "Path", "Volna", "summer_1am",
)
# lomiri-wallpapers-16.04 installs into /usr/share/backgrounds; all but one are photographs.
LOMIRI_NOT_PHOTOS = ("umang_by_Abhishek_Mudgal.jpg",)
LIBJXL_PHOTOS = (
    "external/wesaturate/500px/cvo9xd_keong_macan_srgb8.png",
    "external/wesaturate/500px/tmshre_riaphotographs_srgb8.png",
    "external/wesaturate/500px/u76c0g_bliznaca_srgb8.png",
    "external/raw.pixls/DJI-FC6310-16bit_srgb8_v4_krita.png",
    "external/raw.pixls/Google-Pixel2XL-16bit_srgb8_v4_krita.png",
    "external/raw.pixls/HUAWEI-EVA-L09-16bit_srgb8_dt.png",
    "external/raw.pixls/Nikon-D300-12bit_srgb8_dt.png",
    "external/raw.pixls/Sony-DSC-RX1RM2-14bit_srgb8_v4_krita.png",
)
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "camera", "coins", "moon", "brick", "grass",
    "gravel", "hubble_deep_field",
)

# scikit-image's bundled photos with a clear licence (its docstrings): NASA and SpaceX photos are public
# domain, the Brooklyn Museum's coins carry no known restrictions, the rest were dedicated to CC0
SKIMAGE_LICENCES = {
    "astronaut": "public-domain", "rocket": "public-domain", "hubble_deep_field": "public-domain",
    "coins": "public-domain", "chelsea": "CC0-1.0", "coffee": "CC0-1.0", "camera": "CC0-1.0", "brick": "CC0-1.0",
    "grass": "CC0-1.0", "gravel": "CC0-1.0",
}

# Held out for evaluation: never trained on. Names are file stems (or wallpaper folder names).
HELD_OUT = (
    "EveningGlow", "FallenLeaf", "aitzgorri_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
    "Dragonfly_by_Bolly", "LadyBird", "Garden", "friends_by_Aitzol_Berasategi",
)


@dataclass(frozen=True)
class Photo:
    name: str
    source: str
    path: str | None  # None for scikit-image photos, loaded by name


def ensure_debian_photos() -> None:
    """Install the allowed Debian photo packages when missing (needs root and apt)."""
    missing = [p for p in DEBIAN_PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        sys.exit(f"vov: the training photos need these Debian packages: {' '.join(missing)} (run as root with apt-get)")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _largest(paths: list[str]) -> str:
    return max(paths, key=os.path.getsize)


def catalogue() -> list[Photo]:
    """Every allowed photo that is installed, held-out ones included."""
    photos = []
    for name in PLASMA_PHOTOS:
        found = glob.glob(f"/usr/share/wallpapers/{name}/contents/images/*")
        if found:
            photos.append(Photo(name, "plasma-workspace-wallpapers", _largest(found)))
    for path in sorted(glob.glob("/usr/share/backgrounds/*.jpg")):
        if os.path.basename(path) not in LOMIRI_NOT_PHOTOS:
            photos.append(Photo(os.path.splitext(os.path.basename(path))[0], "lomiri-wallpapers-16.04", path))
    for path in sorted(glob.glob("/usr/share/backgrounds/mate/nature/*")):
        photos.append(Photo(os.path.splitext(os.path.basename(path))[0], "mate-backgrounds", path))
    for rel in LIBJXL_PHOTOS:
        path = f"/usr/share/libjxl-testdata/{rel}"
        if os.path.exists(path):
            photos.append(Photo(os.path.splitext(os.path.basename(rel))[0], "libjxl-testdata", path))
    for name in SKIMAGE_PHOTOS:
        photos.append(Photo(name, "scikit-image", None))
    return photos


def load_rgb(photo: Photo) -> np.ndarray:
    if photo.path is None:
        from skimage import data

        img = getattr(data, photo.name)()
        if isinstance(img, tuple):
            img = img[0]
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        return np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    with Image.open(photo.path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def training_photos() -> list[Photo]:
    return [p for p in catalogue() if p.name not in HELD_OUT]


def held_out_photos() -> list[Photo]:
    return [p for p in catalogue() if p.name in HELD_OUT]


def kodak_like(img: np.ndarray, width: int = 768, height: int = 512) -> np.ndarray:
    """Scale the whole photo to cover width x height, then centre-crop: a Kodak-sized test image."""
    h, w, _ = img.shape
    scale = max(width / w, height / h)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    resized = np.asarray(Image.fromarray(img).resize(size, Image.LANCZOS))
    y0 = (size[1] - height) // 2
    x0 = (size[0] - width) // 2
    return resized[y0 : y0 + height, x0 : x0 + width]


def pyramid(img: np.ndarray, long_sides: tuple[int, ...] = (512, 768, 1152, 1600)) -> list[np.ndarray]:
    """The photo at several scales, so crops see both whole scenes and fine texture."""
    h, w, _ = img.shape
    out = []
    for side in long_sides:
        scale = side / max(h, w)
        if scale > 1.0:
            continue
        out.append(np.asarray(Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.LANCZOS)))
    return out or [img]


class CropSampler:
    """Random crops and synthetic camera moves over a list of uint8 RGB images."""

    def __init__(self, images: list[np.ndarray], seed: int = 0):
        self.images = images
        self.rng = np.random.default_rng(seed)
        areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
        self.weights = areas / areas.sum()

    def _pick(self, min_h: int, min_w: int) -> np.ndarray:
        while True:
            img = self.images[self.rng.choice(len(self.images), p=self.weights)]
            if img.shape[0] >= min_h and img.shape[1] >= min_w:
                return img

    def crops(self, batch: int, size: int) -> np.ndarray:
        """(batch, 3, 1, size, size) floats in [0, 1]."""
        out = np.empty((batch, 3, 1, size, size), dtype=np.float32)
        for i in range(batch):
            img = self._pick(size, size)
            y = self.rng.integers(0, img.shape[0] - size + 1)
            x = self.rng.integers(0, img.shape[1] - size + 1)
            crop = img[y : y + size, x : x + size]
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[i, :, 0] = crop.transpose(2, 0, 1) / 255.0
        return out

    def clips(self, batch: int, frames: int, height: int, width: int) -> np.ndarray:
        """(batch, 3, frames, height, width): a pan, zoom or small rotation across one photo."""
        out = np.empty((batch, 3, frames, height, width), dtype=np.float32)
        for i in range(batch):
            img = self._pick(int(height * 1.6), int(width * 1.6))
            move = camera_move(img, frames, RANDOM_MOVE, size=(width, height), rng=self.rng).to_uint8()
            out[i] = move.transpose(3, 0, 1, 2) / 255.0
        return out
