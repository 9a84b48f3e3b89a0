"""The scripts the chart runs in NVIDIA's Triton image and the models image (helm/vov/files/), run
here with stand-ins for the GPU tools: `nvidia-smi` answers like a node of a given GPU model (or MIG
slice), `trtexec` writes a plan file where asked and logs its arguments, `tritonserver` prints its
arguments. The export they work from is a real `vov export --variant gpu` of the tiny backbone.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import CHART

FILES = CHART / "files"
A100 = "NVIDIA A100-SXM4-80GB"
L4 = "NVIDIA L4"


def fake_tools(bin_dir: Path, gpu: str, mig: str | None, log: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    listing = f"GPU 0: {gpu} (UUID: GPU-0)"
    if mig:
        listing += f"\\n  MIG {mig}     Device  0: (UUID: MIG-0)"
    (bin_dir / "nvidia-smi").write_text(f"""#!/bin/sh
case "$*" in
  *--query-gpu=name*) echo {shlex.quote(gpu)} ;;
  -L) printf '{listing}\\n' ;;
  *) exit 2 ;;
esac
""")
    (bin_dir / "trtexec").write_text(f"""#!/bin/sh
echo "trtexec $*" >> {shlex.quote(str(log))}
for a in "$@"; do
  case "$a" in --saveEngine=*) printf 'plan' > "${{a#--saveEngine=}}" ;; esac
done
""")
    (bin_dir / "tritonserver").write_text('#!/bin/sh\necho "tritonserver $*"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)


def run_script(name: str, bin_dir: Path, **env) -> subprocess.CompletedProcess:
    # the scripts see only these tools and a minimal system PATH, as in a container
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": "/nonexistent", **env}
    return subprocess.run(["sh", str(FILES / name)], capture_output=True, text=True, env=environment, timeout=60)


@pytest.fixture(scope="module")
def gpu_export(tiny_exports):
    return tiny_exports["gpu"]


@pytest.mark.parametrize("gpu, mig, trt, key", [
    (A100, None, "10.5.0.18", "nvidia-a100-sxm4-80gb-trt-10.5.0.18"),
    (A100, "1g.10gb", "10.5.0.18", "nvidia-a100-sxm4-80gb-mig-1g.10gb-trt-10.5.0.18"),
    (L4, None, "10.5.0.18", "nvidia-l4-trt-10.5.0.18"),
    (L4, None, "10.7.0.23", "nvidia-l4-trt-10.7.0.23"),
])
def test_the_plan_key_names_gpu_model_mig_slice_and_tensorrt_version(tmp_path, gpu, mig, trt, key):
    fake_tools(tmp_path / "bin", gpu, mig, tmp_path / "trtexec.log")
    result = run_script("plan-key.sh", tmp_path / "bin", TRT_VERSION=trt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == key


def test_the_plan_key_refuses_to_guess_the_tensorrt_version(tmp_path):
    fake_tools(tmp_path / "bin", L4, None, tmp_path / "trtexec.log")
    result = run_script("plan-key.sh", tmp_path / "bin")  # no TRT_VERSION, no tensorrt module, no package
    assert result.returncode != 0 and "cannot tell the TensorRT version" in result.stderr


def test_stage_build_and_start_one_model_version(tmp_path, gpu_export):
    version_dir = tmp_path / "models" / "tiny" / "0.1.0"
    log = tmp_path / "trtexec.log"
    fake_tools(tmp_path / "a100", A100, None, log)
    fake_tools(tmp_path / "l4", L4, None, log)
    env = {"VOV_EXPORT_DIR": str(gpu_export), "VOV_VERSION_DIR": str(version_dir), "TRT_VERSION": "10.5.0.18"}

    # Triton refuses to start before plans exist for its GPU
    started = run_script("triton-start.sh", tmp_path / "a100", **env)
    assert started.returncode != 0 and "no plans for nvidia-a100-sxm4-80gb-trt-10.5.0.18" in started.stderr

    staged = run_script("stage-onnx.sh", tmp_path / "a100", **env)
    assert staged.returncode == 0, staged.stderr
    assert (version_dir / "onnx" / "vov_engine.json").read_bytes() == (gpu_export / "vov_engine.json").read_bytes()
    assert "in place" in run_script("stage-onnx.sh", tmp_path / "a100", **env).stdout

    built = run_script("build-plans.sh", tmp_path / "a100", **env)
    assert built.returncode == 0, built.stdout + built.stderr
    plans = version_dir / "plans" / "nvidia-a100-sxm4-80gb-trt-10.5.0.18"
    assert (plans / "READY").exists()
    for model in ("denoiser", "vae_decoder"):
        assert (plans / model / "1" / "model.plan").read_bytes() == b"plan"
        assert not (plans / model / "1" / "model.onnx").exists()
        assert 'platform: "tensorrt_plan"' in (plans / model / "config.pbtxt").read_text()
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and all("--fp16" in c and "--minShapes=" in c and "--maxShapes=" in c for c in calls)
    assert any("--onnx=denoiser/1/model.onnx" in c and "lora:" in c for c in calls)
    assert not list((version_dir / "plans").glob(".build-*")), "the build directory was left behind"

    # built once: a second run (an upgrade's hook, a restarted pod) builds nothing
    again = run_script("build-plans.sh", tmp_path / "a100", **env)
    assert again.returncode == 0 and "is ready" in again.stdout and len(log.read_text().splitlines()) == 2

    started = run_script("triton-start.sh", tmp_path / "a100", **env, TRITONSERVER="tritonserver")
    assert started.returncode == 0, started.stderr
    assert f"--model-repository={plans}" in started.stdout

    # a node of another GPU model gets plans of its own, from the same staged export
    other = run_script("build-plans.sh", tmp_path / "l4", **env)
    assert other.returncode == 0, other.stderr
    assert (version_dir / "plans" / "nvidia-l4-trt-10.5.0.18" / "READY").exists()
    assert len(log.read_text().splitlines()) == 4
    started = run_script("triton-start.sh", tmp_path / "l4", **env)
    assert "plans/nvidia-l4-trt-10.5.0.18" in started.stdout


def test_a_failed_plan_build_leaves_no_ready_plans(tmp_path, gpu_export):
    version_dir = tmp_path / "models" / "tiny" / "0.1.0"
    fake_tools(tmp_path / "bin", A100, None, tmp_path / "trtexec.log")
    (tmp_path / "bin" / "trtexec").write_text("#!/bin/sh\necho 'out of memory' >&2\nexit 1\n")
    env = {"VOV_EXPORT_DIR": str(gpu_export), "VOV_VERSION_DIR": str(version_dir), "TRT_VERSION": "10.5.0.18"}
    assert run_script("stage-onnx.sh", tmp_path / "bin", **env).returncode == 0
    failed = run_script("build-plans.sh", tmp_path / "bin", **env)
    assert failed.returncode != 0
    assert not (version_dir / "plans" / "nvidia-a100-sxm4-80gb-trt-10.5.0.18").exists()
    assert run_script("triton-start.sh", tmp_path / "bin", **env).returncode != 0


def test_staging_refuses_an_image_without_a_gpu_export(tmp_path):
    fake_tools(tmp_path / "bin", A100, None, tmp_path / "trtexec.log")
    (tmp_path / "empty").mkdir()
    result = run_script("stage-onnx.sh", tmp_path / "bin", VOV_EXPORT_DIR=str(tmp_path / "empty"),
                        VOV_VERSION_DIR=str(tmp_path / "v"))
    assert result.returncode != 0 and "vov export --variant gpu" in result.stderr
    assert not (tmp_path / "v" / "onnx").exists()
