"""Editing .vov files: another caption, merges, strength; `vov edit`; the decoder service's Edit.

Real files of the tiny Wan2.1 folder (text-conditioned) and of the tiny embedded backbone (null
caption only), decoded by the codec's own loop."""

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from edit_support import CLIP_LIMITS, wan_backbone, wan_file, wan_video
from PIL import Image

from vov import cli, codec
from vov import edit as editing
from vov.edit import EditOptions
from vov.errors import BackboneMismatch, BitstreamError, UsageError
from vov.format import bitstream
from vov.limits import LimitExceeded, Limits
from vov.method import sampler
from vov.method.adapters import AdaptedDenoiser, AdapterSpec

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    return wan_backbone(tmp_path_factory)


def plain(data, backbone, limits=Limits()):
    return codec.decompress(data, backbone=backbone, limits=limits).frames


def edited(datas, backbone, limits=Limits(), **options):
    return editing.edit(datas, EditOptions(**options), backbone=backbone, limits=limits).frames


def base_sample(data, backbone, caption=None):
    """What the frozen base makes of the file's noise: its adapter with theta = 0, the same sampler."""
    f = codec.parse(data)
    zero = AdaptedDenoiser(backbone, AdapterSpec(f.adapter_name, f.rank, f.d, f.adapter_seed, f.targets))
    condition = backbone.condition(f.caption if caption is None else caption)
    with zero.frozen():
        latents = sampler.sample(sampler.torch_velocity(zero, condition), codec.latent_shape(f, backbone, 1),
                                 f.noise_seed, f.sampler_steps, f.schedule, shift=f.shift)
        pixels = backbone.decode(latents)[0].float().clamp(0, 1).numpy()
    return pixels.transpose(1, 2, 3, 0)[:1, : f.height, : f.width]


# ---------------------------------------------------------------------------------- the edits


def test_strength_one_is_the_plain_decode_and_zero_the_base_models_sample(wan):
    _, backbone = wan
    data = wan_file(backbone)
    reference = plain(data, backbone)
    assert np.array_equal(edited([data], backbone, strength=1.0), reference)
    at_zero = edited([data], backbone, strength=0.0)
    assert np.array_equal(at_zero, base_sample(data, backbone))
    assert not np.array_equal(at_zero, reference)
    half = edited([data], backbone, strength=0.5)
    assert not np.array_equal(half, reference) and not np.array_equal(half, at_zero)


def test_a_caption_edit_changes_the_output(wan):
    _, backbone = wan
    data = wan_file(backbone)  # fitted with "a red cat"
    reference = plain(data, backbone)
    panda = edited([data], backbone, caption="a blue dog")
    assert panda.shape == reference.shape and not np.array_equal(panda, reference)
    assert np.array_equal(edited([data], backbone, caption="a red cat"), reference)  # its own caption: no edit
    assert not np.array_equal(edited([data], backbone, caption=""), reference)  # the null caption is one too


def test_merging_a_file_with_itself_at_half_weights_is_its_decode(wan):
    _, backbone = wan
    data = wan_file(backbone)
    np.testing.assert_allclose(edited([data, data], backbone), plain(data, backbone), atol=1e-5)
    other = wan_file(backbone, seed=1, caption="", rank=2)
    merged = edited([data, other], backbone, weights=(0.5, 0.5))
    assert not np.array_equal(merged, plain(data, backbone))


def test_a_merge_pairs_clip_i_with_clip_i(wan):
    """Weights (0, 1): the second video's adaptation of each clip, sampled from the first's noises."""
    _, backbone = wan
    first, second = wan_video(backbone, 0), wan_video(backbone, 1)
    f, g = codec.parse(first), codec.parse(second)
    assert [s.frames for s in f.segments] == [5, 4]
    frames = edited([first, second], backbone, CLIP_LIMITS, weights=(0.0, 1.0))
    expected = []
    for c, segment in enumerate(f.segments):
        adapter = codec.adapter_for(g, backbone, c)
        with adapter.frozen():
            latents = sampler.sample(sampler.torch_velocity(adapter, backbone.condition(f.caption)),
                                     codec.latent_shape(f, backbone, segment.frames), codec.clip_seed(f.noise_seed, c),
                                     f.sampler_steps, f.schedule, shift=f.shift)
            pixels = backbone.decode(latents)[0].float().clamp(0, 1).numpy()
        expected.append(pixels.transpose(1, 2, 3, 0)[: segment.frames, : f.height, : f.width])
    np.testing.assert_allclose(frames, np.concatenate(expected), atol=1e-5)
    np.testing.assert_allclose(edited([first, first], backbone, CLIP_LIMITS), plain(first, backbone, CLIP_LIMITS),
                               atol=1e-5)
    with pytest.raises(UsageError, match="pairs clip i with clip i"):
        editing.plan([first, wan_file(backbone)], EditOptions(), CLIP_LIMITS)


