"""Fréchet Video Distance: the Fréchet distance between I3D features of two sets of clips.

The network is the Inflated 3D ConvNet (Carreira and Zisserman, 2017) trained on Kinetics-400,
written here in plain torch from the architecture's layer table. Its weights cannot be downloaded
here: `FVD(weights=PATH)` reads a state dict whose names follow the common PyTorch port of I3D
(`Conv3d_1a_7x7.conv3d.weight`, `Mixed_3b.b1b.bn.running_mean`, `logits.conv3d.bias`, ...), as
`.safetensors` or a torch pickle. Features are the 400 logits averaged over time, as in the
original FVD; clips are resized to 224 x 224 and scaled to [-1, 1].

FVD compares distributions: use tens of clips or more per side. Lower is better; 0 is identical
statistics.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vov.bench.metrics import load_into_module, load_weights
from vov.errors import UsageError

NEEDS = "the Kinetics-400 I3D weights (RGB stream) as a state dict, e.g. i3d_rgb_kinetics.safetensors"

# (name, kind, arguments); inception branches: b0 1x1, b1 1x1 -> 3x3, b2 1x1 -> 3x3, b3 pool -> 1x1
LAYERS = [
    ("Conv3d_1a_7x7", "unit", (3, 64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "unit", (64, 64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "unit", (64, 192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (192, (64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", "mixed", (256, (128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", (480, (192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", "mixed", (512, (160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", "mixed", (512, (128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", "mixed", (512, (112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", "mixed", (528, (256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", (832, (256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", "mixed", (832, (384, 192, 384, 48, 128, 128))),
]
CLASSES = 400


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after)."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float = 0.0) -> torch.Tensor:
    pads = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
        pads += _same_padding(size, k, s)
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) -> BatchNorm (eps 1e-3) -> ReLU, or a bare conv with bias (the logits)."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm_and_relu: bool = True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, bias=not norm_and_relu)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01) if norm_and_relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.bn is not None else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.b0 = Unit3D(cin, b0)
        self.b1a, self.b1b = Unit3D(cin, b1a), Unit3D(b1a, b1b, (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, b2a), Unit3D(b2a, b2b, (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, b3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class I3D(nn.Module):
    """RGB I3D up to the logits. Input (N, 3, T, 224, 224) in [-1, 1]; output (N, 400), averaged over time."""

    def __init__(self):
        super().__init__()
        kinds = {"unit": lambda a: Unit3D(a[0], a[1], a[2], a[3]), "pool": lambda a: MaxPoolSame(*a),
                 "mixed": lambda a: Mixed(*a)}
        for name, kind, args in LAYERS:
            self.add_module(name, kinds[kind](args))
        self.logits = Unit3D(1024, CLASSES, norm_and_relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, _, _ in LAYERS:
            x = getattr(self, name)(x)
        x = F.avg_pool3d(x, (min(2, x.shape[2]), 7, 7), stride=1)
        return self.logits(x).mean(dim=(2, 3, 4))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of `a` and of `b` (features x dims)."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        raise UsageError("FVD needs at least two clips on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # a singular product: nudge both covariances, as is customary
        eye = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eye) @ (cov_b + eye))
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


class FVD:
    """`FVD(weights)(reference_clips, distorted_clips)`; clips are (frames, height, width, 3) arrays,
    uint8 or float in [0, 1], at least 9 frames each (I3D's temporal receptive field)."""

    MIN_FRAMES = 9

    def __init__(self, weights: str | os.PathLike, batch: int = 4):
        self.net = I3D().eval()
        load_into_module(self.net, load_weights(weights, "FVD", NEEDS), "FVD", NEEDS)
        self.batch = batch

    def _prepare(self, clip: np.ndarray) -> torch.Tensor:
        clip = np.asarray(clip)
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.shape[0] < self.MIN_FRAMES:
            raise UsageError(f"FVD: a clip must be (frames >= {self.MIN_FRAMES}, height, width, 3), not {clip.shape}")
        x = torch.from_numpy(clip.astype(np.float32) / (255.0 if clip.dtype == np.uint8 else 1.0))
        x = x.permute(0, 3, 1, 2)  # (T, 3, H, W)
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return (x.clamp(0, 1) * 2 - 1).permute(1, 0, 2, 3)  # (3, T, 224, 224)

    @torch.no_grad()
    def features(self, clips) -> np.ndarray:
        out = []
        clips = list(clips)
        for i in range(0, len(clips), self.batch):
            batch = torch.stack([self._prepare(c) for c in clips[i:i + self.batch]])
            out.append(self.net(batch).double().numpy())
        return np.concatenate(out)

    def __call__(self, reference, distorted) -> float:
        return frechet_distance(self.features(reference), self.features(distorted))
