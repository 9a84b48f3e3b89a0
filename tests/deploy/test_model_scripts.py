"""The scripts the chart runs in NVIDIA's Triton image and the models image (helm/vov/files/), run
here with stand-ins for the GPU tools: `nvidia-smi` answers like a node of a given GPU model (or MIG
slice), `trtexec` reads the graph it is given (and its external data, when there is some beside it),
writes a plan file where asked and logs its arguments, `tritonserver` prints its arguments. The
export they work from is a real `vov export --variant gpu` of the tiny backbone.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
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
  case "$a" in
    --onnx=*) graph="${{a#--onnx=}}"; cat "$graph" >/dev/null || exit 3
              if [ -e "$graph.data" ]; then cat "$graph.data" >/dev/null || exit 3; echo "external $graph.data" >> {shlex.quote(str(log))}; fi ;;
    --saveEngine=*) printf 'plan' > "${{a#--saveEngine=}}" ;;
  esac
done
""")
    (bin_dir / "tritonserver").write_text('#!/bin/sh\necho "tritonserver $*"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)


def run_script(name: str, bin_dir: Path, *args: str, **env) -> subprocess.CompletedProcess:
    # the scripts see only these tools and a minimal system PATH, as in a container
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": "/nonexistent", **env}
    return subprocess.run(["sh", str(FILES / name), *args], capture_output=True, text=True, env=environment,
                          timeout=60)


def recipe(export: Path) -> str:
    return hashlib.sha256((export / "build_plans.sh").read_bytes()).hexdigest()[:12]


def trtexec_calls(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("trtexec ")] if log.exists() else []


@pytest.fixture(scope="module")
def gpu_export(tiny_exports):
    return tiny_exports["gpu"]


@pytest.mark.parametrize("gpu, mig, trt, key", [
    (A100, None, "10.5.0.18", "nvidia-a100-sxm4-80gb-trt-10.5.0.18"),
    (A100, "1g.10gb", "10.5.0.18", "nvidia-a100-sxm4-80gb-mig-1g.10gb-trt-10.5.0.18"),
    (L4, None, "10.5.0.18", "nvidia-l4-trt-10.5.0.18"),
    (L4, None, "10.7.0.23", "nvidia-l4-trt-10.7.0.23"),
])
def test_the_plan_key_names_gpu_model_mig_slice_tensorrt_version_and_recipe(tmp_path, gpu_export, gpu, mig, trt, key):
    fake_tools(tmp_path / "bin", gpu, mig, tmp_path / "trtexec.log")
    result = run_script("plan-key.sh", tmp_path / "bin", str(gpu_export), TRT_VERSION=trt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{key}-{recipe(gpu_export)}"


def test_the_plan_key_changes_with_the_shapes_of_the_export(tmp_path, gpu_export):
    """Plans serve only the shapes they were built for: an export with another profile is another key."""
    other = tmp_path / "other"
    shutil.copytree(gpu_export, other)
    script = other / "build_plans.sh"
    script.write_text(script.read_text().replace("--maxShapes=latents:16x", "--maxShapes=latents:8x"))
    fake_tools(tmp_path / "bin", L4, None, tmp_path / "trtexec.log")
    keys = {run_script("plan-key.sh", tmp_path / "bin", str(e), TRT_VERSION="10.5.0.18").stdout for e in (gpu_export, other)}
    assert len(keys) == 2


def test_the_plan_key_refuses_to_guess_the_tensorrt_version(tmp_path, gpu_export):
    fake_tools(tmp_path / "bin", L4, None, tmp_path / "trtexec.log")
    result = run_script("plan-key.sh", tmp_path / "bin", str(gpu_export))  # no TRT_VERSION, tensorrt module, package
    assert result.returncode != 0 and "cannot tell the TensorRT version" in result.stderr


def test_stage_build_and_start_one_model_version(tmp_path, gpu_export):
    version_dir = tmp_path / "models" / "tiny" / "0.1.0"
    log = tmp_path / "trtexec.log"
    fake_tools(tmp_path / "a100", A100, None, log)
    fake_tools(tmp_path / "l4", L4, None, log)
    env = {"VOV_EXPORT_DIR": str(gpu_export), "VOV_VERSION_DIR": str(version_dir), "TRT_VERSION": "10.5.0.18"}

    # Triton refuses to start before the export is staged, and before plans exist for its GPU
    started = run_script("triton-start.sh", tmp_path / "a100", **env)
    assert started.returncode != 0 and "no build_plans.sh" in started.stderr

    staged = run_script("stage-onnx.sh", tmp_path / "a100", **env)
    assert staged.returncode == 0, staged.stderr
    started = run_script("triton-start.sh", tmp_path / "a100", **env)
    assert started.returncode != 0 and f"no plans for nvidia-a100-sxm4-80gb-trt-10.5.0.18-{recipe(gpu_export)}" in started.stderr
    assert (version_dir / "onnx" / "vov_engine.json").read_bytes() == (gpu_export / "vov_engine.json").read_bytes()
    assert "in place" in run_script("stage-onnx.sh", tmp_path / "a100", **env).stdout

    built = run_script("build-plans.sh", tmp_path / "a100", **env)
    assert built.returncode == 0, built.stdout + built.stderr
    plans = version_dir / "plans" / f"nvidia-a100-sxm4-80gb-trt-10.5.0.18-{recipe(gpu_export)}"
    assert (plans / "READY").exists()
    for model in ("denoiser", "vae_decoder"):
        assert (plans / model / "1" / "model.plan").read_bytes() == b"plan"
        assert not (plans / model / "1" / "model.onnx").exists()
        assert 'platform: "tensorrt_plan"' in (plans / model / "config.pbtxt").read_text()
    calls = trtexec_calls(log)
    assert len(calls) == 2 and all("--fp16" in c and "--minShapes=" in c and "--maxShapes=" in c for c in calls)
    assert any("--onnx=denoiser/1/model.onnx" in c and "lora:" in c for c in calls)
    assert not list((version_dir / "plans").glob(".build-*")), "the build directory was left behind"

    # built once: a second run (an upgrade's hook, a restarted pod) builds nothing
    again = run_script("build-plans.sh", tmp_path / "a100", **env)
    assert again.returncode == 0 and "is ready" in again.stdout and len(trtexec_calls(log)) == 2

    started = run_script("triton-start.sh", tmp_path / "a100", **env, TRITONSERVER="tritonserver")
    assert started.returncode == 0, started.stderr
    assert f"--model-repository={plans}" in started.stdout

    # a node of another GPU model gets plans of its own, from the same staged export
    other = run_script("build-plans.sh", tmp_path / "l4", **env)
    assert other.returncode == 0, other.stderr
    assert (version_dir / "plans" / f"nvidia-l4-trt-10.5.0.18-{recipe(gpu_export)}" / "READY").exists()
    assert len(trtexec_calls(log)) == 4
    started = run_script("triton-start.sh", tmp_path / "l4", **env)
    assert f"plans/nvidia-l4-trt-10.5.0.18-{recipe(gpu_export)}" in started.stdout


def test_a_failed_plan_build_leaves_no_ready_plans(tmp_path, gpu_export):
    version_dir = tmp_path / "models" / "tiny" / "0.1.0"
    fake_tools(tmp_path / "bin", A100, None, tmp_path / "trtexec.log")
    (tmp_path / "bin" / "trtexec").write_text("#!/bin/sh\necho 'out of memory' >&2\nexit 1\n")
    env = {"VOV_EXPORT_DIR": str(gpu_export), "VOV_VERSION_DIR": str(version_dir), "TRT_VERSION": "10.5.0.18"}
    assert run_script("stage-onnx.sh", tmp_path / "bin", **env).returncode == 0
    failed = run_script("build-plans.sh", tmp_path / "bin", **env)
    assert failed.returncode != 0
    assert [p.name for p in (version_dir / "plans").iterdir()] == []  # nothing ready, no build directory left
    assert run_script("triton-start.sh", tmp_path / "bin", **env).returncode != 0


def test_staging_refuses_an_image_without_a_gpu_export(tmp_path):
    fake_tools(tmp_path / "bin", A100, None, tmp_path / "trtexec.log")
    (tmp_path / "empty").mkdir()
    result = run_script("stage-onnx.sh", tmp_path / "bin", VOV_EXPORT_DIR=str(tmp_path / "empty"),
                        VOV_VERSION_DIR=str(tmp_path / "v"))
    assert result.returncode != 0 and "vov export --variant gpu" in result.stderr
    assert not (tmp_path / "v" / "onnx").exists()


def test_external_data_is_linked_for_the_build_and_kept_once(tmp_path, gpu_export):
    """A graph whose weights are external data (model.onnx.data, for graphs past 1 GiB): trtexec reads
    it beside the graph, and no plan directory holds a copy of it or of the graph."""
    export = tmp_path / "export"
    shutil.copytree(gpu_export, export)
    (export / "denoiser" / "1" / "model.onnx.data").write_bytes(b"w" * 4096)
    version_dir = tmp_path / "models" / "tiny" / "0.1.0"
    log = tmp_path / "trtexec.log"
    env = {"VOV_EXPORT_DIR": str(export), "VOV_VERSION_DIR": str(version_dir), "TRT_VERSION": "10.5.0.18"}
    for gpu, name in ((A100, "a100"), (L4, "l4")):
        fake_tools(tmp_path / name, gpu, None, log)
        assert run_script("stage-onnx.sh", tmp_path / name, **env).returncode == 0
        built = run_script("build-plans.sh", tmp_path / name, **env)
        assert built.returncode == 0, built.stdout + built.stderr
    assert log.read_text().count("external ") == 2  # one denoiser build per GPU key read the weights
    plans = sorted((version_dir / "plans").iterdir())
    assert len(plans) == 2 and all((p / "READY").exists() for p in plans)
    for p in plans:
        leftovers = [f.relative_to(p) for f in p.rglob("*") if ".onnx" in f.name]
        assert leftovers == [], leftovers
        assert (p / "denoiser" / "1" / "model.plan").read_bytes() == b"plan"
    copies = [f for f in (tmp_path / "models").rglob("model.onnx.data")]
    assert copies == [version_dir / "onnx" / "denoiser" / "1" / "model.onnx.data"]
