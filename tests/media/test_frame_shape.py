import numpy as np

from vov.media import Clip, Picture
from vov.media.shape import FrameShape
from vov.plan import Frames


def test_picture_and_clip_read_their_shape_from_their_own_array():
    picture = Picture(np.zeros((20, 36, 3), dtype=np.float32))
    clip = Clip(np.zeros((5, 24, 40, 3), dtype=np.float32))
    assert isinstance(picture, FrameShape) and isinstance(clip, FrameShape)
    assert (picture.num_frames, picture.height, picture.width) == (1, 20, 36)
    assert (clip.num_frames, clip.height, clip.width) == (5, 24, 40)
    assert len(clip) == 5 and clip.pixels == 5 * 24 * 40
    clip.frames = clip.frames[:2, :8]  # a container's shape follows its array
    assert (clip.num_frames, clip.height, clip.width) == (2, 8, 40)


def test_the_codecs_frames_share_the_shape_and_keep_their_names():
    frames = Frames.of(Clip(np.zeros((3, 24, 40, 3), dtype=np.float32), fps=(30, 1)))
    assert isinstance(frames, FrameShape)
    assert (frames.count, frames.num_frames, frames.height, frames.width) == (3, 3, 24, 40)
    assert frames.size == 3 * 24 * 40
    still = Frames.of(Picture(np.zeros((20, 36, 3), dtype=np.float32)))
    assert (still.count, still.height, still.width, still.size) == (1, 20, 36, 20 * 36)
