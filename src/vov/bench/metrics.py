"""Image quality metrics for the benchmark.

Conventions, the same for every metric here:

- Inputs are RGB arrays (height, width, 3), either uint8 or float in [0, 1]. Floats are rounded to
  8 bits first (`as_uint8`), so a decoded image is measured as the 8-bit picture a viewer sees.
- Every metric is computed per image; the benchmark then averages over images (for PSNR too: the
  mean of per-image PSNRs, not the PSNR of the mean error).
- `psnr`: over all three RGB channels, peak 255; identical images give `PSNR_CAP` (100 dB).
- `ms_ssim`: pytorch-msssim on RGB in [0, 1], window 11, the five standard scale weights. An image
  whose short side is too small for five scales (it needs > 160 pixels) is measured with as many
  scales as fit, their weights renormalised to sum to one; `ms_ssim_scales` says how many.
- `gmsd`: gradient magnitude similarity deviation (Xue et al. 2014) on BT.601 luma; 0 is identical,
  larger is worse. It needs no pretrained weights.
- `LPIPS` and `DISTS`: the standard networks, written here in plain torch (no torchvision), with
  weights read from local files that the user provides (`load_weights`); they cannot be downloaded
  here. Lower is better for both; 0 is identical.

The video metric FVD (I3D features, weights from a local file) lives in `vov.bench.fvd`.
"""

from __future__ import annotations

import math
import os
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vov.errors import UsageError

PSNR_CAP = 100.0
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WINDOW = 11


def as_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return (np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_uint8(a), as_uint8(b)
    if a.shape != b.shape:
        raise UsageError(f"images differ in size: {a.shape} and {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise UsageError(f"expected an RGB image (height, width, 3), got shape {a.shape}")
    return a, b


def _tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div(255.0)[None]


def psnr(reference: np.ndarray, distorted: np.ndarray) -> float:
    """PSNR in dB over the RGB channels of one image (peak 255)."""
    a, b = _pair(reference, distorted)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(255.0**2 / mse))


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales an image of this size supports (at most 5, at least 1)."""
    side = min(height, width)
    scales = 5
    while scales > 1 and side <= (MS_SSIM_WINDOW - 1) * 2 ** (scales - 1):
        scales -= 1
    return scales


def ms_ssim(reference: np.ndarray, distorted: np.ndarray) -> float:
    """MS-SSIM of one RGB image pair, in [0, 1] (1 is identical)."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b = _pair(reference, distorted)
    h, w = a.shape[:2]
    if min(h, w) < MS_SSIM_WINDOW:
        raise UsageError(f"MS-SSIM needs images of at least {MS_SSIM_WINDOW} pixels a side, not {w}x{h}")
    x, y = _tensor(a), _tensor(b)
    scales = ms_ssim_scales(h, w)
    with torch.no_grad():
        if scales == len(MS_SSIM_WEIGHTS):
            return float(_ms_ssim(x, y, data_range=1.0, win_size=MS_SSIM_WINDOW))
        return _ms_ssim_reduced(x, y, scales)


def _ms_ssim_reduced(x: torch.Tensor, y: torch.Tensor, scales: int) -> float:
    """MS-SSIM over fewer scales (pytorch-msssim insists on five), the same per-scale terms."""
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float32)
    weights = weights / weights.sum()
    win = _fspecial_gauss_1d(MS_SSIM_WINDOW, 1.5).repeat(3, 1, 1, 1)
    terms = []
    for i in range(scales):
        ssim_c, cs = _ssim(x, y, data_range=1.0, win=win, size_average=False, K=(0.01, 0.03))
        if i < scales - 1:
            terms.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms.append(torch.relu(ssim_c))
    value = torch.prod(torch.stack(terms) ** weights.view(-1, 1, 1), dim=0)
    return float(value.mean())


_PREWITT = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3.0
GMSD_C = 170.0  # stability constant of the paper, for luma in [0, 255]


