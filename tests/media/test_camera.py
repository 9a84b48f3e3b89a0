"""The camera moves keep the outputs they had: the benchmark's clips and the training cache depend on them."""

import hashlib

import numpy as np
import pytest

from vov.errors import MediaError
from vov.media.camera import CAMERA_MOVES, RANDOM_MOVE, camera_move

# sha256 (first 16 hex digits) of the 8-bit frames of a 5-frame 40x32 move over `photo()`
NAMED_DIGESTS = {"pan": "683cf68f97202e16", "tilt": "f9c326eb4b74f6ae", "zoom-in": "343eb26822ebb257",
                 "zoom-out": "0a13f77153b5e15b", "rotate": "8f567b42f01a1023", "mixed": "24379e160915c29d"}
# ... and of a 6-frame 40x32 random move drawn from default_rng(seed)
RANDOM_DIGESTS = {0: "e288bbbcc2f3b6bc", 3: "316dbe9d747fd04c"}


def photo() -> np.ndarray:
    """A fixed 128x96 8-bit photo: smooth gradients and seeded noise."""
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    rng = np.random.default_rng(11)
    base = np.stack([np.sin(x / 9) * 0.4 + 0.5, np.cos(y / 7) * 0.4 + 0.5, (x + y) / 224], -1)
    return (np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1) * 255 + 0.5).astype(np.uint8)


def digest(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("kind", sorted(CAMERA_MOVES))
def test_named_moves_give_the_frames_they_always_gave(kind):
    clip = camera_move(photo(), 5, kind, size=(40, 32))
    assert (clip.num_frames, clip.height, clip.width) == (5, 32, 40)
    assert digest(clip.to_uint8()) == NAMED_DIGESTS[kind]


@pytest.mark.parametrize("seed", sorted(RANDOM_DIGESTS))
def test_the_random_move_gives_the_frames_it_always_gave_for_a_seed(seed):
    clip = camera_move(photo(), 6, RANDOM_MOVE, size=(40, 32), rng=np.random.default_rng(seed))
    frames = clip.to_uint8()
    assert frames.shape == (6, 32, 40, 3) and clip.container == "synthetic"
    assert digest(frames) == RANDOM_DIGESTS[seed]
    assert np.array_equal(frames.astype(np.float32) / np.float32(255), clip.frames)  # 8-bit values exactly


def test_the_random_move_depends_on_the_generator_alone():
    a = camera_move(photo(), 4, RANDOM_MOVE, size=(40, 32), rng=np.random.default_rng(1)).frames
    b = camera_move(photo(), 4, RANDOM_MOVE, size=(40, 32), rng=np.random.default_rng(1)).frames
    c = camera_move(photo(), 4, RANDOM_MOVE, size=(40, 32), rng=np.random.default_rng(2)).frames
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(MediaError, match="random generator"):
        camera_move(photo(), 4, RANDOM_MOVE, size=(40, 32))
