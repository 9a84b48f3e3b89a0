"""Real weights reach the services: from an existing claim, or fetched once by a download Job.

The rendered objects are read for what a cluster would do with them; the download script itself
(files/fetch-weights.py) runs here with the hub replaced by a copy of a tiny Wan2.1 folder in the
real layout, plus the pickle file and hub bookkeeping a real snapshot can hold.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from deploy_helpers import CHART, RELEASE, hook_events, named, of_kind, pod_spec, render, workloads

HUB_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
DOWNLOAD = ("backbone=wan", "model.source=download", f"model.download.hubId={HUB_ID}", "model.download.revision=abc123",
            "model.download.tokenSecret=hf-token")
VOLUME = ("backbone=wan", "model.source=volume", "model.volume.claimName=team-models",
          "model.volume.path=wan/Wan2.1-T2V-1.3B-Diffusers")


def service_containers(docs):
    for component in ("encoder", "decoder"):
        spec = pod_spec(named(docs, "Deployment", f"{RELEASE}-{component}"))
        yield component, spec, spec["containers"][0]


def env_of(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("sets, folder", [(DOWNLOAD, f"/opt/vov/weights/Wan-AI--Wan2.1-T2V-1.3B-Diffusers/abc123"),
                                          (VOLUME, "/opt/vov/weights/wan/Wan2.1-T2V-1.3B-Diffusers")])
def test_the_services_load_the_folder_from_a_read_only_claim(sets, folder):
    docs = render("default", *sets)
    claim = "team-models" if "model.source=volume" in sets else f"{RELEASE}-weights"
    for component, spec, container in service_containers(docs):
        env = env_of(container)
        assert env["VOV_MODEL"] == folder and env["VOV_BACKBONE"] == "wan" and env["HF_HUB_OFFLINE"] == "1", component
        (volume,) = [v for v in spec["volumes"] if v["name"] == "weights"]
        assert volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "weights"]
        assert mount["readOnly"] and folder.startswith(mount["mountPath"] + "/")
        assert "HF_TOKEN" not in env  # the token reaches the download alone
        waits = [c for c in spec.get("initContainers", []) if c["name"] == "wait-for-weights"]
        assert bool(waits) == ("model.source=download" in sets)
        if waits:
            assert env_of(waits[0])["VOV_MODEL"] == folder and "model_index.json" in " ".join(waits[0]["command"])


def test_the_download_is_one_ordinary_job_into_a_kept_claim():
    docs = render("default", *DOWNLOAD)
    (job,) = of_kind(docs, "Job")
    assert not hook_events(job)  # nothing in Helm waits on it, no hook deletes it
    spec = pod_spec(job)
    (container,) = spec["containers"]
    command = container["command"]
    assert command[:2] == ["python", "/opt/vov/fetch/fetch-weights.py"]
    assert f"--repo={HUB_ID}" in command and "--revision=abc123" in command
    assert "--dest=/weights/Wan-AI--Wan2.1-T2V-1.3B-Diffusers/abc123" in command
    token = env_of(container)["HF_TOKEN"]
    assert token == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    assert not any(k.startswith("nvidia.com/") for k in container["resources"]["limits"])
    claim = named(docs, "PersistentVolumeClaim", f"{RELEASE}-weights")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    # a new revision is a new Job (a Job's pod cannot be changed in place); the same values, the same Job
    other = of_kind(render("default", *DOWNLOAD[:-2], "model.download.revision=def456", DOWNLOAD[-1]), "Job")[0]
    assert other["metadata"]["name"] != job["metadata"]["name"]
    assert of_kind(render("default", *DOWNLOAD), "Job")[0]["metadata"]["name"] == job["metadata"]["name"]
    assert len(job["metadata"]["name"]) <= 63


def test_nothing_downloads_without_a_download():
    for docs in (render("default"), render("default", *VOLUME)):
        assert not of_kind(docs, "Job")
        assert not [d for d in of_kind(docs, "ConfigMap") if "fetch" in d["metadata"]["name"]]
        assert all(not [c for c in pod_spec(w).get("initContainers", []) if c["name"] == "wait-for-weights"]
                   for w in workloads(docs))


@pytest.mark.parametrize("sets, words", [
    (("backbone=wan", "model.source=download"), "needs model.download.hubId"),
    (("backbone=wan", "model.source=volume"), "needs model.volume.claimName"),
    (("model.source=volume", "model.volume.claimName=x"), "backbone embedded carries its own weights"),
    ((*DOWNLOAD, "model.volume.accessModes={ReadWriteOnce}"), "needs ReadWriteMany"),
    (("backbone=wan", "model.source=volume", "model.volume.claimName=x", "model.volume.path=../etc"), "model.volume.path"),
])
def test_weights_settings_that_cannot_work_are_refused(sets, words):
    from test_chart import template_error

    message = template_error(*[a for s in sets for a in ("--set", s)])
    assert words in message, message


# ------------------------------------------------------------------------------------ the download script


def load_fetch():
    spec = importlib.util.spec_from_file_location("fetch_weights", CHART / "files" / "fetch-weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory) -> Path:
    from vov.backbones import testing

    return testing.write_wan_folder(tmp_path_factory.mktemp("hub") / "Wan2.1-T2V-tiny-Diffusers", seed=0)


def fake_hub(source: Path, calls: list, extra: dict[str, bytes] | None = None):
    """snapshot_download's stand-in: copies the files of `source` the patterns allow, as the hub client would."""
    import fnmatch

    def download(repo, revision, folder, token):
        fetch = load_fetch()
        calls.append((repo, revision, token))
        for f in source.rglob("*"):
            rel = f.relative_to(source).as_posix()
            if f.is_file() and any(fnmatch.fnmatch(rel, p) for p in fetch.PATTERNS):
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, folder / rel)
        for rel, data in (extra or {}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
    return download


def test_the_download_fetches_once_and_the_folder_loads(tmp_path, wan_folder):
    fetch = load_fetch()
    dest = tmp_path / "weights" / "Wan-AI--Wan2.1-T2V-tiny-Diffusers" / "main"
    calls = []
    hub = fake_hub(wan_folder, calls, {"transformer/diffusion_pytorch_model.bin": b"pickle",
                                       ".cache/huggingface/download/x.lock": b""})
    said = fetch.fetch("Wan-AI/tiny", "main", dest, "hf_secret", download=hub)
    assert said.startswith("fetched") and calls == [("Wan-AI/tiny", "main", "hf_secret")]
    assert (dest / "model_index.json").is_file() and not (dest / ".cache").exists()
    assert not list(dest.rglob("*.bin")) and not list(dest.parent.glob(".partial-*"))
    # a second run (a retried Job, a reinstall) finds the folder and fetches nothing
    assert "in place" in fetch.fetch("Wan-AI/tiny", "main", dest, None, download=hub) and len(calls) == 1
    # the folder is one the backbone loads
    from vov import backbones

    backbone = backbones.load("wan", str(dest), device="cpu")
    assert backbone.content_hash == backbones.load("wan", str(wan_folder), device="cpu").content_hash


def test_a_download_that_is_not_a_diffusers_folder_leaves_nothing_in_place(tmp_path, wan_folder):
    fetch = load_fetch()
    dest = tmp_path / "weights" / "x" / "main"
    broken = tmp_path / "broken"
    shutil.copytree(wan_folder, broken)
    for f in (broken / "transformer").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(SystemExit, match="transformer/ has a config but no safetensors"):
        fetch.fetch("x/y", "main", dest, None, download=fake_hub(broken, []))
    assert not dest.exists()
