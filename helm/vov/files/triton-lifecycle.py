"""Triton's readiness and drain, run in NVIDIA's Triton image (Python 3, standard library only).

  python3 triton-lifecycle.py ready --http-port 8000
      exit 0 when this Triton takes new work: not draining, and /v2/health/ready answers 200
      (the pod's readiness probe).
  python3 triton-lifecycle.py drain --metrics-port 8002 [--leave 5] [--quiet 15] [--max 900]
      the pod's preStop hook: from its first moment `ready` fails, so the pod leaves its Services and
      no new sequence is sent to it; it waits `--leave` seconds while the endpoints are updated, then
      until no request of any model has finished or waited for `--quiet` seconds (longer than the
      longest single request: a denoiser step or a latent decode at the largest served shape), and
      returns; only then does Kubernetes signal Triton. After `--max` seconds it returns whatever is
      in flight.

Why: on SIGTERM Triton 24.10 stops its schedulers at once, so the session model's calls to the
denoiser fail ("Server is stopping") and every decode in flight dies, while its gRPC listener still
takes new sequences; `--exit-timeout-secs` protects nothing. Triton's metrics (port 8002) count
finished requests per model and the requests waiting; a decode in flight shows as requests every
few seconds, so a quiet Triton has no decode in flight.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import urllib.error
import urllib.request

MARKER = "/tmp/vov-draining"  # on the pod's /tmp volume: its presence fails `ready`
ACTIVITY = re.compile(r"^nv_inference_(request_success|request_failure|pending_request_count)\{[^}]*\}\s+(\S+)$", re.M)


def log(message: str) -> None:
    """To the container's log (PID 1's stdout) when this runs as a hook, else to stderr."""
    line = f"triton-lifecycle: {message}\n"
    try:
        with open("/proc/1/fd/1", "a") as out:
            out.write(line)
    except OSError:
        sys.stderr.write(line)


def ready(http_port: int, marker: str) -> int:
    if os.path.exists(marker):
        print("draining")
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=3) as reply:
            return 0 if reply.status == 200 else 1
    except (urllib.error.URLError, OSError) as e:
        print(f"not ready: {e}")
        return 1


def activity(metrics_port: int) -> tuple[float, float] | None:
    """(requests finished so far, requests waiting now) over every model; None if unreadable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=3) as reply:
            text = reply.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None
    finished = waiting = 0.0
    for name, value in ACTIVITY.findall(text):
        if name == "pending_request_count":
            waiting += float(value)
        else:
            finished += float(value)
    return finished, waiting


def drain(metrics_port: int, marker: str, leave: float, quiet: float, limit: float, poll: float = 0.5) -> int:
    start = time.monotonic()
    with open(marker, "w") as f:
        f.write(f"{time.time():.3f}\n")
    log(f"draining: out of the Service; waiting {leave:g} s, then for {quiet:g} s without requests (at most {limit:g} s)")
    time.sleep(max(0.0, min(leave, limit)))
    last, quiet_since = None, time.monotonic()
    while True:
        now = time.monotonic()
        if now - start >= limit:
            log(f"drained by the limit after {now - start:.1f} s: requests may still be in flight")
            return 0
        seen = activity(metrics_port)
        if seen is None:  # Triton no longer answers: nothing left to wait for
            log(f"Triton's metrics do not answer after {now - start:.1f} s; drain over")
            return 0
        if seen != last or seen[1] > 0:
            last, quiet_since = seen, now
        elif now - quiet_since >= quiet:
            log(f"drained after {now - start:.1f} s: no request for {quiet:g} s")
            return 0
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("ready")
    check.add_argument("--http-port", type=int, default=8000)
    out = commands.add_parser("drain")
    out.add_argument("--metrics-port", type=int, default=8002)
    out.add_argument("--leave", type=float, default=5.0)
    out.add_argument("--quiet", type=float, default=15.0)
    out.add_argument("--max", type=float, default=900.0)
    for p in (check, out):
        p.add_argument("--marker", default=MARKER)
    args = parser.parse_args(argv)
    if args.command == "ready":
        return ready(args.http_port, args.marker)
    return drain(args.metrics_port, args.marker, args.leave, args.quiet, args.max)


if __name__ == "__main__":
    sys.exit(main())
