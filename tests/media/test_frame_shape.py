import numpy as np

from vov.media import Clip, Picture
from vov.media.shape import FrameShape


def test_picture_and_clip_read_their_shape_from_their_own_array():
    picture = Picture(np.zeros((20, 36, 3), dtype=np.float32))
    clip = Clip(np.zeros((5, 24, 40, 3), dtype=np.float32))
    assert isinstance(picture, FrameShape) and isinstance(clip, FrameShape)
    assert (picture.num_frames, picture.height, picture.width) == (1, 20, 36)
    assert (clip.num_frames, clip.height, clip.width) == (5, 24, 40)
    assert len(clip) == 5 and clip.pixels == 5 * 24 * 40
    clip.frames = clip.frames[:2, :8]  # a container's shape follows its array
    assert (clip.num_frames, clip.height, clip.width) == (2, 8, 40)