def test_an_edit_refuses_a_bad_last_clip_of_any_file_before_any_work():
    clip = (GOLDEN / "tiny-v2-clip.vov").read_bytes()
    f = bitstream.load(clip)
    f.segments[1].payload = f.segments[1].payload[:-4]
    with pytest.raises(BitstreamError, match="file 2.*segment 1"):
        editing.plan([clip, bitstream.dump(f, check=False)], EditOptions())


def test_files_of_other_backbones_refuse_to_merge(wan, tiny_backbone):
    _, backbone = wan
    data = wan_file(backbone)
    tiny = (GOLDEN / "tiny-v1.vov").read_bytes()
    with pytest.raises(BackboneMismatch, match="file 2 was made with backbone 'tiny'"):
        editing.plan([data, tiny], EditOptions())
    other_weights = bitstream.dump(dataclasses.replace(bitstream.load(data), backbone_hash=bytes(8)))
    with pytest.raises(BackboneMismatch, match="only files of one backbone's weights merge"):
        editing.plan([data, other_weights], EditOptions())
    with pytest.raises(BackboneMismatch, match="this decoder has 'tiny'"):
        editing.edit([data], EditOptions(strength=0.5), backbone=tiny_backbone)


def test_other_targets_refuse_to_merge(wan):
    _, backbone = wan
    f = bitstream.load(wan_file(backbone))
    self_attn = dataclasses.replace(f, targets="self-attn", d=256)
    with pytest.raises(UsageError, match="same target layers"):
        editing.edit([bitstream.dump(f), bitstream.dump(self_attn)], EditOptions(), backbone=backbone)


def test_the_embedded_backbone_merges_and_scales_but_refuses_captions(tiny_backbone):
    data = (GOLDEN / "tiny-v1.vov").read_bytes()
    with pytest.raises(UsageError, match="null caption only.*merges and --strength work"):
        editing.plan([data], EditOptions(caption="a panda"))
    reference = plain(data, tiny_backbone)
    np.testing.assert_allclose(edited([data, data], tiny_backbone), reference, atol=1e-5)
    assert np.array_equal(edited([data], tiny_backbone, strength=0.0), base_sample(data, tiny_backbone))
    assert np.array_equal(edited([data], tiny_backbone, caption=""), reference)  # the null caption is no edit


def test_best_of_n_files_are_edited_with_the_ode_on_their_grid_or_replayed_on_request(tiny_backbone):
    data = (GOLDEN / "tiny-v2-best-of-8.vov").read_bytes()
    f = codec.parse(data)
    the_plan = editing.plan([data], EditOptions())
    assert the_plan.ode_instead and the_plan.header.sampler == 0 and the_plan.header.sampler_steps == f.sampler_steps
    assert "plain ODE on the same 6-step grid" in the_plan.notes()[0]
    adapter = codec.adapter_for(f, tiny_backbone)
    with adapter.frozen():
        latents = sampler.sample(sampler.torch_velocity(adapter, tiny_backbone.condition("")),
                                 codec.latent_shape(f, tiny_backbone, 1), f.noise_seed, f.sampler_steps, f.schedule,
                                 shift=f.shift)
        ode = tiny_backbone.decode(latents)[0].float().clamp(0, 1).numpy().transpose(1, 2, 3, 0)[:1, :48, :64]
    assert np.array_equal(edited([data], tiny_backbone), ode)
    assert np.array_equal(edited([data], tiny_backbone, replay=True), plain(data, tiny_backbone))
    assert not np.array_equal(ode, plain(data, tiny_backbone))
    with pytest.raises(UsageError, match="a merge decodes with the ODE"):
        editing.plan([data, data], EditOptions(replay=True))


