"""One fit over several processes: data parallelism for GPU nodes (torchrun).

    torchrun --nproc_per_node 4 -m vov.cli compress clip.mp4 -o clip.vov --backbone wan --device cuda

Every rank runs the same compress (the same media, options and starting vector). At each fitting
step each rank draws its own noise: rank 0 the one-process fit's own stream, rank r > 0 a stream
keyed by (seed, r, step). Each rank back-propagates its draws, the gradients are averaged over the
ranks (`all_reduce`), and every rank applies the same optimiser step, so all ranks hold the same
vector at every step; rank 0 writes the file and the checkpoints.

What this guarantees against a one-process fit: the same format, rate control and decoder; the
vector is what a fit with W times the noise draws per step gives (W ranks x `FitConfig.draws`), so
the file is not bit-identical to a one-process file. On the CPU (gloo) the same W, seeds and inputs
give the same file; on GPUs that holds as far as NCCL's reduction order and the kernels repeat.

A resumed fit needs its checkpoint where every rank reads it (one node, or a shared folder): the
ranks check that they resume at the same step and stop with one line if not.
"""

from __future__ import annotations

import hashlib
import os

import torch

from vov.errors import UsageError


def world() -> tuple[int, int]:
    """(rank, number of ranks) of this process; (0, 1) outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_writer() -> bool:
    """Whether this process writes files and prints: the only process, or rank 0."""
    return world()[0] == 0


def join_from_environment(device: str | None) -> str | None:
    """Join the process group torchrun describes (WORLD_SIZE > 1) and return this rank's device.

    A CUDA device (asked for, or the default where CUDA exists) becomes `cuda:LOCAL_RANK` with NCCL;
    otherwise the ranks run on the CPU with gloo. Outside torchrun nothing happens.
    """
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if ranks <= 1:
        return device
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError("this torch has no torch.distributed; run one process")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    if cuda:
        if local >= torch.cuda.device_count():
            raise UsageError(f"rank {local} on this node has no GPU ({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def leave() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def draw_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The noise stream of rank `rank` > 0 at fitting step `step` (rank 0 keeps the fit's own)."""
    key = hashlib.sha256(f"vov fit draws {seed} {rank} {step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)


def average_gradients(parameters) -> None:
    """Replace each parameter's gradient by its mean over the ranks (nothing with one rank)."""
    rank, ranks = world()
    if ranks == 1:
        return
    import torch.distributed as dist

    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(ranks)


def agree(value: int, what: str) -> None:
    """Stop with one line unless every rank holds the same `value` (e.g. the step a fit resumes at)."""
    rank, ranks = world()
    if ranks == 1:
        return
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    low, high = torch.tensor([value], device=device), torch.tensor([-value], device=device)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MIN)
    if int(low) != -int(high):
        raise UsageError(f"the ranks disagree on {what} ({int(low)} to {-int(high)}): every rank must read the same "
                         f"checkpoint (one node, or a shared folder)")
