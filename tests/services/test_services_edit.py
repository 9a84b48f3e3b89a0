"""Decoder.Edit through Triton: the decoder service (started as `vov serve` starts it) serving the tiny
backbone's export with a maximum rank of 4. Edits give the pixels of the same edit run by ONNX Runtime
in process, agree with the torch decode of `vov edit`, and are refused beyond the engine's rank."""

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from vov import edit as editing
from vov.edit import EditOptions
from vov.errors import BackboneMismatch, UsageError
from vov.serving import client
from vov.serving.engines.onnx import OrtEngine
from vov.serving.parity import agreement, agrees
from vov.serving.serve import Stack
from vov.v1 import codec_pb2, codec_pb2_grpc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tiny_repository, tmp_path_factory):
    s = Stack("tiny", repository=tiny_repository, work=tmp_path_factory.mktemp("edit-stack"), max_rank=4,
              torch_threads=1, with_encoder=False, extra_decoder_args=["--grace", "5"])
    s.start()
    yield s
    s.stop()


def edit_png(address: str, request) -> np.ndarray:
    with client.channel(address) as ch:
        replies = list(codec_pb2_grpc.DecoderStub(ch).Edit(request, timeout=120))
    png = b"".join(r.png_chunk.data for r in replies if r.HasField("png_chunk"))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def uint8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)


def test_edits_through_triton_are_onnx_runtimes_and_agree_with_the_command(stack, tiny_backbone, tiny_repository,
                                                                           tiny_files):
    local = OrtEngine(tiny_repository, backbone=tiny_backbone)
    a, b = tiny_files[0], tiny_files[1]
    for files, options in [([a, b], EditOptions(weights=(0.6, 0.4))), ([a], EditOptions(strength=0.5)),
                           ([a, b], EditOptions(strength=1.5))]:
        served = edit_png(stack.decoder_address, client.edit_request(files, options))
        in_process = editing.edit(files, options, backbone=tiny_backbone, engine=local)
        np.testing.assert_array_equal(served, uint8(in_process.pixels))
        command = editing.edit(files, options, backbone=tiny_backbone).pixels  # what `vov edit` writes
        assert agrees(served / 255.0, command), agreement(served / 255.0, command)


def test_the_engine_states_its_rank_and_refuses_larger_merges(stack, tiny_files):
    with client.channel(stack.decoder_address) as ch:
        models = codec_pb2_grpc.DecoderStub(ch).ListModels(codec_pb2.ListModelsRequest(), timeout=30).models
    assert models[0].max_rank == 4
    three = tiny_files[:3]  # rank 2 each: 6 > 4
    with pytest.raises(BackboneMismatch, match="rank 6 .* the served engine takes at most rank 4"):
        list(client.edit_events(stack.decoder_address, three, EditOptions()))
    with pytest.raises(grpc.RpcError) as caught:
        edit_png(stack.decoder_address, codec_pb2.EditRequest(files=three))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_caption_edits_on_the_embedded_backbone_are_refused_with_the_reason(stack, tiny_files):
    with pytest.raises(UsageError, match="null caption only.*merges and --strength work"):
        list(client.edit_events(stack.decoder_address, tiny_files[:1], EditOptions(caption="a panda")))
