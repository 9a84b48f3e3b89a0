"""Data-parallel fitting: two real processes under torchrun (gloo on the CPU), one fit."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.method.fit import FitConfig, fit

RANKS = """
import sys, numpy as np, torch
from vov.backbones.embedded import tiny
from vov.method import parallel
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.method.fit import FitConfig, fit
from vov.errors import UsageError
out, mode = sys.argv[1], sys.argv[2]
parallel.join_from_environment("cpu")
rank, ranks = parallel.world()
torch.set_num_threads(1)
latents = torch.from_numpy(np.load(f"{out}/latents.npy"))
adapter = AdaptedDenoiser(tiny(), AdapterSpec(rank=2, d=256))
config = FitConfig(steps=6, seed=3, target_bits=900.0)
checkpoint = f"{out}/fit.partial" if rank == 0 or mode == "shared" else f"{out}/missing.partial"
try:
    result = fit(adapter, latents, 48 * 64, config, checkpoint=checkpoint if mode != "plain" else None)
    np.save(f"{out}/q{rank}.npy", result.q)
    print("rank", rank, "of", ranks, "step", result.step_size)
except UsageError as e:
    print(f"rank {rank}: {e}")
    sys.exit(3)
finally:
    parallel.leave()
"""


@pytest.fixture(scope="module")
def latents(tiny_backbone):
    g = torch.Generator().manual_seed(0)
    return tiny_backbone.encode(torch.rand(1, 3, 1, 48, 64, generator=g)).detach()


def torchrun(tmp_path, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "0", "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:0",
                           str(script), str(tmp_path), mode], capture_output=True, text=True, timeout=300)


def test_two_ranks_fit_one_vector_and_agree_on_resume(tmp_path, latents, tiny_backbone):
    np.save(tmp_path / "latents.npy", latents.numpy())
    run = torchrun(tmp_path, "plain")
    assert run.returncode == 0, run.stderr[-2000:]
    q0, q1 = np.load(tmp_path / "q0.npy"), np.load(tmp_path / "q1.npy")
    np.testing.assert_array_equal(q0, q1)  # averaged gradients, the same steps: every rank holds the same vector

    # against one process: rank 1's draws count, so the vector is another (a fit with two draws a step)
    single = fit(AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256)), latents, 48 * 64,
                 FitConfig(steps=6, seed=3, target_bits=900.0))
    assert not np.array_equal(single.q, q0)

    again = tmp_path / "again"
    again.mkdir()
    np.save(again / "latents.npy", latents.numpy())
    assert torchrun(again, "plain").returncode == 0
    np.testing.assert_array_equal(np.load(again / "q0.npy"), q0)  # gloo on the CPU: the same file twice

    # a checkpoint only rank 0 can see: both ranks stop with one line instead of fitting apart
    disagree = tmp_path / "disagree"
    disagree.mkdir()
    np.save(disagree / "latents.npy", latents.numpy())
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256))
    def stop_at_step_4(progress):
        if progress.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(adapter, latents, 48 * 64, FitConfig(steps=6, seed=3, target_bits=900.0),
            checkpoint=disagree / "fit.partial", checkpoint_every=2, on_progress=stop_at_step_4)
    assert (disagree / "fit.partial").exists()  # saved after step 2 (step 4 stopped before its save)
    run = torchrun(disagree, "split")
    assert run.returncode != 0, run.stdout
    assert "the ranks disagree on the step the fit resumes at (0 to 2)" in run.stdout, run.stdout


def test_more_draws_per_step_average_their_distortion(tiny_backbone, latents):
    def run(draws):
        adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256))
        return fit(adapter, latents, 48 * 64, FitConfig(steps=4, seed=1, draws=draws))

    one, two = run(1), run(2)
    assert not np.array_equal(one.q, two.q)
    # the first step's first draw is the same; a second draw changes the averaged distortion
    assert two.history[0].distortion != pytest.approx(one.history[0].distortion, rel=1e-9)
    assert all(np.isfinite(p.loss) for p in two.history)
    np.testing.assert_array_equal(run(2).q, two.q)  # repeatable
