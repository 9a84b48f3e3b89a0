"""Entropy model and entropy coding of the quantised adapter vector.

The integers `q = round(theta / s)` are coded independently under a learned factorised prior: a
zero-mean mixture of K discretised logistics. While fitting, the prior is a differentiable module
(`LogisticMixture`) and the rate is `-sum log2 P(q + u)` with uniform noise u. For the file its
parameters are quantised (`PriorParams`: an 8-bit weight and an 8-bit log2-scale per component, so
2K bytes travel), expanded to a table of integer frequencies over [-qmax, qmax], and the integers
are ANS-coded with `constriction`. Encoder and decoder build the table from the quantised
parameters alone, so it is identical on both sides.

When every integer is 0 (qmax = 0) there is nothing to code: the payload is empty. A decoder accepts
a payload only if it holds exactly the `count` integers: it re-encodes what it decoded and requires
the same bytes, so a short, long, empty or otherwise non-canonical payload is refused (an ANS
decoder alone happily "decodes" symbols from an exhausted stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np
import torch
from torch import nn

from vov.cancel import checkpoint as cancel_point
from vov.errors import BitstreamError

LOG2_SCALE_STEP = 1.0 / 8.0  # log2 of a component's scale is stored in these units, as int8
TABLE_BITS = 20  # frequencies are rounded to this precision before coding
MAX_COMPONENTS = 8


@dataclass(frozen=True)
class PriorParams:
    """What the file stores of the prior: weights (1..255) and log2-scale codes (int8), per component."""

    weights: tuple[int, ...]
    log2_scale_codes: tuple[int, ...]

    def __post_init__(self):
        if not 1 <= len(self.weights) <= MAX_COMPONENTS or len(self.weights) != len(self.log2_scale_codes):
            raise BitstreamError("prior: bad number of mixture components")
        if any(not 1 <= w <= 255 for w in self.weights) or any(not -128 <= c <= 127 for c in self.log2_scale_codes):
            raise BitstreamError("prior: parameter out of range")

    def table(self, qmax: int) -> np.ndarray:
        """Integer-valued frequencies (float64) of the symbols -qmax..qmax, every one at least 1."""
        w = np.asarray(self.weights, dtype=np.float64)
        w = w / w.sum()
        scales = np.exp2(np.asarray(self.log2_scale_codes, dtype=np.float64) * LOG2_SCALE_STEP)
        edges = np.arange(-qmax, qmax + 2, dtype=np.float64) - 0.5
        with np.errstate(over="ignore"):  # exp overflows to inf for extreme scales: the cdf is then exactly 0
            cdf = 1.0 / (1.0 + np.exp(-edges[:, None] / scales[None, :]))
        pmf = (np.diff(cdf, axis=0) * w[None, :]).sum(axis=1)
        pmf /= pmf.sum()
        return np.maximum(1.0, np.round(pmf * (1 << TABLE_BITS)))

    def ideal_bits(self, q: np.ndarray, qmax: int) -> float:
        table = self.table(qmax)
        p = table / table.sum()
        return float(-np.log2(p[q + qmax]).sum())


class LogisticMixture(nn.Module):
    """Differentiable zero-mean mixture of logistics over the integer grid."""

    def __init__(self, components: int = 3, init_scale: float = 2.0):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(components))
        spread = torch.linspace(-1.0, 1.0, components) if components > 1 else torch.zeros(1)
        self.log_scales = nn.Parameter(torch.log(torch.tensor(init_scale)) + spread)

    def likelihood(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.logits, 0)
        s = self.log_scales.exp()
        upper = torch.sigmoid((x[..., None] + 0.5) / s)
        lower = torch.sigmoid((x[..., None] - 0.5) / s)
        return ((upper - lower) * w).sum(-1).clamp_min(1e-9)

    def bits(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.log2(self.likelihood(x)).sum()

    @torch.no_grad()
    def quantised(self) -> PriorParams:
        w = torch.softmax(self.logits, 0).double().numpy()
        weights = tuple(int(v) for v in np.clip(np.round(w * 255), 1, 255))
        codes = np.round(self.log_scales.double().numpy() / np.log(2) / LOG2_SCALE_STEP)
        return PriorParams(weights, tuple(int(c) for c in np.clip(codes, -128, 127)))


def fit_prior(q: np.ndarray, components: int = 3, steps: int = 200) -> PriorParams:
    """The quantised mixture that codes the integers `q` best (maximum likelihood, then quantised)."""
    model = LogisticMixture(components, init_scale=max(0.5, float(np.abs(q).mean()) if len(q) else 1.0))
    x = torch.from_numpy(np.asarray(q, dtype=np.float32))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    with torch.enable_grad():  # callers may be inside no_grad
        for step in range(steps):
            if step % 16 == 0:
                cancel_point()
            optimiser.zero_grad()
            (model.bits(x) / max(len(x), 1)).backward()
            optimiser.step()
    return model.quantised()


def empirical_bits(q: np.ndarray) -> float:
    """Bits of `q` under its own histogram: what no fixed prior can beat, a fast stand-in for search."""
    _, counts = np.unique(q, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def encode(q: np.ndarray, prior: PriorParams, qmax: int) -> bytes:
    """ANS-code integers in [-qmax, qmax]; returns the coder's words as little-endian bytes."""
    if len(q) and int(np.abs(q).max()) > qmax:
        raise ValueError("symbol outside the coded range")
    if qmax == 0:
        return b""
    model = constriction.stream.model.Categorical(prior.table(qmax), perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse((q + qmax).astype(np.int32), model)
    return coder.get_compressed().astype("<u4").tobytes()


def decode(payload: bytes, prior: PriorParams, qmax: int, count: int) -> np.ndarray:
    """The `count` integers that `payload` codes, or BitstreamError if it codes anything else."""
    if qmax == 0:
        if payload:
            raise BitstreamError("entropy-coded payload: qmax = 0 codes nothing, yet the payload is not empty")
        return np.zeros(count, dtype=np.int64)
    if len(payload) % 4:
        raise BitstreamError("entropy-coded payload is not a whole number of 32-bit words")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    model = constriction.stream.model.Categorical(prior.table(qmax), perfect=False)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        symbols = coder.decode(model, count)
        exact = coder.is_empty()
    except Exception as e:  # constriction raises plain exceptions on invalid data
        raise BitstreamError(f"entropy-coded payload is corrupt ({e})") from None
    q = symbols.astype(np.int64) - qmax
    if not exact or encode(q, prior, qmax) != bytes(payload):
        raise BitstreamError(f"entropy-coded payload does not hold exactly the {count} coded integers "
                             "(truncated, padded or corrupt)")
    return q
