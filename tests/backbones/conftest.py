"""Tiny Wan2.1 and Qwen-Image folders in the real models' layout, written once per test session."""


import pytest

from vov.backbones import testing


@pytest.fixture(scope="session")
def wan_folder(tmp_path_factory):
    return testing.write_wan_folder(tmp_path_factory.mktemp("wan") / "Wan2.1-T2V-tiny-Diffusers", seed=0)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return testing.write_qwen_image_folder(tmp_path_factory.mktemp("qwen") / "Qwen-Image-tiny", seed=0)


@pytest.fixture(scope="session")
def wan(wan_folder):
    from vov import backbones

    return backbones.load("wan", str(wan_folder), device="cpu")


@pytest.fixture(scope="session")
def qwen(image_folder):
    from vov import backbones

    return backbones.load("image", str(image_folder), device="cpu")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty hub cache with the hub switched off: nothing can be fetched."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("VOV_CACHE_DIR", str(tmp_path / "vov-cache"))
    return tmp_path

