"""What a person meets first: one-line errors for bad flags, the server flags' help and addresses, a
wrong service named, `vov serve` on a busy port and its ready lines, a rate that cannot be reached,
and `vov info` on a plain file."""

import socket
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vov import cli
from vov.errors import UsageError
from vov.options import rate_note
from vov.serving import client

GOLDEN = Path(__file__).parents[1] / "golden"
FAST = ["--backbone", "tiny", "--steps", "6", "--sampler-steps", "3", "--dim", "256", "--rank", "2", "-q"]


def one_line_error(capsys, argv, *words):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vov: error: "), lines
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.mark.parametrize("flags, words", [
    (["--bpp", "-0.1"], ["--bpp", "positive", "-0.1"]),
    (["--steps", "-5"], ["--steps", "positive", "-5"]),
    (["--bpp", "abc"], ["--bpp", "not a number", "abc"]),
    (["--sampler-steps", "0"], ["--sampler-steps", "positive"]),
])
def test_a_bad_flag_value_is_one_line(capsys, flags, words):
    one_line_error(capsys, ["compress", "in.png", "-o", "out.vov", *flags], *words, "vov compress --help")


def test_missing_and_unknown_arguments_are_one_line(capsys):
    one_line_error(capsys, [], "command")
    one_line_error(capsys, ["compres"], "invalid choice")
    one_line_error(capsys, ["decompress", "x.vov"], "-o/--output")
    one_line_error(capsys, ["info", "x.vov", "--frobnicate"], "--frobnicate")


def test_the_server_flags_name_their_service():
    for command, service in (("compress", "encoder"), ("decompress", "decoder"), ("edit", "decoder")):
        sub = cli.build_parser()._subparsers._group_actions[0].choices[command]
        text = " ".join(sub.format_help().split())
        assert f"through a vov {service} service" in text
        assert f"port {client.DEFAULT_PORTS[service]} when HOST alone" in text
        assert "compreer" not in text and "decompreer" not in text


def test_a_server_without_a_port_gets_the_services_port():
    assert client.target("localhost", "encoder") == f"localhost:{client.DEFAULT_PORTS['encoder']}"
    assert client.target("10.0.0.7", "decoder") == f"10.0.0.7:{client.DEFAULT_PORTS['decoder']}"
    assert client.target("[::1]", "decoder") == f"[::1]:{client.DEFAULT_PORTS['decoder']}"
    assert client.target("vov.example:443", "encoder") == "vov.example:443"
    assert client.target("dns:///decoder.vov:50052", "decoder") == "dns:///decoder.vov:50052"
    for bad in ("localhost:http", "localhost:70000", ""):
        with pytest.raises(UsageError, match="HOST:PORT"):
            client.target(bad, "encoder")


def test_a_compress_sent_to_the_wrong_service_names_it():
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # serves no vov service at all
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(UsageError, match="is not a vov encoder service") as refused:
            client.remote_compress(f"127.0.0.1:{port}", b"png", _options(), quiet=True)
        assert str(client.DEFAULT_PORTS["encoder"]) in str(refused.value)
        with pytest.raises(UsageError, match="is not a vov decoder service"):
            client.remote_decompress(f"127.0.0.1:{port}", (GOLDEN / "tiny-v1.vov").read_bytes())
    finally:
        server.stop(None)


def _options():
    from vov.options import EncodeOptions

    return EncodeOptions(backbone="tiny", steps=2)


def test_serve_on_a_busy_port_is_one_line(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--no-triton", "--encoder-port", str(port), "--decoder-port", "0"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vov: error: ") and f"127.0.0.1:{port}" in lines[0]
    assert "--encoder-port" in lines[0]


def test_serve_says_it_is_ready_and_where(capsys, monkeypatch):
    from vov.serving import serve

    class Started:
        def __init__(self, backbone, repository, work, host, encoder_port, decoder_port, *rest, **named):
            self.host, self.work = host, "/tmp/logs"
            self.ports = {"encoder": 7001, "decoder": 7002, "triton_grpc": 7003, "triton_http": 7004,
                          "triton_metrics": 7005}
            self.encoder_address, self.decoder_address, self.triton_url = f"{host}:7001", f"{host}:7002", f"{host}:7003"

        def start(self):
            return self

        def supervise(self, stopping):
            pass

        def stop(self):
            pass

    monkeypatch.setattr(serve, "Stack", Started)
    assert cli.main(["serve", "--encoder-port", "0", "--decoder-port", "0", "--triton-grpc-port", "0",
                     "--triton-http-port", "0", "--triton-metrics-port", "0"]) == 0
    out = capsys.readouterr().out
    assert "ready" in out.splitlines()[0]
    for where in ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"):
        assert where in out


def test_a_rate_off_target_is_said():
    assert rate_note(0.1, 0.098, 4096) is None
    assert rate_note(None, 21.0, 4096) is None
    under = rate_note(100, 21.17, 16384)
    assert "79% under the 100 bpp" in under and "d = 16384" in under
    assert "over the 0.1 bpp" in rate_note(0.1, 0.12, 4096)


def test_an_unreachable_rate_is_noted_on_stderr(tmp_path):
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(photo)
    r = subprocess.run([sys.executable, "-m", "vov.cli", "compress", str(photo), "-o", str(tmp_path / "x.vov"),
                        "--bpp", "100", *FAST], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "vov: note: the file is" in r.stderr and "under the 100 bpp asked for" in r.stderr


def test_info_lists_no_search_section_on_a_plain_file(capsys):
    assert cli.main(["info", str(GOLDEN / "tiny-v2-clip.vov")]) == 0
    size = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("size"))
    assert "search" not in size and "header 74 +" in size  # its 11 bytes of search fields count as header
    assert cli.main(["info", str(GOLDEN / "tiny-v2-best-of-8.vov")]) == 0
    assert "search" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith("size"))
