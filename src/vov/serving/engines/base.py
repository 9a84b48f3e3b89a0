"""The engine interface, and what every engine shares.

A session is the sampler's velocity callable (`session(latents, t)`) and a context manager that
closes it. Tensors in and out are float32 torch tensors on the CPU; an engine moves them where it
computes.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from vov.errors import UsageError, VovError
from vov.serving.contract import CompactAdapter


class EngineUnavailable(VovError):
    """The process that runs the models (Triton) cannot be reached or failed; worth a retry."""


class Session(Protocol):
    def denoise(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Session": ...

    def __exit__(self, *exc) -> None: ...


class Engine(Protocol):
    def open(self, adapter, condition=None) -> Session: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> str: ...


class BaseSession:
    """A session's plumbing: callable as the sampler's velocity, closed once, a context manager."""

    closed = False

    def denoise(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.closed:
            raise UsageError("this decode session is closed")
        return self.denoise(latents, t)

    def _close(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_canary(engine, open_compact=None, decode=None) -> None:
    """One tiny decode step and latent decode through a served engine (`current_layout`,
    `open_compact`, `decode`, or the callables given in their place); EngineUnavailable if it fails
    or gives non-finite values. The adaptation is rank 1 and zero on the first slot layer."""
    layout = engine.current_layout()
    first = layout.slots[0]
    compact = CompactAdapter(1, np.zeros(1, np.int32), np.zeros(first.in_features + first.out_features, np.float32))
    embeddings = np.zeros((1, 1 if engine.takes_mask else engine.text_tokens, engine.text_dim), np.float32)
    mask = np.ones(embeddings.shape[:2], bool)
    latents = torch.zeros(1, engine.channels, 1, 4, 4)
    with (open_compact or engine.open_compact)(compact, embeddings, mask) as session:
        velocity = session.denoise(latents, torch.full((1,), 0.5))
    pixels = (decode or engine.decode)(latents)
    if not (torch.isfinite(velocity).all() and torch.isfinite(pixels).all()):
        raise EngineUnavailable("the canary inference gave non-finite values")
