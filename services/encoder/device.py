"""Truthful health for the encoder: SERVING only while its GPU computes.

After a sticky CUDA error (an illegal memory access, an ECC or Xid fault) every later fit on that
device fails, while the process and its port stay up. A watcher thread runs a tiny computation on
the encoder's device every `interval` seconds, and at once when a call reports a CUDA failure
(`report_failure`). When it fails, health turns NOT_SERVING (no new fits reach the pod) and the
server stops, so the container restarts on a fresh CUDA context: a sticky error does not clear in
the process that hit it. On the CPU there is nothing to watch.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ..common import event


def is_device_failure(error: BaseException) -> bool:
    """Whether an exception of a fit comes from the CUDA device rather than from the request."""
    import torch

    accelerator = getattr(torch, "AcceleratorError", ())
    return isinstance(error, accelerator) or (isinstance(error, RuntimeError) and "CUDA error" in str(error))


def cuda_check(device) -> Callable[[], None]:
    """A computation on `device` whose result is checked; it raises on a broken device."""
    def check() -> None:
        import torch

        x = torch.arange(8, dtype=torch.float32, device=device)
        if float((x * 2).sum().item()) != 56.0:
            raise RuntimeError(f"the device {device} computed a wrong sum")
        torch.cuda.synchronize(device)
    return check


class DeviceWatch:
    def __init__(self, check: Callable[[], None], set_serving: Callable[[bool], None], stop: Callable[[], None],
                 log: logging.Logger, interval: float = 15.0, what: str = "cuda"):
        self.check_device, self.set_serving, self.stop_server, self.log = check, set_serving, stop, log
        self.interval, self.what = interval, what
        self.failed: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-watch", daemon=True)

    def start(self) -> "DeviceWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def report_failure(self) -> None:
        """A fit just failed on the device: check it at once."""
        self._wake.set()

    def check(self) -> bool:
        try:
            self.check_device()
            return True
        except Exception as e:  # any failure of the device means "cannot fit"
            self.failed = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        self.set_serving(False)
        event(self.log, "device failed: not serving, stopping for a restart", level=logging.ERROR,
              device=self.what, reason=self.failed)
        self._stop.set()
        threading.Thread(target=self.stop_server, daemon=True).start()
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set() or not self.check():
                return
