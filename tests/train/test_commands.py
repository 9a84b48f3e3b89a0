"""`vov data pack` and `vov train-base` as a user runs them: one-line errors, a pack that trains, and
the averaged weights of a run exported while it stands."""

import subprocess
import sys

import pytest
from safetensors.torch import load_file

from vov.backbones.embedded import load_file as load_backbone


def vov(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vov.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vov: error:"), result.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def test_data_pack_writes_a_pack_that_names_its_photos_and_licences(photo_set, tmp_path):
    from vov.train.pack import PhotoPack

    result = vov("data", "pack", photo_set, tmp_path / "photos.pack", "--long-side", 128, "-q")
    assert result.returncode == 0, result.stderr
    assert "2 photos" in result.stdout and "public-domain 2" in result.stdout
    pack = PhotoPack(tmp_path / "photos.pack")
    assert len(pack) == 2 and max(pack.sizes[0]) == 128


def test_data_and_train_base_refuse_bad_input_in_one_line(photo_set, tmp_path):
    one_line_error(vov("data", "pack", photo_set, tmp_path / "p.pack", "--long-side", -3), "--long-side")
    one_line_error(vov("data", "pack", photo_set, tmp_path / "p.pack", "--max-mb", 0.001, "-q"), "--max-mb")
    one_line_error(vov("data", "gather", tmp_path / "set", "--source", "nowhere", "--no-install"), "nowhere")
    one_line_error(vov("train-base", "--run-dir", tmp_path / "run"), "--pack")
    one_line_error(vov("train-base", "--run-dir", tmp_path / "run", "--export"), "no checkpoint")
    one_line_error(vov("train-base", "--pack", tmp_path / "missing.pack", "--run-dir", tmp_path / "run"), "no such file")
    one_line_error(vov("train-base", "--pack", tmp_path / "p.pack", "--steps", 10, "--cooldown", 20), "--cooldown")


def test_the_weights_of_a_run_can_be_exported_while_it_stands(photo_set, tmp_path):
    from test_train_base import SMALL, SMALL_MODEL

    from vov.errors import UsageError
    from vov.train.base import export_weights, train
    from vov.train.pack import build_pack

    build_pack(photo_set, tmp_path / "photos.pack", long_side=256, progress=False)
    train(tmp_path / "run", tmp_path / "photos.pack", SMALL, SMALL_MODEL, stop_at=4, progress=False)
    assert export_weights(tmp_path / "run", tmp_path / "now.safetensors", SMALL_MODEL) == 4
    finished = train(tmp_path / "run", tmp_path / "photos.pack", SMALL, SMALL_MODEL, progress=False)
    assert load_backbone(tmp_path / "now.safetensors").config == SMALL_MODEL
    before, after = load_file(tmp_path / "now.safetensors"), load_file(finished)
    assert before.keys() == after.keys() and any(not (before[k] == after[k]).all() for k in before)
    with pytest.raises(UsageError, match="not a usable"):
        export_weights(tmp_path / "run", tmp_path / "other.safetensors")  # the shipped shape, not this run's
