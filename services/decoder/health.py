"""Truthful health for the decoder: SERVING only while its engine can really serve.

A watcher thread probes the engine every `interval` seconds. For Triton a probe asks whether the
server and both models are ready (cheap), and runs a canary inference (a 4x4 latent through the
denoiser and the latent decoder) whenever the decoder is not SERVING and every `canary_every`
seconds while it is: Triton can report itself ready while a model's backend process is dead, and
only an inference shows it. A call that fails with UNAVAILABLE reports it here at once
(`report_failure`), so the next probe runs the canary. States go to gRPC health checking for the
overall server ("") and the decoder service (`Server.set_serving`).
"""

from __future__ import annotations

import logging
import threading
import time

from .. import metrics
from ..common import event


class EngineWatch:
    def __init__(self, engine, set_serving, log: logging.Logger, interval: float = 1.0, canary_every: float = 15.0):
        self.engine, self.set_serving, self.log = engine, set_serving, log
        self.interval, self.canary_every = interval, canary_every
        self.serving: bool | None = None
        self.reason = "not checked yet"
        self._last_canary = 0.0
        self._failed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-watch", daemon=True)

    def start(self) -> "EngineWatch":
        self.check()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def report_failure(self) -> None:
        """A call just found the engine unavailable: check again at once, with a canary."""
        self._failed.set()

    def check(self) -> bool:
        now = time.monotonic()
        canary = (not self.serving or self._failed.is_set() or now - self._last_canary >= self.canary_every)
        self._failed.clear()
        try:
            self.engine.probe(canary=canary)
            if canary:
                self._last_canary = now
            ok, reason = True, ""
        except Exception as e:  # every failure of the engine means "cannot serve"; the reason is logged
            ok, reason = False, str(e).splitlines()[0][:300] if str(e) else e.__class__.__name__
        metrics.engine_checked(ok, canary)
        if ok != self.serving:
            self.set_serving(ok)
            event(self.log, "engine serving" if ok else "engine not serving", level=logging.INFO if ok else logging.WARNING,
                  engine=self.engine.describe(), reason=reason or None)
        self.serving, self.reason = ok, reason
        return ok

    def _run(self) -> None:
        while not self._stop.is_set():
            self._failed.wait(self.interval)
            if self._stop.is_set():
                return
            self.check()
