import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "bench" / "pool_runs.py"


@pytest.fixture(scope="module")
def pool_runs():
    spec = importlib.util.spec_from_file_location("pool_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, images: dict[str, float], steps: int = 600) -> Path:
    folder.mkdir()
    points = []
    for name, psnr in images.items():
        for codec in ("vov", "avif"):
            points.append({"image": name, "codec": codec, "target_bpp": 0.05, "bpp": 0.049, "reached": codec == "vov",
                           "metrics": {"psnr-rgb": psnr, "ms-ssim": 0.5, "gmsd": 0.2}, "role": "target"})
            points.append({**points[-1], "role": "vov-match", "metrics": {"psnr-rgb": 99.0, "ms-ssim": 1, "gmsd": 0}})
    (folder / "per_image.json").write_text(json.dumps({"points": points}))
    (folder / "summary.json").write_text(json.dumps({"rates": [0.05], "codecs": ["vov", "avif"]}))
    (folder / "vov.json").write_text(json.dumps({"description": f"vov, {steps} fitting steps"}))
    return folder


def test_pools_the_per_image_values_of_disjoint_runs(pool_runs, tmp_path):
    a = _run(tmp_path / "a", {"x": 10.0, "y": 12.0})
    b = _run(tmp_path / "b", {"z": 20.0})
    result = pool_runs.pool([a, b])
    assert result["images"] == ["x", "y", "z"]
    vov = next(r for r in result["rows"] if r["codec"] == "vov")
    assert vov["psnr-rgb"] == pytest.approx(14.0) and vov["images"] == 3 and vov["reached"]
    avif = next(r for r in result["rows"] if r["codec"] == "avif")
    assert not avif["reached"]


def test_refuses_an_image_counted_twice_or_other_settings(pool_runs, tmp_path):
    a = _run(tmp_path / "a", {"x": 10.0})
    with pytest.raises(SystemExit, match="x is in both"):
        pool_runs.pool([a, _run(tmp_path / "b", {"x": 11.0})])
    with pytest.raises(SystemExit, match="other settings"):
        pool_runs.pool([a, _run(tmp_path / "c", {"y": 11.0}, steps=1200)])


def test_refuses_a_folder_that_is_not_a_finished_run(pool_runs, tmp_path):
    with pytest.raises(SystemExit, match="not a finished `vov bench` output folder"):
        pool_runs.pool([_run(tmp_path / "a", {"x": 10.0}), tmp_path / "missing"])
