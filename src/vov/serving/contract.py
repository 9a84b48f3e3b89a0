"""What an exported engine and every decoder path agree on: the models' names, the engine file,
the packed-LoRA layout of the adaptation, and how a caption crosses to a graph.

The adaptation is the input `lora` of the exported denoiser, so one engine serves every file made for
its backbone. A file's adapter is expanded into the LoRA factors of its layers (`LoraLayout.compact`:
each adapted layer's A (r x in) and B (out x r) at the file's own rank), and those are zero-padded
into one flat row (`LoraLayout.unpack`) with a place for every slot layer at the engine's maximum
rank R_max. The graph slices the row per layer and computes `W x + B (A x)`
(vov.method.lora.RowLoraLinear); zero padding is exact.

Slots are the layers that any of the backbone's target presets names, in module order. A file whose
targets fall outside the slots, or whose rank exceeds R_max, cannot use the engine
(`LoraLayout.compact` says so).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vov.errors import BackboneMismatch, UsageError

ENGINE_FILE = "vov_engine.json"  # in the repository: backbone identity, signature, slot layout, graphs, axes
LAYOUT_FILE = "layout.json"  # the slot layout, beside the session model (which imports nothing of vov)
DEFAULT_MAX_RANK = 8
SESSION_MODEL = "denoiser_session"  # what a decoder talks to: one sequence per decode (docs/services.md)
DENOISER_MODEL = "denoiser"
DECODER_MODEL = "vae_decoder"
ANY_FRAMES = "any"  # a graph whose frames axis is symbolic
DECODER_FIRST_MODEL = "vae_decoder_first"  # a chunked latent decoder's graph of a clip's first latent frame
DECODER_NEXT_MODEL = "vae_decoder_next"  # and of every later one, the cache of the frames before as inputs


# --------------------------------------------------------------------------------------------
# the packed-LoRA layout


@dataclass(frozen=True)
class Slot:
    name: str
    in_features: int
    out_features: int
    offset: int  # start of this layer's A (R_max x in, row-major), then its B (out x R_max)

    def size(self, max_rank: int) -> int:
        return max_rank * (self.in_features + self.out_features)


@dataclass(frozen=True)
class CompactAdapter:
    """One adaptation as it crosses to an engine once per decode: the factors of its own layers at its
    own rank. `factors` holds, for each slot in `slots` (increasing), A (rank x in) then B (out x rank),
    each row-major."""

    rank: int
    slots: np.ndarray  # int32 (K,)
    factors: np.ndarray  # float32 (N,)

    @property
    def nbytes(self) -> int:
        return int(self.slots.nbytes + self.factors.nbytes + 4)


@dataclass(frozen=True)
class LoraLayout:
    max_rank: int
    slots: tuple[Slot, ...]

    @property
    def total(self) -> int:
        return sum(s.size(self.max_rank) for s in self.slots)

    @classmethod
    def for_backbone(cls, backbone, max_rank: int = DEFAULT_MAX_RANK) -> "LoraLayout":
        layers = backbone.adaptable_layers()
        union = {n for preset in backbone.target_presets for n in backbone.target_layers(preset)}
        slots, offset = [], 0
        for name, m in ((n, m) for n, m in layers.items() if n in union):
            slots.append(Slot(name, m.in_features, m.out_features, offset))
            offset += max_rank * (m.in_features + m.out_features)
        return cls(max_rank, tuple(slots))

    def to_json(self) -> dict:
        return {"max_rank": self.max_rank, "slots": [asdict(s) for s in self.slots]}

    @classmethod
    def from_json(cls, data: dict) -> "LoraLayout":
        return cls(int(data["max_rank"]), tuple(Slot(**s) for s in data["slots"]))

    def digest(self) -> str:
        """16 hex digits naming the layout: an engine and a decoder must agree on it exactly."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def _slot_index(self) -> dict[str, int]:
        index = self.__dict__.get("_index")
        if index is None:
            index = {s.name: i for i, s in enumerate(self.slots)}
            object.__setattr__(self, "_index", index)
        return index

    def compact(self, adapter) -> CompactAdapter:
        """The adapter's factors, expanded from its theta once, in slot order."""
        import torch

        index = self._slot_index()
        with torch.no_grad():
            expanded = adapter.expand()
        names = [name for name, _ in adapter.layers()]
        ranks = {int(a.shape[0]) for a, _ in expanded}
        if len(ranks) != 1:
            raise UsageError("an adapter whose layers have different ranks cannot be served")
        rank = ranks.pop()
        if rank > self.max_rank:
            raise BackboneMismatch(f"the file's rank {rank} exceeds the served engine's maximum rank "
                                   f"{self.max_rank}; re-export with --max-rank {rank} or more")
        order = []
        for name, (a, b) in zip(names, expanded):
            if name not in index:
                raise BackboneMismatch(f"the served engine has no LoRA slot for layer {name!r}; "
                                       f"it serves the backbone's target presets only")
            order.append((index[name], a, b))
        order.sort(key=lambda item: item[0])
        parts = []
        for _, a, b in order:
            parts += [a.detach().float().reshape(-1), b.detach().float().reshape(-1)]
        factors = torch.cat(parts).cpu().numpy().astype(np.float32, copy=False)
        slots = np.array([i for i, _, _ in order], dtype=np.int32)
        return CompactAdapter(rank, slots, np.ascontiguousarray(factors))

    def unpack(self, compact: CompactAdapter) -> np.ndarray:
        """The padded row (total,) float32 of a compact adaptation (the session model does the same)."""
        r, slots, factors = compact.rank, compact.slots, compact.factors
        if not 1 <= r <= self.max_rank:
            raise BackboneMismatch(f"rank {r} is outside the served engine's 1..{self.max_rank}")
        numbers = slots.tolist()
        if not numbers or len(set(numbers)) != len(numbers) or min(numbers) < 0 or max(numbers) >= len(self.slots):
            raise UsageError(f"an adaptation names its layers by distinct slot numbers below {len(self.slots)}")
        expected = sum(r * (self.slots[i].in_features + self.slots[i].out_features) for i in slots.tolist())
        if factors.size != expected:
            raise UsageError(f"an adaptation of {factors.size} numbers does not match its {len(slots)} layers "
                             f"at rank {r}")
        row = np.zeros(self.total, dtype=np.float32)
        pos = 0
        for i in slots.tolist():
            s = self.slots[i]
            na, nb = r * s.in_features, s.out_features * r
            a = factors[pos: pos + na].reshape(r, s.in_features)
            b = factors[pos + na: pos + na + nb].reshape(s.out_features, r)
            pos += na + nb
            start = s.offset + self.max_rank * s.in_features
            row[s.offset: start].reshape(self.max_rank, s.in_features)[:r] = a
            row[start: s.offset + s.size(self.max_rank)].reshape(s.out_features, self.max_rank)[:, :r] = b
        return row

    def pack_adapter(self, adapter) -> np.ndarray:
        return self.unpack(self.compact(adapter))


