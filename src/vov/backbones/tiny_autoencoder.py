"""A tiny convolutional autoencoder: 8x down and up, 64 channels throughout, any latent width.

The layer plan is that of TAESD-class autoencoders (madebyollin/taesd, MIT licence), whose TAEF2
weights were distilled from FLUX.2's VAE: 32 latent channels at 1/8 of the resolution, plain 3x3
convolutions with ReLU, nearest-neighbour upsampling, and, in the blocks at the latent's
resolution, a global branch (1x1 convolution, GroupNorm, ReLU, 1x1 convolution) that lets a block
see the statistics of the whole picture. vov converts those weights once to safetensors
(`scripts/convert_taef2.py`) and loads them into the modules below; the order in which the modules
register their parameters is the order of the original checkpoints, which is what the conversion
relies on (and checks, shape by shape).

Pixels are RGB in [0, 1], shaped (batch, 3, height, width) with height and width multiples of 8;
raw latents are (batch, channels, height / 8, width / 8), roughly within [-3, 3] (the decoder
squashes its input into that range first).
"""

from __future__ import annotations

import torch
from torch import nn

WIDTH = 64
POOL_GROUPS = 4
POOL_EXPANSION = 4
LATENT_BOUND = 3.0


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class GlobalBranch(nn.Module):
    """x -> x + W2 relu(GroupNorm(W1 x)): a residual correction from the picture's own statistics."""

    def __init__(self, width: int):
        super().__init__()
        hidden = width * POOL_EXPANSION
        self.expand = nn.Conv2d(width, hidden, 1, bias=False)
        self.norm = nn.GroupNorm(POOL_GROUPS, hidden)
        self.project = nn.Conv2d(hidden, width, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(torch.relu(self.norm(self.expand(x))))


class ResidualBlock(nn.Module):
    """relu(conv(relu(conv(relu(conv(x))))) + x), optionally after a `GlobalBranch`."""

    def __init__(self, width: int = WIDTH, global_branch: bool = False):
        super().__init__()
        self.first = conv3x3(width, width)
        self.second = conv3x3(width, width)
        self.third = conv3x3(width, width)
        self.global_branch = GlobalBranch(width) if global_branch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_branch is not None:
            x = self.global_branch(x)
        y = self.third(torch.relu(self.second(torch.relu(self.first(x)))))
        return torch.relu(y + x)


def _stage(count: int, global_branch: bool) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(WIDTH, global_branch) for _ in range(count)))


class TinyEncoder(nn.Module):
    """pixels (B, 3, H, W) in [0, 1] -> raw latents (B, C, H / 8, W / 8)."""

    def __init__(self, latent_channels: int, global_branch: bool = True):
        super().__init__()
        self.stem = conv3x3(3, WIDTH)
        self.stem_block = ResidualBlock(WIDTH)
        self.down = nn.ModuleList()
        for level in range(3):
            self.down.append(nn.Sequential(conv3x3(WIDTH, WIDTH, stride=2, bias=False),
                                           *_stage(3, global_branch and level == 2)))
        self.head = conv3x3(WIDTH, latent_channels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.stem_block(self.stem(pixels))
        for level in self.down:
            x = level(x)
        return self.head(x)


class TinyDecoder(nn.Module):
    """raw latents (B, C, h, w) -> pixels (B, 3, 8h, 8w), about [0, 1] (not clamped)."""

    def __init__(self, latent_channels: int, global_branch: bool = True):
        super().__init__()
        self.stem = conv3x3(latent_channels, WIDTH)
        self.up = nn.ModuleList()
        for level in range(3):
            self.up.append(_stage(3, global_branch and level == 0))
            self.up.append(conv3x3(WIDTH, WIDTH, bias=False))  # after a 2x nearest upsampling
        self.tail_block = ResidualBlock(WIDTH)
        self.head = conv3x3(WIDTH, 3)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(latents / LATENT_BOUND) * LATENT_BOUND
        x = torch.relu(self.stem(x))
        for blocks, conv in zip(self.up[0::2], self.up[1::2]):
            x = conv(nn.functional.interpolate(blocks(x), scale_factor=2.0, mode="nearest"))
        return self.head(self.tail_block(x))


class TinyAutoencoder(nn.Module):
    """Encoder and decoder, and the per-channel statistics that whiten the latent for the denoiser.

    `encode` and `decode` work on clips (B, 3, F, H, W) <-> (B, C, F, H / 8, W / 8), frame by frame;
    the denoiser sees `(raw - latent_mean) / latent_std`, which has about unit variance per channel
    over the training photos.
    """

    factor = 8

    def __init__(self, latent_channels: int = 32, global_branch: bool = True):
        super().__init__()
        self.latent_channels = latent_channels
        self.encoder = TinyEncoder(latent_channels, global_branch)
        self.decoder = TinyDecoder(latent_channels, global_branch)
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    @staticmethod
    def _frames_to_batch(x: torch.Tensor) -> tuple[torch.Tensor, int]:
        b, c, f, h, w = x.shape
        return x.transpose(1, 2).reshape(b * f, c, h, w), f

    @staticmethod
    def _batch_to_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
        bf, c, h, w = x.shape
        return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1)
        return self.latent_mean.to(like).view(shape), self.latent_std.to(like).view(shape)

    def encode_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C, H / 8, W / 8), not whitened."""
        return self.encoder(pixels)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        x, frames = self._frames_to_batch(pixels)
        raw = self.encoder(x)
        mean, std = self._stats(raw)
        return self._batch_to_frames((raw - mean) / std, frames)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z, frames = self._frames_to_batch(latents)
        mean, std = self._stats(z)
        return self._batch_to_frames(self.decoder(z * std + mean), frames)
