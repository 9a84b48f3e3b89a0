"""The decoder service's engine: Triton when a URL is given (`make_engine`), else `LocalEngine`, the
exported graphs in ONNX Runtime in the decoder's process, from a repository it exports (again)
whenever it is missing or was made from other weights. Both give the same pixels for the same file
(tests/services check it).
"""

from __future__ import annotations

from pathlib import Path

from vov.serving.contract import DEFAULT_MAX_RANK, LoraLayout, check_backbone, read_engine
from vov.serving.engines.base import run_canary
from vov.serving.engines.onnx import OrtEngine
from vov.serving.engines.triton import TritonEngine
from vov.serving.repository import default_repository, export_repository, is_current


class LocalEngine:
    """The exported graphs run by ONNX Runtime in the decoder's process."""

    def __init__(self, repository: str | Path, backbone, threads: int | None = None):
        info = read_engine(repository)
        max_rank = info["layout"]["max_rank"] if info else DEFAULT_MAX_RANK
        if not is_current(repository, backbone, max_rank):  # missing, or made from other weights
            export_repository(backbone, repository, max_rank, log=lambda m: None)
        self.ort = OrtEngine(repository, threads, backbone=backbone)
        check_backbone(self.ort.info, backbone)
        self.layout = self.ort.layout
        self.text_tokens, self.text_dim, self.takes_mask = self.ort.text_tokens, self.ort.text_dim, self.ort.takes_mask
        self.channels = self.ort.channels

    def open(self, adapter, condition=None):
        return self.ort.open(adapter, condition)

    def open_compact(self, compact, embeddings, mask):
        return self.ort.open_compact(compact, embeddings, mask)

    def decode(self, latents):
        return self.ort.decode(latents)

    def current_layout(self) -> LoraLayout:
        return self.layout

    def probe(self, canary: bool) -> None:
        if canary:
            run_canary(self)

    def describe(self) -> str:
        return "onnxruntime"


def make_engine(backbone, triton_url: str | None, repository: str | Path | None, threads: int | None = None,
                triton_tls: dict | None = None, **triton_options):
    """`triton_options` go to TritonEngine (retry_seconds, max_attempts, on_unavailable)."""
    if triton_url:
        return TritonEngine(triton_url, backbone, tls=triton_tls, **triton_options)
    repo = Path(repository) if repository else default_repository(backbone.name)
    return LocalEngine(repo, backbone, threads)
