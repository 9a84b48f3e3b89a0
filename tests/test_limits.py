import argparse

import pytest

from vov import limits
from vov.cli import flags
from vov.errors import UsageError
from vov.limits import LimitExceeded, Limits


def test_each_bound_is_named_when_passed():
    ok = dict(width=768, height=512, frames=1, sampler_steps=50, d=16384, rank=4)
    Limits().check(**ok)
    for field, value, bound in [("width", 4096, "max_pixels"), ("sampler_steps", 1001, "max_sampler_steps"),
                                ("d", 1 << 23, "max_d"), ("rank", 65, "max_rank"), ("frames", 10001, "max_frames")]:
        with pytest.raises(LimitExceeded, match=limits.ENV[bound]):
            Limits().check(**{**ok, field: value})
    with pytest.raises(LimitExceeded, match="pixel-steps"):
        Limits(max_work=768 * 512 * 49).check(**ok)
    with pytest.raises(LimitExceeded, match="VOV_MAX_CLIP_PIXELS"):
        Limits().check(**{**ok, "frames": 17, "clip_frames": 17})


def test_flags_win_over_the_environment_which_wins_over_the_defaults():
    parser = argparse.ArgumentParser()
    flags.add_limits(parser)
    env = {"VOV_MAX_SAMPLER_STEPS": "200", "VOV_MAX_D": "4096"}
    got = limits.from_args(parser.parse_args(["--max-d", "1024"]), env)
    assert (got.max_sampler_steps, got.max_d, got.max_rank) == (200, 1024, Limits().max_rank)
    with pytest.raises(UsageError, match="VOV_MAX_RANK"):
        limits.from_environment({"VOV_MAX_RANK": "-3"})


def test_padded_frames_stay_within_the_stated_bound():
    bound = limits.max_padded_pixels(16)
    for width in (16, 17, 510, 511, 1920, 4095, 4096):
        height = min(limits.MAX_SIDE, limits.MAX_PIXELS // width)
        padded = -(-width // 16) * 16 * (-(-height // 16) * 16)
        assert padded <= bound
