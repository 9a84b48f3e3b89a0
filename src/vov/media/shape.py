"""The shape every frame container shares: height, width and frame count, read from its one array.

`vov.media.Picture` holds (height, width, 3), `vov.media.Clip` and the codec's `vov.plan.Frames`
hold (frames, height, width, 3); each names its array in `_pixel_array` and inherits the rest.
"""

from __future__ import annotations


class FrameShape:
    """Height, width and frame count of a container whose pixels are one array (`_pixel_array` names it)."""

    _pixel_array = "pixels"

    @property
    def height(self) -> int:
        return getattr(self, self._pixel_array).shape[-3]

    @property
    def width(self) -> int:
        return getattr(self, self._pixel_array).shape[-2]

    @property
    def num_frames(self) -> int:
        """1 for a picture (height, width, 3), the leading axis for frames (frames, height, width, 3)."""
        pixels = getattr(self, self._pixel_array)
        return pixels.shape[0] if pixels.ndim == 4 else 1
