"""Finding a diffusers-layout model (a local folder or a Hugging Face hub id) and loading its parts.

A person names the model; vov reads only what it needs from it:
- weights in safetensors only: a component whose folder holds only pickle files (`.bin`, `.pt`,
  `.ckpt`, ...) is refused, since unpickling runs code; no remote code is ever trusted;
- a hub id is resolved through the local hub cache first and downloaded only when the hub is
  reachable and `HF_HUB_OFFLINE` is unset; what cannot be found is one `UsageError` that names it;
- the identity of the weights is the hash of their files (`weights_identity`), never of tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Sequence

from vov.backbones.identity import file_digest
from vov.errors import UsageError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model",
                   "vocab.json", "merges.txt", "added_tokens.json")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """Whether the hub must not be contacted (HF_HUB_OFFLINE, read when asked, not at import)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _patterns(components: Sequence[str]) -> list[str]:
    patterns = ["model_index.json"]
    for c in components:
        if c == "tokenizer":
            patterns += [f"{c}/{name}" for name in TOKENIZER_FILES]
        else:
            patterns += [f"{c}/*.json", f"{c}/*.safetensors"]
    return patterns


def model_folder(model: str, components: Sequence[str], backbone: str) -> Path:
    """The local folder of `model` in diffusers layout, with every one of `components` usable.

    `model` is a folder, or a hub id such as "Wan-AI/Wan2.1-T2V-1.3B-Diffusers".
    """
    if not model:
        raise UsageError(f"backbone {backbone!r} needs a model: a folder in diffusers layout or a hub id")
    path = Path(model).expanduser()
    if path.is_dir():
        folder = path
    elif path.exists():
        raise UsageError(f"model {model}: not a folder (a diffusers-layout folder or a hub id is needed)")
    elif not HUB_ID.fullmatch(model) or model.startswith((".", "/", "~")):
        raise UsageError(f"model {model[:200]!r}: no such folder, and not a hub id (OWNER/NAME)")
    else:
        folder = _from_hub(model, components, backbone)
    check_folder(folder, components, model)
    return folder


def _from_hub(model: str, components: Sequence[str], backbone: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError:  # pragma: no cover - diffusers depends on it
        raise UsageError("the huggingface_hub package is needed to load a model by hub id; pass a folder") from None
    needed = ", ".join(components)
    where = hub_cache_dir() or "the default Hugging Face cache (~/.cache/huggingface/hub)"
    try:
        return Path(snapshot_download(model, allow_patterns=_patterns(components), local_files_only=offline(),
                                      cache_dir=hub_cache_dir()))
    except LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE is set" if offline() else "the hub could not be reached"
        raise UsageError(f"model {model}: not in {where} and {how}; backbone {backbone!r} needs its {needed} "
                         f"(download them where the hub is reachable, e.g. `hf download {model}`, or pass "
                         f"--model FOLDER)") from None
    except GatedRepoError:
        raise UsageError(f"model {model}: gated on the hub; accept its licence there and log in "
                         f"(`hf auth login`), or pass --model FOLDER") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise UsageError(f"model {model}: no such repository on the hub") from None
    except (HfHubHTTPError, OSError) as e:
        raise UsageError(f"model {model}: download failed ({str(e).splitlines()[0][:200]})") from None


def check_folder(folder: Path, components: Sequence[str], model: str) -> None:
    """Every component present, with a config and safetensors weights; pickle-only weights refused."""
    missing = []
    for c in components:
        sub = folder / c
        if not sub.is_dir():
            missing.append(f"{c}/")
            continue
        if c == "tokenizer":
            if not any((sub / name).is_file() for name in ("tokenizer.json", "spiece.model", "vocab.json")):
                missing.append(f"{c}/tokenizer.json")
            continue
        if c == "scheduler":
            if not (sub / "scheduler_config.json").is_file():
                missing.append(f"{c}/scheduler_config.json")
            continue
        if not (sub / "config.json").is_file():
            missing.append(f"{c}/config.json")
            continue
        weights = weight_files(sub)
        if not weights:
            pickled = sorted(p.name for p in sub.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickled:
                raise UsageError(f"model {model}: {c}/ holds only pickle weights ({', '.join(pickled)[:120]}), which "
                                 f"vov does not load (unpickling runs code); convert them to safetensors")
            missing.append(f"{c}/*.safetensors")
    if missing:
        raise UsageError(f"model {model}: missing {', '.join(missing)}")


def weight_files(component: Path) -> list[Path]:
    """The safetensors files of one component (all shards an index names, checked present)."""
    indexes = sorted(component.glob("*.safetensors.index.json"))
    if indexes:
        files: set[Path] = set()
        for index in indexes:
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise UsageError(f"{index}: not a readable safetensors index") from None
            for shard in shards:
                if not isinstance(shard, str) or "/" in shard or "\\" in shard or not shard.endswith(".safetensors"):
                    raise UsageError(f"{index}: names a shard outside its folder or not in safetensors")
                path = component / shard
                if not path.is_file():
                    raise UsageError(f"{index}: shard {shard} is missing")
                files.add(path)
        return sorted(files)
    return sorted(p for p in component.glob("*.safetensors") if p.is_file())


def _canonical_json(path: Path) -> str:
    """sha256 of a JSON file with its bookkeeping keys ("_diffusers_version", "_name_or_path", ...) left
    out, so re-saving the same model with another library version keeps its identity."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return file_digest(path)

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not str(k).startswith("_") and k != "transformers_version"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return hashlib.sha256(json.dumps(strip(data), sort_keys=True).encode()).hexdigest()


def identity_entries(folder: Path, components: Sequence[str]) -> list[tuple[str, str]]:
    """(name in the model, sha256) of every file that decides what the components compute.

    Weights are hashed as bytes (streamed, cached by path, size and mtime); configs as canonical
    JSON; tokenizer files as bytes, except their JSON configs. The scheduler is left out: the
    sampler's schedule is recorded in each file on its own.
    """
    entries = []
    for c in components:
        sub = folder / c
        if c == "scheduler":
            continue
        if c == "tokenizer":
            for name in TOKENIZER_FILES:
                p = sub / name
                if p.is_file():
                    digest = _canonical_json(p) if name.endswith("config.json") or name == "special_tokens_map.json" \
                        else file_digest(p)
                    entries.append((f"{c}/{name}", digest))
            continue
        entries.append((f"{c}/config.json", _canonical_json(sub / "config.json")))
        for p in weight_files(sub):
            entries.append((f"{c}/{p.name}", file_digest(p)))
    return entries


def _quiet_loaders() -> None:
    """No progress bars from the loaders: vov's commands draw their own, and logs stay lines."""
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()


def load_component(load, component: str, model: str):
    """Run a `from_pretrained` call, turning what a person can fix into one UsageError."""
    _quiet_loaders()
    try:
        return load()
    except MemoryError:
        raise UsageError(f"model {model}: not enough memory to load its {component}") from None
    except UsageError:
        raise
    except Exception as e:  # a corrupt or mismatched file surfaces in many exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        if "out of memory" in first.lower():
            raise UsageError(f"model {model}: not enough GPU memory to load its {component} ({first})") from None
        raise UsageError(f"model {model}: cannot load its {component}: {type(e).__name__}: {first}") from None
