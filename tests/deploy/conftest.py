"""Fixtures of the deployment checks (helpers live in deploy_helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from deploy_helpers import PROFILES, TOOLS, render_text


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory) -> Path:
    """Every profile rendered into one file each."""
    out = tmp_path_factory.mktemp("rendered")
    for profile in PROFILES:
        (out / f"{profile}.yaml").write_text(render_text(profile))
    return out


@pytest.fixture(scope="session")
def tiny_exports() -> dict[str, Path]:
    """The tiny backbone exported for both variants, kept in this checkout's .tools/cache.

    "cpu" (Python backend + ONNX Runtime configs) is a plain `vov export`; "gpu" (tensorrt_plan
    configs and build_plans.sh) is `export_repository(variant="gpu")` with the two graph exporters
    replaced by copies of the cpu export's graphs, which the same backbone and layout make identical,
    so that the slow ONNX export runs once. Each is made again when it is not current.
    """
    from vov import backbones
    from vov.serving import graphs, repository

    backbone = backbones.load("tiny")
    cache = TOOLS / "cache"
    repos = {"cpu": cache / "tiny-export-cpu", "gpu": cache / "tiny-export-gpu"}
    if not repository.is_current(repos["cpu"], backbone, 4, "cpu"):
        repository.export_repository(backbone, repos["cpu"], max_rank=4, variant="cpu", log=lambda m: None)
    if not repository.is_current(repos["gpu"], backbone, 4, "gpu"):
        def copy_graph(model):
            return lambda *args: shutil.copyfile(repos["cpu"] / model / "1" / "model.onnx", args[-1])

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(graphs, "export_denoiser", copy_graph("denoiser"))
            patch.setattr(graphs, "export_vae_decoder", copy_graph("vae_decoder"))
            repository.export_repository(backbone, repos["gpu"], max_rank=4, variant="gpu", log=lambda m: None)
    return repos
