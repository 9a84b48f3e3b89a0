"""Fetches a model folder in the diffusers layout from the Hugging Face hub, once, onto a volume.

  python fetch-weights.py --repo Wan-AI/Wan2.1-T2V-1.3B-Diffusers --revision main --dest /weights/DIR

Run by the chart's download Job in the decoder image (huggingface_hub is there). Only configs,
tokenizer files and safetensors weights are fetched (never pickle files). The files go to a
directory beside DEST first and are renamed to DEST when every one is there, so a folder at DEST
is always complete: the services' init containers wait for DEST/model_index.json, and a second run
(a retried or repeated Job) ends at once. A token for gated models comes from HF_TOKEN. An
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

PATTERNS = ["model_index.json", "*/*.json", "*/*.safetensors", "tokenizer/*.model", "tokenizer/*.txt",
            "text_encoder/*.model", "tokenizer/*.tiktoken"]
PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def snapshot(repo: str, revision: str, folder: Path, token: str | None) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(repo, revision=revision, local_dir=str(folder), allow_patterns=PATTERNS, token=token)


def complete(folder: Path) -> str | None:
    """Why `folder` is not a usable diffusers folder, or None when it is."""
    if not (folder / "model_index.json").is_file():
        return "no model_index.json"
    for component in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [f.name for f in component.iterdir()]
        if any(f.endswith(".json") for f in files) and not any(f.endswith(".safetensors") for f in files) \
                and (component / "config.json").is_file():
            return f"{component.name}/ has a config but no safetensors weights"
    return None


def fetch(repo: str, revision: str, dest: Path, token: str | None, download=snapshot) -> str:
    if (dest / "model_index.json").is_file():
        return f"{dest} is in place"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".partial-{dest.name}"
    download(repo, revision, partial, token)
    problem = complete(partial)
    if problem:
        raise SystemExit(f"fetch-weights: {repo}@{revision} is not a diffusers folder: {problem}")
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # the hub client's bookkeeping
    for pickle in [p for p in partial.rglob("*") if p.suffix in PICKLES]:
        pickle.unlink()
    try:
        os.rename(partial, dest)
    except OSError:
        if (dest / "model_index.json").is_file():  # another run finished first
            shutil.rmtree(partial, ignore_errors=True)
            return f"{dest} was fetched by another run"
        raise
    return f"fetched {repo}@{revision} to {dest}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="hub id, OWNER/NAME")
    parser.add_argument("--revision", default="main", help="branch, tag or commit")
    parser.add_argument("--dest", required=True, help="the folder to make")
    args = parser.parse_args(argv)
    print(f"fetch-weights: {fetch(args.repo, args.revision, Path(args.dest), os.environ.get('HF_TOKEN') or None)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