def test_hostile_options_are_refused_with_one_line(wan):
    _, backbone = wan
    data = wan_file(backbone)
    cases = [
        ([data] * 5, EditOptions(), UsageError, "1 to 4 files"),
        ([], EditOptions(), UsageError, "1 to 4 files"),
        ([data, data], EditOptions(weights=(0.5,)), UsageError, "1 weights for 2"),
        ([data, data], EditOptions(weights=(0.5, math.nan)), UsageError, "weight 2 must be a finite"),
        ([data, data], EditOptions(weights=(0.5, 1e300)), UsageError, "between -4 and 4"),
        ([data], EditOptions(strength=math.inf), UsageError, "strength must be a finite"),
        ([data], EditOptions(strength=-5), UsageError, "between -4 and 4"),
        ([data], EditOptions(caption="x" * 5000), UsageError, "longer than 4096 bytes"),
        ([data], EditOptions(caption="a \udcff cat"), UsageError, "not valid UTF-8"),
        ([data, b"\x89VOV junk"], EditOptions(), Exception, "file 2: "),
    ]
    for datas, options, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            editing.plan(datas, options)
        assert "\n" not in str(caught.value)
    four = [wan_file(backbone, seed=1, caption="", rank=2)] * 4
    with pytest.raises(LimitExceeded, match="rank 8 .* at most rank 6"):
        editing.plan(four, EditOptions(), Limits(max_rank=6))
    with pytest.raises(BackboneMismatch, match="the served engine takes at most rank 4"):
        editing.plan(four, EditOptions(), max_rank=4)


# ---------------------------------------------------------------------------------- the command