# --------------------------------------------------------------------------------------------
# the engine file and the models it names


def read_engine(repository: str | Path) -> dict | None:
    path = Path(repository) / ENGINE_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def decoder_for(decoders: dict[str, str], frames: int) -> str:
    """The latent decoder model that takes `frames` latent frames, or BackboneMismatch."""
    if ANY_FRAMES in decoders:
        return decoders[ANY_FRAMES]
    if str(frames) in decoders:
        return decoders[str(frames)]
    served = ", ".join(sorted(decoders, key=lambda k: int(k)))
    raise BackboneMismatch(f"the served engine has no latent decoder for {frames} latent frames (it has {served})")


def cache_inputs(count: int) -> list[str]:
    """The cache inputs of a chunked latent decoder's graph of a later frame, in order."""
    return [f"cache_{i}" for i in range(count)]


def cache_outputs(count: int) -> list[str]:
    """The cache outputs of a chunked latent decoder's graphs: the next frame's `cache_inputs`."""
    return [f"cache_{i}_next" for i in range(count)]


def check_backbone(info: dict, backbone) -> None:
    """The engine must have been exported from exactly this backbone's weights."""
    if info.get("backbone") != backbone.name or info.get("content_hash") != backbone.content_hash.hex():
        raise BackboneMismatch(
            f"the served engine was exported from backbone {info.get('backbone')!r} ({info.get('content_hash')}), "
            f"this decoder has {backbone.name!r} ({backbone.content_hash.hex()})"
        )


# --------------------------------------------------------------------------------------------
# the caption as a graph takes it


def pad_condition(embeddings: np.ndarray, mask: np.ndarray, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (1, L, D) and mask (1, L) padded to `tokens` with masked-out zeros (the same output
    where the graph takes a mask: no token attends to them)."""
    extra = tokens - embeddings.shape[1]
    if extra <= 0:
        return embeddings, mask
    return (np.concatenate([embeddings, np.zeros((1, extra, embeddings.shape[2]), np.float32)], 1),
            np.concatenate([mask, np.zeros((1, extra), bool)], 1))


def condition_arrays(condition, text_tokens: int, takes_mask: bool, pad: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A Condition as an exported graph takes it: embeddings (1, text_tokens, D) float32 and a mask
    (1, text_tokens) bool; where the graph takes a mask a shorter caption is padded (`pad`)."""
    embeddings = condition.embeddings.detach().float().cpu().numpy()
    mask = condition.mask.detach().cpu().numpy().astype(bool)
    if embeddings.ndim != 3 or embeddings.shape[0] != 1 or mask.shape != embeddings.shape[:2]:
        raise UsageError(f"a condition is (1, tokens, width) embeddings and a (1, tokens) mask, not "
                         f"{tuple(embeddings.shape)} and {tuple(mask.shape)}")
    tokens = embeddings.shape[1]
    if tokens > text_tokens or (not takes_mask and tokens != text_tokens):
        raise UsageError(f"the caption's {tokens} tokens do not fit the engine's {text_tokens}")
    if pad:
        embeddings, mask = pad_condition(embeddings, mask, text_tokens)
    return np.ascontiguousarray(embeddings), np.ascontiguousarray(mask)
