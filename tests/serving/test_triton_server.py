"""The Triton launcher's log: warnings and errors only, rotated at a size, written to the last byte."""

import subprocess
import sys

from vov.serving.triton_server import RotatingLog, TritonServer


def test_the_log_rotates_and_keeps_its_newest_parts(tmp_path):
    path = tmp_path / "tritonserver.log"
    writer = subprocess.Popen([sys.executable, "-c", "import sys\nfor i in range(4000):\n"
                               "    sys.stdout.write(f'{i:06d} ' + 'x' * 93 + '\\n')\n"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = RotatingLog(writer.stdout, path, max_bytes=64 * 1024, backups=2).start()
    writer.wait()
    log.join()
    parts = [path.with_name(f"{path.name}.{i}") for i in (2, 1)] + [path]
    assert all(p.exists() and p.stat().st_size <= 64 * 1024 for p in parts)
    assert not path.with_name(f"{path.name}.3").exists()
    kept = b"".join(p.read_bytes() for p in parts).decode().splitlines()[1:]  # the first may be cut
    assert kept[-1].startswith("003999 ")  # the newest line, whole
    numbers = [int(line[:6]) for line in kept]
    assert numbers == list(range(numbers[0], 4000))  # the newest parts, in order, nothing lost between them
    assert len(kept) < 4000  # the oldest were dropped


def test_triton_logs_warnings_and_errors_only(tmp_path):
    command = TritonServer(tmp_path, tmp_path, 1, 2).command()
    for flag in ("--log-info=false", "--log-verbose=0", "--log-warning=true", "--log-error=true"):
        assert flag in command
