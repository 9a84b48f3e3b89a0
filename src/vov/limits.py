"""What one decode may cost: the limits a decoder checks before any work, and the encoder honours.

A .vov file declares its decode cost in its header: the pixels of each frame, the frames, the
sampler steps, the vector length d and the adapter rank. Every decoder (the CLI, the decoder
service) compares those with its `Limits` after parsing the header and before it allocates a
latent or rebuilds an adapter; the encoder refuses options that would make a file over the same
limits, so a file it makes with its defaults always decodes with the default limits.

Memory. The exported denoiser that the services run (ONNX Runtime, in Triton or in process)
computes attention as full matrices, whose memory grows with the square of the tokens of a frame.
`MAX_PIXELS` (1920 x 1088, 8160 tokens on the embedded backbone) keeps one decode step of the
embedded backbone under 2 GB on a CPU (measured: 1.8 GB peak RSS at that size, against 0.17 GB at
768 x 512); a 3840 x 2160 frame would take about 27 GB. Larger frames are refused up front. A clip's
frames attend to each other, so its tokens add up over its frames: `max_clip_pixels` bounds the
pixels of one clip (frames x width x height) by the same figure, and the encoder cuts a video into
clips short enough to meet it (vov.codec.clip_length). Backbones served on GPUs with fused attention
(Wan's 81-frame clips) need it raised (VOV_MAX_CLIP_PIXELS).

Operators lower (or raise) the limits with environment variables (`from_environment`) or flags
(vov.cli.flags.add_limits, which the services share).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from vov.errors import UsageError, VovError
from vov.format.bitstream import MAX_D, MAX_FRAMES, MAX_RANK

MAX_PIXELS = 1920 * 1088  # per frame, before padding to the latent grid
MAX_SIDE = 4096


class LimitExceeded(VovError):
    """A file or a request asks for more work than this decoder or encoder allows."""


@dataclass(frozen=True)
class Limits:
    max_pixels: int = MAX_PIXELS  # width x height of one frame
    max_frames: int = MAX_FRAMES  # frames of one file (the format's own bound)
    max_sampler_steps: int = 1000
    max_d: int = MAX_D  # length of the coded vector (the format's own bound)
    max_rank: int = MAX_RANK  # the format's own bound
    max_work: int = 1 << 36  # pixels x frames x sampler steps of one decode
    max_clip_pixels: int = MAX_PIXELS  # pixels of one clip (frames x width x height): its attention's size

    def check(self, *, width: int, height: int, frames: int, sampler_steps: int, d: int, rank: int,
              clip_frames: int = 1, what: str = "the file") -> None:
        """Raise LimitExceeded naming the first bound that `what` passes."""
        asked = {
            "max_pixels": (width * height, f"{width}x{height} pixels a frame"),
            "max_frames": (frames, f"{frames} frames"),
            "max_sampler_steps": (sampler_steps, f"{sampler_steps} sampler steps"),
            "max_d": (d, f"a vector of d = {d}"),
            "max_rank": (rank, f"rank {rank}"),
            "max_work": (width * height * frames * sampler_steps, f"{width * height * frames * sampler_steps} "
                                                                   "pixel-steps of work"),
            "max_clip_pixels": (width * height * min(clip_frames, frames),
                                f"clips of {min(clip_frames, frames)} frames of {width}x{height}"),
        }
        for name, (value, text) in asked.items():
            bound = getattr(self, name)
            if value > bound:
                raise LimitExceeded(f"{what} asks for {text}; this decoder allows at most {bound} "
                                    f"({ENV[name]} / --{name.replace('_', '-')})")


def max_padded_pixels(multiple: int, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> int:
    """An upper bound on the pixels of a frame of at most `max_pixels` (sides at most `max_side`)
    once both sides are padded to `multiple`: what an exported graph must accept, and no more."""
    m = multiple - 1
    return max_pixels + m * (max_side + max_pixels // max_side + 1) + m * m


ENV = {f.name: "VOV_" + f.name.upper() for f in fields(Limits)}
HELP = {
    "max_pixels": "pixels of one frame",
    "max_frames": "frames of one file",
    "max_sampler_steps": "sampler steps of one decode",
    "max_d": "length of the coded vector",
    "max_rank": "adapter rank",
    "max_work": "pixels x frames x sampler steps of one decode",
    "max_clip_pixels": "pixels of one clip, frames x width x height",
}


def from_environment(environ=os.environ) -> Limits:
    """The defaults, with each limit its environment variable sets (a positive integer)."""
    values = {}
    for f in fields(Limits):
        text = environ.get(ENV[f.name])
        if text:
            try:
                values[f.name] = int(text)
            except ValueError:
                raise UsageError(f"{ENV[f.name]}: not an integer: {text!r}") from None
            if values[f.name] <= 0:
                raise UsageError(f"{ENV[f.name]}: must be positive, not {text}")
    return Limits(**values)


def from_args(args, environ=os.environ) -> Limits:
    """Flags (vov.cli.flags.add_limits: None where not given) win over the environment, which wins
    over the defaults."""
    base = from_environment(environ)
    given = {f.name: getattr(args, f.name) for f in fields(Limits) if getattr(args, f.name, None) is not None}
    return Limits(**{**{f.name: getattr(base, f.name) for f in fields(Limits)}, **given})
