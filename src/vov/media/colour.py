"""Y'CbCr samples to R'G'B' and back, exactly invertible on the samples (ITU-R BT.601 and BT.709).

- Y' = Kr R' + Kg G' + Kb B', Pb = (B' - Y') / (2 (1 - Kb)), Pr = (R' - Y') / (2 (1 - Kr)) on
  gamma-encoded R'G'B' in [0, 1]; no transfer function or primaries are converted. The matrices
  are written out in `RGB_TO_YPBPR`.
- Limited range, n bits: Y = (16 + 219 Y') 2^(n-8), Cb/Cr = (128 + 224 P) 2^(n-8). Full range:
  Y = (2^n - 1) Y', Cb/Cr = (2^n - 1) P + 2^(n-1) (ITU-T H.273). Samples are rounded half up and
  clamped to [0, 2^n - 1].
- Chroma siting: every 4:2:0 (and 4:2:2) plane is treated as sited at the centre of its 2x2 (2x1)
  block of luma samples, the JPEG/MPEG-1 siting that Y4M's `C420jpeg` names. Downsampling averages
  the block; upsampling gives each luma sample its block's chroma sample. That pair is exactly
  invertible (down(up(c)) = c), which is what makes Y4M round trips byte-exact. MPEG-2 (`left`)
  and PAL-DV sited planes are converted with the same filter (an offset of a quarter or half
  chroma sample that this filter ignores). An odd side's last block has one column (row) of luma.
- The matrix of a stream that does not say (Y4M never does): BT.709 when the picture is HD
  (wider than 1024 or taller than 576), BT.601 otherwise, as video players guess
  (`default_matrix`). Other matrices (BT.2020, ...) are refused rather than shown in wrong colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vov.errors import MediaError

MATRICES = ("bt601", "bt709")
RANGES = ("limited", "full")
CHROMAS = ("420", "422", "444", "400")  # 400: luma only (grey)
BIT_DEPTHS = (8, 9, 10, 12, 14, 16)

# (Kr, Kb) of each matrix; Kg = 1 - Kr - Kb
LUMA_WEIGHTS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}

# R'G'B' in [0, 1] -> (Y' in [0, 1], Pb and Pr in [-0.5, 0.5]); rows: Y', Pb, Pr
RGB_TO_YPBPR = {
    "bt601": np.array([[0.299, 0.587, 0.114],
                       [-0.168736, -0.331264, 0.5],
                       [0.5, -0.418688, -0.081312]]),
    "bt709": np.array([[0.2126, 0.7152, 0.0722],
                       [-0.114572, -0.385428, 0.5],
                       [0.5, -0.454153, -0.045847]]),
}
# the inverses as the standards print them; conversions use the exact inverse of the rows above
YPBPR_TO_RGB = {
    "bt601": np.array([[1.0, 0.0, 1.402],
                       [1.0, -0.344136, -0.714136],
                       [1.0, 1.772, 0.0]]),
    "bt709": np.array([[1.0, 0.0, 1.5748],
                       [1.0, -0.187324, -0.468124],
                       [1.0, 1.8556, 0.0]]),
}
_FORWARD = {m: RGB_TO_YPBPR[m].astype(np.float32) for m in MATRICES}
_INVERSE = {m: np.linalg.inv(RGB_TO_YPBPR[m]).astype(np.float32) for m in MATRICES}


def default_matrix(width: int, height: int) -> str:
    """The matrix of a stream that does not say: BT.709 for HD pictures, BT.601 below."""
    return "bt709" if width > 1024 or height > 576 else "bt601"


@dataclass(frozen=True)
class YCbCrFormat:
    """How Y'CbCr samples are stored: matrix, range, chroma layout, bits per sample."""

    matrix: str = "bt709"
    range: str = "limited"
    chroma: str = "420"
    bits: int = 8

    def __post_init__(self):
        if self.matrix not in MATRICES:
            raise MediaError(f"colour matrix {self.matrix!r} is not one of {', '.join(MATRICES)}")
        if self.range not in RANGES:
            raise MediaError(f"range {self.range!r} is not one of {', '.join(RANGES)}")
        if self.chroma not in CHROMAS:
            raise MediaError(f"chroma {self.chroma!r} is not one of {', '.join(CHROMAS)}")
        if self.bits not in BIT_DEPTHS:
            raise MediaError(f"bit depth {self.bits!r} is not one of {', '.join(map(str, BIT_DEPTHS))}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.bits == 8 else np.dtype("<u2")

    def chroma_shape(self, height: int, width: int) -> tuple[int, int] | None:
        if self.chroma == "400":
            return None
        if self.chroma == "444":
            return height, width
        if self.chroma == "422":
            return height, (width + 1) // 2
        return (height + 1) // 2, (width + 1) // 2

    def frame_bytes(self, height: int, width: int) -> int:
        samples = height * width
        chroma = self.chroma_shape(height, width)
        if chroma is not None:
            samples += 2 * chroma[0] * chroma[1]
        return samples * self.dtype.itemsize

    def _scales(self) -> tuple[float, float, float, float]:
        """(luma scale, luma offset, chroma scale, chroma offset) from [0, 1] / [-0.5, 0.5] to codes."""
        if self.range == "full":
            peak = float(2**self.bits - 1)
            return peak, 0.0, peak, float(2 ** (self.bits - 1))
        unit = float(2 ** (self.bits - 8))
        return 219.0 * unit, 16.0 * unit, 224.0 * unit, 128.0 * unit


def _downsample(plane: np.ndarray, chroma: str) -> np.ndarray:
    """Average each chroma block (2x2 for 4:2:0, 2x1 for 4:2:2); an odd side's last block is narrower."""
    if chroma == "444":
        return plane
    h, w = plane.shape
    sub_h = 2 if chroma == "420" else 1
    padded = np.pad(plane, ((0, h % sub_h), (0, w % 2)), mode="edge")
    hh, ww = padded.shape
    return padded.reshape(hh // sub_h, sub_h, ww // 2, 2).mean(axis=(1, 3), dtype=np.float32)


def _upsample(plane: np.ndarray, chroma: str, height: int, width: int) -> np.ndarray:
    """Each luma sample takes its block's chroma sample (the exact inverse of `_downsample`)."""
    if chroma == "444":
        return plane
    if chroma == "420":
        plane = np.repeat(plane, 2, axis=0)
    return np.repeat(plane, 2, axis=1)[:height, :width]


def _quantise(values: np.ndarray, scale: float, offset: float, fmt: YCbCrFormat) -> np.ndarray:
    codes = np.floor(values * np.float32(scale) + np.float32(offset + 0.5))
    return np.clip(codes, 0, 2**fmt.bits - 1).astype(fmt.dtype)


def rgb_to_ycbcr(rgb: np.ndarray, fmt: YCbCrFormat) -> tuple[np.ndarray, ...]:
    """One frame of R'G'B' (height, width, 3) -> its planes (Y,) or (Y, Cb, Cr) as integer samples."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MediaError(f"expected one RGB frame (height, width, 3), got shape {rgb.shape}")
    y_scale, y_offset, c_scale, c_offset = fmt._scales()
    m = _FORWARD[fmt.matrix]
    luma = rgb @ m[0]
    y = _quantise(luma, y_scale, y_offset, fmt)
    if fmt.chroma == "400":
        return (y,)
    pb = _downsample(rgb @ m[1], fmt.chroma)
    pr = _downsample(rgb @ m[2], fmt.chroma)
    return y, _quantise(pb, c_scale, c_offset, fmt), _quantise(pr, c_scale, c_offset, fmt)


def ycbcr_to_rgb(planes: tuple[np.ndarray, ...] | list[np.ndarray], fmt: YCbCrFormat,
                 out: np.ndarray | None = None) -> np.ndarray:
    """One frame's planes -> float32 R'G'B' (height, width, 3), not clipped to [0, 1]."""
    y_scale, y_offset, c_scale, c_offset = fmt._scales()
    luma = (planes[0].astype(np.float32) - np.float32(y_offset)) / np.float32(y_scale)
    h, w = luma.shape
    if out is None:
        out = np.empty((h, w, 3), dtype=np.float32)
    if fmt.chroma == "400" or len(planes) == 1:
        out[...] = luma[..., None]
        return out
    pb = (planes[1].astype(np.float32) - np.float32(c_offset)) / np.float32(c_scale)
    pr = (planes[2].astype(np.float32) - np.float32(c_offset)) / np.float32(c_scale)
    pb, pr = _upsample(pb, fmt.chroma, h, w), _upsample(pr, fmt.chroma, h, w)
    inv = _INVERSE[fmt.matrix]
    for c in range(3):
        out[..., c] = inv[c, 0] * luma + inv[c, 1] * pb + inv[c, 2] * pr
    return out
