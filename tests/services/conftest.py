"""Fixtures for the services: the tiny backbone exported once, and a few small .vov files."""

import pytest
from service_media import picture, tiny_options

from vov import codec


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory, tiny_backbone):
    """The tiny backbone exported to ONNX in a Triton model repository (maximum rank 4)."""
    from vov.serving.repository import export_repository

    repo = tmp_path_factory.mktemp("repository")
    export_repository(tiny_backbone, repo, max_rank=4, log=lambda m: None)
    return repo


@pytest.fixture(scope="session")
def tiny_files(tiny_backbone):
    """Four different .vov files of the tiny backbone: other images, sizes, seeds and vector lengths."""
    return [codec.compress(picture(seed, 48 + 16 * (seed % 2)), tiny_options(seed), backbone=tiny_backbone).data
            for seed in range(4)]