def _luma(img: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(img.astype(np.float64))
    return (0.299 * t[..., 0] + 0.587 * t[..., 1] + 0.114 * t[..., 2])[None, None]


def gmsd(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Gradient magnitude similarity deviation: 0 for identical images, larger is worse."""
    a, b = _pair(reference, distorted)
    ya, yb = _luma(a), _luma(b)
    if min(a.shape[:2]) >= 4:  # the paper's 2x2 average and subsampling before the gradients
        ya, yb = F.avg_pool2d(ya, 2), F.avg_pool2d(yb, 2)
    kx = _PREWITT.to(torch.float64)[None, None]
    ky = kx.transpose(2, 3)

    def magnitude(y: torch.Tensor) -> torch.Tensor:
        y = F.pad(y, (1, 1, 1, 1), mode="replicate")
        return torch.sqrt(F.conv2d(y, kx) ** 2 + F.conv2d(y, ky) ** 2)

    ma, mb = magnitude(ya), magnitude(yb)
    gms = (2.0 * ma * mb + GMSD_C) / (ma**2 + mb**2 + GMSD_C)
    return float(gms.std(unbiased=False))


# ---------------------------------------------------------------------------------------------
# Weights from local files


def load_weights(paths: str | os.PathLike | Iterable[str | os.PathLike], metric: str, needs: str) -> dict:
    """Merge the state dicts in one or more files (comma-separated in a string).

    Accepted formats: `.safetensors`, or a torch pickle of a state dict (`.pth`, `.pt`), loaded
    with `weights_only=True`. A missing file ends with a message naming what to provide.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [p for p in os.fspath(paths).split(",") if p]
    merged: dict[str, torch.Tensor] = {}
    for path in paths:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UsageError(f"{metric}: weights file {path} not found; provide {needs}")
        try:
            if path.endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged or foreign file: say which, never a traceback
            raise UsageError(f"{metric}: cannot read weights from {path} ({e.__class__.__name__}: {e})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise UsageError(f"{metric}: {path} does not hold a state dict")
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                merged[key.removeprefix("module.")] = value
    return merged


def _features_key(key: str, groups: tuple[str, ...]) -> str:
    """`net.slice2.3.weight` or `stage2.3.weight` -> `features.3.weight`: every saved layout of the
    trunk keeps torchvision's layer index, so the index alone places a tensor."""
    parts = key.split(".")
    for i, part in enumerate(parts):
        if any(part.startswith(g) and part[len(g):].isdigit() for g in groups) and i + 1 < len(parts):
            return ".".join(["features", *parts[i + 1:]])
    return key


# (kind, out channels) in torchvision's layer order; "M" is a 2x2 max pool (3x3/2 for AlexNet)
VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
ALEX_CONVS = [(0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1),
              (10, 256, 256, 3, 1, 1)]  # (index, in, out, kernel, stride, padding)


class VGG16Trunk(nn.Module):
    """The convolutional part of VGG-16, with torchvision's parameter names (`features.N.*`).

    `forward` returns the activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3.
    `pool` replaces the max pools (DISTS uses an L2 pool there).
    """

    TAPS = (3, 8, 15, 22, 29)
    CHANNELS = (64, 128, 256, 512, 512)

    def __init__(self, pool: type[nn.Module] | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(pool(channels) if pool else nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                taps.append(x)
        return taps


class AlexTrunk(nn.Module):
    """AlexNet's convolutions with torchvision's names; returns the five ReLU outputs."""

    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self):
        super().__init__()
        layers: dict[int, nn.Module] = {}
        for index, cin, cout, k, s, p in ALEX_CONVS:
            layers[index] = nn.Conv2d(cin, cout, k, stride=s, padding=p)
            layers[index + 1] = nn.ReLU()
        layers[2] = nn.MaxPool2d(3, 2)
        layers[5] = nn.MaxPool2d(3, 2)
        self.features = nn.Sequential(*(layers[i] for i in range(12)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in (1, 4, 7, 9, 11):
                taps.append(x)
        return taps


def load_into_module(module: nn.Module, state: dict, metric: str, needs: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise UsageError(f"{metric}: the weights lack {len(missing)} tensors (first: {missing[0]}); provide {needs}")
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise UsageError(f"{metric}: tensor {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}")
    module.load_state_dict({k: state[k].float() for k in own}, strict=True)


def _as_batch(img: np.ndarray) -> torch.Tensor:
    return _tensor(as_uint8(img))


LPIPS_NEEDS = {
    "alex": "the AlexNet trunk and LPIPS linear layers: the state dict of lpips.LPIPS(net='alex') saved with "
            "torch.save, or torchvision's alexnet-owt-7be5be79.pth and LPIPS' weights/v0.1/alex.pth, comma-separated",
    "vgg": "the VGG-16 trunk and LPIPS linear layers: the state dict of lpips.LPIPS(net='vgg') saved with "
           "torch.save, or torchvision's vgg16-397923af.pth and LPIPS' weights/v0.1/vgg.pth, comma-separated",
}


class LPIPS(nn.Module):
    """Learned perceptual image patch similarity (Zhang et al. 2018), version 0.1.

    Inputs are scaled to [-1, 1] and shifted/scaled per channel; each tapped activation is
    normalised to unit length over channels, the squared difference is weighted per channel by a
    1x1 linear layer (`linK.model.1.weight`), averaged over space and summed over the taps.
    """

    SHIFT = (-0.030, -0.088, -0.188)
    SCALE = (0.458, 0.448, 0.450)

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in LPIPS_NEEDS:
            raise UsageError(f"LPIPS: unknown network {net!r}; known: alex, vgg")
        self.net_name = net
        self.net = AlexTrunk() if net == "alex" else VGG16Trunk()
        channels = self.net.CHANNELS
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor(self.SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(self.SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @classmethod
    def from_file(cls, paths, net: str = "alex") -> "LPIPS":
        model = cls(net)
        needs = LPIPS_NEEDS[net]
        state = load_weights(paths, "LPIPS", needs)
        mapped = {}
        for key, value in state.items():
            if key.startswith("lin") and ".model." in key:  # linK.model.1.weight
                mapped[f"lins.{key[3:key.index('.')]}.weight"] = value
            elif key.startswith(("net.", "features.")):
                mapped["net." + _features_key(key, ("slice",))] = value
        load_into_module(model, {k: v for k, v in mapped.items() if k.startswith(("net.", "lins."))}, "LPIPS", needs)
        return model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.net((2 * x - 1 - self.shift) / self.scale)
        fy = self.net((2 * y - 1 - self.shift) / self.scale)
        total = torch.zeros(x.shape[0], device=x.device)
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total

    def score(self, reference: np.ndarray, distorted: np.ndarray) -> float:
        a, b = _pair(reference, distorted)
        with torch.no_grad():
            return float(self(_as_batch(a), _as_batch(b))[0])


class L2Pool(nn.Module):
    """DISTS' replacement for max pooling: sqrt of a Hann-weighted (3x3, stride 2) mean of x^2."""

    def __init__(self, channels: int):
        super().__init__()
        window = torch.tensor([0.5, 1.0, 0.5])
        kernel = window[:, None] * window[None, :]
        kernel = kernel / kernel.sum()
        self.channels = channels
        self.register_buffer("filter", kernel.expand(channels, 1, 3, 3).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x**2, self.filter, stride=2, padding=1, groups=self.channels)
        return (out + 1e-12).sqrt()


DISTS_NEEDS = ("the VGG-16 trunk and DISTS' alpha/beta: torchvision's vgg16-397923af.pth and DISTS' weights.pt, "
               "comma-separated (or one file holding `features.N.*`, `alpha` and `beta`)")


class DISTS(nn.Module):
    """Deep image structure and texture similarity (Ding et al. 2020).

    Stages: the normalised input and VGG-16's relu1_2 ... relu5_3 with L2 pooling. At each stage
    and channel, a texture term compares the spatial means and a structure term the (co)variances;
    learned non-negative weights alpha (texture) and beta (structure), normalised to sum to one
    over both, combine them; DISTS = 1 - the weighted sum.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    C1 = 1e-6
    C2 = 1e-6

    def __init__(self):
        super().__init__()
        self.net = VGG16Trunk(pool=L2Pool)
        self.chns = (3, *VGG16Trunk.CHANNELS)
        total = sum(self.chns)
        self.alpha = nn.Parameter(torch.full((1, total, 1, 1), 0.5 / total))
        self.beta = nn.Parameter(torch.full((1, total, 1, 1), 0.5 / total))
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @classmethod
    def from_file(cls, paths) -> "DISTS":
        model = cls()
        state = load_weights(paths, "DISTS", DISTS_NEEDS)
        mapped = {}
        for key, value in state.items():
            if key in ("alpha", "beta"):
                mapped[key] = value
            elif key.startswith(("features.", "stage")) and key.endswith((".weight", ".bias")):
                mapped["net." + _features_key(key, ("stage",))] = value
        load_into_module(model, mapped, "DISTS", DISTS_NEEDS)
        return model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        y = (y - self.mean) / self.std
        fx, fy = [x, *self.net(x)], [y, *self.net(y)]
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total, list(self.chns), dim=1)
        betas = torch.split(self.beta / total, list(self.chns), dim=1)
        texture = torch.zeros(x.shape[0], device=x.device)
        structure = torch.zeros(x.shape[0], device=x.device)
        for a, b, alpha, beta in zip(fx, fy, alphas, betas):
            ma, mb = a.mean((2, 3), keepdim=True), b.mean((2, 3), keepdim=True)
            s1 = (2 * ma * mb + self.C1) / (ma**2 + mb**2 + self.C1)
            va, vb = ((a - ma) ** 2).mean((2, 3), keepdim=True), ((b - mb) ** 2).mean((2, 3), keepdim=True)
            cov = (a * b).mean((2, 3), keepdim=True) - ma * mb
            s2 = (2 * cov + self.C2) / (va + vb + self.C2)
            texture = texture + (alpha * s1).sum((1, 2, 3))
            structure = structure + (beta * s2).sum((1, 2, 3))
        return 1.0 - (texture + structure)

    def score(self, reference: np.ndarray, distorted: np.ndarray) -> float:
        a, b = _pair(reference, distorted)
        with torch.no_grad():
            return float(self(_as_batch(a), _as_batch(b))[0])


# ---------------------------------------------------------------------------------------------

# name -> (higher is better, unit or "", label)
METRICS = {
    "psnr-rgb": (True, "dB", "PSNR (RGB)"),
    "ms-ssim": (True, "", "MS-SSIM"),
    "gmsd": (False, "", "GMSD"),
    "lpips": (False, "", "LPIPS"),
    "dists": (False, "", "DISTS"),
}


class MetricSuite:
    """The metrics a benchmark computes, with the optional networks loaded once."""

    def __init__(self, lpips_weights: str | None = None, dists_weights: str | None = None, lpips_net: str = "alex"):
        self.lpips = LPIPS.from_file(lpips_weights, lpips_net) if lpips_weights else None
        self.dists = DISTS.from_file(dists_weights) if dists_weights else None

    @property
    def names(self) -> list[str]:
        names = ["psnr-rgb", "ms-ssim", "gmsd"]
        if self.lpips is not None:
            names.append("lpips")
        if self.dists is not None:
            names.append("dists")
        return names

    def compute(self, reference: np.ndarray, distorted: np.ndarray, only: Iterable[str] | None = None) -> dict[str, float]:
        wanted = list(only) if only is not None else self.names
        out: dict[str, float] = {}
        for name in wanted:
            if name == "psnr-rgb":
                out[name] = psnr(reference, distorted)
            elif name == "ms-ssim":
                out[name] = ms_ssim(reference, distorted)
            elif name == "gmsd":
                out[name] = gmsd(reference, distorted)
            elif name == "lpips" and self.lpips is not None:
                out[name] = self.lpips.score(reference, distorted)
            elif name == "dists" and self.dists is not None:
                out[name] = self.dists.score(reference, distorted)
        return out
