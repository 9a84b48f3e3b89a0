"""A model's identity by content: file digests (cached on disk by path, size and time), weight-file
identities and the hash of a module's tensors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Iterable

from torch import nn

_digests: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()
CHUNK = 8 << 20


def _digest_cache_path() -> Path:
    base = os.environ.get("VOV_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vov")
    return Path(base) / "file-digests.json"


def _read_digest_cache() -> dict:
    try:
        data = json.loads(_digest_cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_digest_cache(entries: dict) -> None:
    path = _digest_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # the cache only saves time


def file_digest(path: str | os.PathLike, use_disk_cache: bool = True) -> str:
    """sha256 (hex) of a file's bytes, read in 8 MiB chunks.

    Cached by (real path, size, mtime) in memory and in `~/.cache/vov/file-digests.json`, so the
    tens of GB of a large model are read once per change of its files, not once per process.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    disk_key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    with _digest_lock:
        if key in _digests:
            return _digests[key]
        if use_disk_cache:
            cached = _read_digest_cache().get(disk_key)
            if isinstance(cached, str) and re.fullmatch(r"[0-9a-f]{64}", cached):
                _digests[key] = cached
                return cached
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _digest_lock:
        _digests[key] = value
        if use_disk_cache:
            entries = _read_digest_cache()
            entries[disk_key] = value
            _write_digest_cache(entries)
    return value


def weights_identity(entries: Iterable[tuple[str, str]]) -> bytes:
    """32 bytes naming a model by content: sha256 over its (name, sha256 hex) entries sorted by name.

    A name is the file's place in the model (e.g. "transformer/diffusion_pytorch_model.safetensors"),
    so the same bytes in another folder give the same identity and a file moved between components
    does not. `vov.backbones.hub.identity_entries` lists a diffusers folder's entries.
    """
    digest = hashlib.sha256(b"vov-weights-1\0")
    for name, value in sorted(entries, key=lambda item: item[0]):
        digest.update(name.encode("utf-8") + b"\0" + value.encode("ascii") + b"\n")
    return digest.digest()


def hash_state(module: nn.Module) -> bytes:
    """Content hash of a module's tensors, independent of how they were stored on disk.

    The embedded backbone's identity (its files record it); backbones loaded from weight files
    use `weights_identity` instead, which reads the files and never converts a weight.
    """
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().contiguous().numpy().tobytes())
    return digest.digest()[:8]
