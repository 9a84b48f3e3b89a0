"""Convert TAEF2's checkpoints (madebyollin/taesd, MIT) to one safetensors file that vov loads.

Run once, by hand, on the two files of that repository:

    python scripts/convert_taef2.py taef2_encoder.pth taef2_decoder.pth -o taef2.safetensors

This is the only place where a `.pth` is read, with `weights_only=True` (no code runs from the
file). Parameters are matched by order and checked shape by shape against vov's own modules
(`vov.backbones.tiny_autoencoder`); the dtype (fp16) is kept, so the conversion is lossless.
The output's header records each source file's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import sys

import torch
from safetensors.torch import save_file

from vov.backbones.tiny_autoencoder import TinyDecoder, TinyEncoder


def convert(source: str, module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    original = torch.load(source, map_location="cpu", weights_only=True)
    ours = module.state_dict()
    if len(original) != len(ours):
        sys.exit(f"{source}: {len(original)} tensors, vov's module has {len(ours)}")
    out = {}
    for (theirs, tensor), (name, expected) in zip(original.items(), ours.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            sys.exit(f"{source}: {theirs} is {tuple(tensor.shape)}, vov's {name} is {tuple(expected.shape)}")
        out[prefix + name] = tensor.contiguous()
    return out


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoder")
    parser.add_argument("decoder")
    parser.add_argument("-o", "--out", required=True)
    args = parser.parse_args()
    tensors = {**convert(args.encoder, TinyEncoder(32), "encoder."),
               **convert(args.decoder, TinyDecoder(32), "decoder.")}
    meta = {"source": "https://github.com/madebyollin/taesd (taef2_encoder.pth, taef2_decoder.pth)",
            "licence": "MIT, Copyright (c) 2023 Ollin Boer Bohan",
            "encoder_sha256": sha256(args.encoder), "decoder_sha256": sha256(args.decoder)}
    save_file(tensors, args.out, metadata=meta)
    print(f"wrote {args.out}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values()):,} numbers")


if __name__ == "__main__":
    main()