def run_cli(*argv) -> int:
    return cli.main(list(map(str, argv)))


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_vov_edit_writes_what_the_library_decodes(wan, tmp_path, capsys):
    folder, backbone = wan
    a, b = tmp_path / "a.vov", tmp_path / "b.vov"
    a.write_bytes(wan_file(backbone))
    b.write_bytes(wan_file(backbone, seed=1, caption="", rank=2))
    out = tmp_path / "edit.png"
    assert run_cli("edit", a, b, "--merge", "--weights", "0.7,0.3", "--strength", "1.5", "--caption", "a blue dog",
                   "-o", out, "--model", folder, "-q") == 0
    expected = editing.edit([a.read_bytes(), b.read_bytes()],
                            EditOptions(caption="a blue dog", weights=(0.7, 0.3), strength=1.5), backbone=backbone)
    from vov.media import to_uint8

    assert np.array_equal(png(out), to_uint8(expected.pixels))
    assert "edit.png: 48x32" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["A", "B", "-o", "x.png"], "2 files: add --merge"),
    (["A", "--merge", "-o", "x.png"], "--merge needs two or more files"),
    (["A", "--weights", "1", "-o", "x.png"], "--weights go with --merge"),
    (["A", "B", "--merge", "--weights", "0.5,nan", "-o", "x.png"], "weight 2 must be a finite number"),
    (["A", "--strength", "big", "-o", "x.png"], "--strength must be a number"),
    (["A", "--strength", "9", "-o", "x.png"], "between -4 and 4"),
    (["T", "--caption", "a panda", "-o", "x.png"], "null caption only"),
    (["A", "-o", "x.txt"], "x.txt: write the image as"),
    (["missing.vov", "-o", "x.png"], "missing.vov: no such file"),
])
def test_bad_input_is_one_line_and_status_two(wan, tmp_path, capsys, monkeypatch, argv, message):
    _, backbone = wan
    monkeypatch.chdir(tmp_path)
    Path("A").write_bytes(wan_file(backbone))
    Path("B").write_bytes(wan_file(backbone))
    Path("T").write_bytes((GOLDEN / "tiny-v1.vov").read_bytes())
    assert run_cli("edit", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vov: error: ") and err.count("\n") == 1 and message in err, err


# ---------------------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def decoder(wan):
    """The decoder service on loopback, in this process, serving the tiny Wan backbone with the torch
    engine (the reference engine: the same pixels as the command)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the services package of this checkout
    from services.common import Server, logger
    from services.decoder.server import SERVICE, DecoderServicer
    from vov.serving.engines.torch import TorchEngine
    from vov.v1 import codec_pb2_grpc

    _, backbone = wan
    servicer = DecoderServicer(backbone, TorchEngine(backbone), 1 << 20, logger("decoder"), CLIP_LIMITS)
    server = Server([SERVICE], lambda s: codec_pb2_grpc.add_DecoderServicer_to_server(servicer, s), "127.0.0.1", 0,
                    2, 2 << 20, logger("decoder")).start()
    yield server.address
    server.server.stop(0)


def test_the_service_gives_the_commands_pixels(wan, decoder, tmp_path):
    folder, backbone = wan
    a, b = tmp_path / "a.vov", tmp_path / "b.vov"
    a.write_bytes(wan_file(backbone))
    b.write_bytes(wan_file(backbone, seed=1, caption="", rank=2))
    for i, argv in enumerate([[a, "--caption", "a blue dog"], [a, b, "--merge", "--strength", "0.5"]]):
        local, remote = tmp_path / f"local{i}.png", tmp_path / f"remote{i}.png"
        assert run_cli("edit", *argv, "-o", local, "--model", folder, "-q") == 0
        assert run_cli("edit", *argv, "-o", remote, "--server", decoder, "-q") == 0
        assert np.array_equal(png(local), png(remote))


def test_the_service_streams_an_edited_video_frame_by_frame(wan, decoder, tmp_path):
    folder, backbone = wan
    video = tmp_path / "v.vov"
    video.write_bytes(wan_video(backbone))
    assert run_cli("edit", video, "--strength", "0.5", "-o", tmp_path / "local", "--model", folder, "-q",
                   "--max-clip-pixels", CLIP_LIMITS.max_clip_pixels) == 0
    assert run_cli("edit", video, "--strength", "0.5", "-o", tmp_path / "remote", "--server", decoder, "-q") == 0
    local, remote = sorted((tmp_path / "local").iterdir()), sorted((tmp_path / "remote").iterdir())
    assert len(local) == len(remote) == 9
    for x, y in zip(local, remote):
        assert np.array_equal(png(x), png(y))


def test_the_service_refuses_with_status_codes(wan, decoder):
    import grpc

    from vov.serving import client
    from vov.v1 import codec_pb2, codec_pb2_grpc

    _, backbone = wan
    data = wan_file(backbone)
    tiny = (GOLDEN / "tiny-v1.vov").read_bytes()
    cases = [
        (codec_pb2.EditRequest(files=[data, tiny]), grpc.StatusCode.FAILED_PRECONDITION, "only files of one"),
        (codec_pb2.EditRequest(files=[data], strength=math.nan), grpc.StatusCode.INVALID_ARGUMENT, "strength"),
        (codec_pb2.EditRequest(files=[data, data], weights=[1.0]), grpc.StatusCode.INVALID_ARGUMENT, "1 weights"),
        (codec_pb2.EditRequest(files=[data] * 5), grpc.StatusCode.INVALID_ARGUMENT, "1 to 4 files"),
        (codec_pb2.EditRequest(files=[data[:-3]]), grpc.StatusCode.INVALID_ARGUMENT, ""),
        (codec_pb2.EditRequest(files=[data] * 4, weights=[0.25] * 4), grpc.StatusCode.OK, ""),
    ]
    with client.channel(decoder) as ch:
        stub = codec_pb2_grpc.DecoderStub(ch)
        for request, code, message in cases:
            try:
                replies = list(stub.Edit(request, timeout=60))
                assert code == grpc.StatusCode.OK and replies[-1].png_chunk.last
            except grpc.RpcError as e:
                assert e.code() == code and message in e.details(), (e.code(), e.details())
        big = codec_pb2.EditRequest(files=[data + bytes(600_000), data + bytes(600_000)])
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Edit(big, timeout=60))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "together" in caught.value.details()
