"""The model profiles (helm/vov/profiles/): their rendered sizes are the documented table's, computed
by scripts/chart_sizes.py; and the wan-1.3b profile's rendered commands, environment and mounts, given
a Wan2.1 folder in the real layout (tiny random weights) at the mounted path, start the real encoder
and decoder, which load it and serve (the decoder through a real Triton serving that folder's export).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_helpers import CHART, MODEL_PROFILES, RELEASE, ROOT, TOOLS, named, pod_spec, render, workload

DOCS = ROOT / "docs" / "deploy.md"


def chart_sizes():
    spec = importlib.util.spec_from_file_location("chart_sizes", ROOT / "scripts" / "chart_sizes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("chart_sizes", module)
    spec.loader.exec_module(module)
    return module


def gib(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Gi)", quantity).groups()
    return int(number)


def test_every_model_profile_is_in_the_table():
    sizes = chart_sizes()
    assert set(MODEL_PROFILES) == {m.name for m in sizes.MODELS} == {"wan-1.3b", "wan-14b", "qwen-image"}


def test_the_docs_show_the_computed_tables():
    sizes = chart_sizes()
    text = DOCS.read_text()
    assert sizes.facts_table() in text
    assert sizes.sizes_table() in text


@pytest.mark.parametrize("profile", MODEL_PROFILES)
def test_rendered_sizes_are_the_tables(profile):
    sizes = chart_sizes()
    model = next(m for m in sizes.MODELS if m.name == profile)
    want = sizes.sizes(model)
    docs = render(profile)

    def memory(name: str, container: str | None = None, init: bool = False) -> int:
        spec = pod_spec(workload(docs, f"{RELEASE}-{name}"))
        containers = spec["initContainers"] if init else spec["containers"]
        (c,) = [c for c in containers if container is None or c["name"] == container][:1]
        assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"]  # no overcommit
        return gib(c["resources"]["limits"]["memory"])

    assert memory("encoder") == want["encoder_memory"]
    assert memory("decoder") == want["decoder_memory"]
    assert memory("triton", "triton") == want["triton_memory"]
    assert memory("triton", "build-plans", init=True) == want["plan_build_memory"]
    triton = workload(docs, f"{RELEASE}-triton")
    (shm,) = [v for v in pod_spec(triton)["volumes"] if v["name"] == "shm"]
    assert gib(shm["emptyDir"]["sizeLimit"]) == want["shm"]
    (plans,) = triton["spec"]["volumeClaimTemplates"]
    assert gib(plans["spec"]["resources"]["requests"]["storage"]) == want["plan_volume"]
    weights = named(docs, "PersistentVolumeClaim", f"{RELEASE}-weights")
    assert gib(weights["spec"]["resources"]["requests"]["storage"]) == want["weights_volume"]
    # the decodes the limits admit are the served shape's, and the grace and the drain cover them
    env = {e["name"]: e.get("value") for e in pod_spec(workload(docs, f"{RELEASE}-decoder"))["containers"][0]["env"]}
    assert int(env["VOV_MAX_PIXELS"]) == model.width_px * model.height_px
    assert int(env["VOV_MAX_RANK"]) == model.max_rank
    assert int(env["VOV_MAX_CLIP_PIXELS"]) == model.width_px * model.height_px * model.frames
    assert int(env["VOV_MAX_WORK"]) == int(env["VOV_MAX_PIXELS"]) * int(env["VOV_MAX_FRAMES"]) * model.steps
    assert int(env["VOV_GRACE_SECONDS"]) == want["decoder_grace_seconds"] > want["longest_decode_seconds"]
    assert yaml.safe_load((CHART / "profiles" / f"{profile}.yaml").read_text())["decoder"]["pixelStepsPerSecond"] == \
        want["decode_rate"]
    drain = pod_spec(triton)["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert f"--quiet={want['drain_quiet_seconds']}" in drain and f"--max={want['drain_max_seconds']}" in drain
    assert want["drain_quiet_seconds"] >= 2 * want["step_seconds"]


# ------------------------------------------------------------------------------------ wan-1.3b, started


@pytest.fixture(scope="module")
def wan_weights(tmp_path_factory) -> tuple[Path, Path]:
    """The weights volume as the pods see it (/opt/vov/weights), holding a tiny Wan2.1 folder where the
    profile's download puts the real one; and that folder's CPU export (cached in .tools/cache)."""
    from vov import backbones
    from vov.backbones import testing
    from vov.serving.repository import export_repository, is_current

    env = {e["name"]: e.get("value") for e in pod_spec(workload(render("wan-1.3b"), f"{RELEASE}-encoder"))["containers"][0]["env"]}
    mount = "/opt/vov/weights/"
    assert env["VOV_MODEL"].startswith(mount)
    volume = tmp_path_factory.mktemp("weights-volume")
    folder = testing.write_wan_folder(volume / env["VOV_MODEL"][len(mount):], seed=0)
    backbone = backbones.load("wan", str(folder), device="cpu")
    repository = TOOLS / "cache" / "tiny-wan-export-cpu"
    if not is_current(repository, backbone, 2, "cpu"):
        shutil.rmtree(repository, ignore_errors=True)
        export_repository(backbone, repository, max_rank=2, log=lambda m: None)
    return volume, repository


@pytest.mark.slow
def test_the_wan_profile_starts_the_services_on_the_mounted_folder(wan_weights, tmp_path):
    from test_entrypoints import helm_test_command, localise

    from vov.serving.serve import wait_healthy
    from vov.serving.triton_server import TritonServer, free_port

    volume, repository = wan_weights
    triton = TritonServer(repository, tmp_path / "triton", free_port(), free_port()).start()
    processes = []
    try:
        triton.wait_ready(180)
        docs = render("wan-1.3b")
        addresses = {}
        for component in ("encoder", "decoder"):
            spec = pod_spec(workload(docs, f"{RELEASE}-{component}"))
            (container,) = spec["containers"]
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/opt/vov/weights"]["readOnly"]
            # the folder the profile names, at the path where the claim is mounted
            command, env, ports = localise(container, repository, triton.grpc_url,
                                           prefixes={"/opt/vov/weights/": f"{volume}/"})
            assert env["VOV_BACKBONE"] == "wan" and env["HF_HUB_OFFLINE"] == "1"
            log = tmp_path / f"{component}.log"
            with open(log, "wb") as out:
                base = {k: v for k, v in os.environ.items() if not k.startswith(("VOV_", "HF_"))}
                process = subprocess.Popen(command, env={**base, **env}, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
            processes.append(process)
            address = f"127.0.0.1:{ports[f'VOV_{component.upper()}_PORT']}"
            wait_healthy(address, process, f"the wan-1.3b profile's {component}", 180, log)
            addresses[component] = address
            assert '"backbone": "wan"' in log.read_text()
        # the helm test Pod's own command: both healthy, both list the Wan backbone they loaded
        result = subprocess.run(helm_test_command("wan-1.3b", addresses, {}), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("wan (") == 2, result.stdout
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        triton.stop()
