"""scripts/setup.sh says what it installs from Debian and why, and shows apt's progress, on a machine
where every tool is missing (apt-get, dpkg, id and the Python steps are stand-ins here)."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def machine(tmp_path):
    """A copy of the script in an empty checkout, and a PATH where nothing it looks for is installed."""
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "repo" / "scripts" / "setup.sh")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("bash", "sh", "grep", "sed", "printf", "cat", "mkdir", "dirname"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_ / tool)
    _stub(bin_, "id", 'echo 0')
    _stub(bin_, "dpkg", "exit 1")
    _stub(bin_, "apt-get", 'echo "apt-get $*" >> "$APT_LOG"\n'
                           'case "$*" in *install*) for p in webp ffmpeg; do echo "Unpacking $p (1.0) ..."; '
                           'echo "Setting up $p (1.0) ..."; done ;; *update*) echo "Get:1 http://deb stable InRelease";; '
                           'esac')
    venv = tmp_path / "repo" / ".venv" / "bin"
    venv.mkdir(parents=True)
    _stub(venv, "python", "exit 0")
    (venv / "activate").write_text(f'PATH="{venv}:$PATH"\n')
    _stub(venv, "pip", "exit 0")
    return tmp_path


def test_setup_names_each_package_with_its_reason_and_shows_progress(machine):
    env = {"PATH": str(machine / "bin"), "APT_LOG": str(machine / "apt.log"), "HOME": str(machine)}
    r = subprocess.run(["bash", str(machine / "repo" / "scripts" / "setup.sh")], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for package, reason in (("webp", "WebP baseline"), ("ffmpeg", "video in and out"),
                            ("mate-backgrounds", "openly licensed photos")):
        assert any(line.strip().startswith(f"{package}:") and reason in line for line in out.splitlines()), out
    assert "Unpacking webp" in out and "Setting up ffmpeg" in out and "Get:1" in out
    assert out.index("webp: cwebp") < out.index("setup: apt-get install")  # the why comes before the wait
    assert "install -y -q" in (machine / "apt.log").read_text()


def test_setup_fails_when_apt_fails(machine):
    _stub(machine / "bin", "apt-get", 'case "$*" in *install*) echo "E: Unable to locate package" >&2; exit 100;; esac')
    env = {"PATH": str(machine / "bin"), "HOME": str(machine)}
    r = subprocess.run(["bash", str(machine / "repo" / "scripts" / "setup.sh")], capture_output=True, text=True,
                       env=env)
    assert r.returncode != 0
