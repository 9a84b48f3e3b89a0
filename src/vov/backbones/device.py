"""Where a backbone runs: the torch device and weight dtype from what a person typed, or a one-line refusal."""

from __future__ import annotations

import re

import torch

from vov.errors import UsageError


def resolve_device(device: str | torch.device | None, default: str = "cpu") -> torch.device:
    """A torch device from what a person typed, or a UsageError that says why it cannot be used."""
    if device is None or device == "":
        device = default
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, torch.device):
        parsed = device
    else:
        text = str(device).strip().lower()
        if not re.fullmatch(r"cpu|cuda(:\d{1,2})?", text):
            raise UsageError(f"device must be cpu, cuda or cuda:N, not {str(device)[:40]!r}")
        parsed = torch.device(text)
    if parsed.type == "cpu":
        return parsed
    if parsed.type != "cuda":
        raise UsageError(f"device {parsed} is not supported (cpu, cuda, cuda:N)")
    if not torch.cuda.is_available():
        why = "this torch was built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise UsageError(f"device {parsed}: no GPU is available ({why}); use --device cpu")
    count = torch.cuda.device_count()
    index = parsed.index if parsed.index is not None else torch.cuda.current_device()
    if index >= count:
        raise UsageError(f"device {parsed}: there {'is' if count == 1 else 'are'} only {count} GPU(s) (cuda:0"
                         f"{'' if count == 1 else f' .. cuda:{count - 1}'})")
    return torch.device("cuda", index)


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weights' dtype: bf16 on CUDA and fp32 on CPU unless asked; never fp16 on CPU."""
    if dtype is None or dtype == "":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if not isinstance(dtype, torch.dtype):
        key = str(dtype).strip().lower()
        if key not in DTYPES:
            raise UsageError(f"dtype must be one of fp32, bf16, fp16, not {str(dtype)[:20]!r}")
        dtype = DTYPES[key]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise UsageError(f"dtype {dtype} is not supported (fp32, bf16, fp16 on CUDA)")
    if dtype == torch.float16 and device.type == "cpu":
        raise UsageError("fp16 is not supported on CPU (slow and inexact there); use bf16 or fp32")
    return dtype
