"""The progress bars a person sees: a fit's (one bar per clip and stage) and a decode's sampler steps.

The command and the service client draw through these two, so a local and a remote run look alike.
"""

from __future__ import annotations


class FitBars:
    """One bar per clip and stage (fitting, then the best-of-N search), made at the stage's first step.

    Call `update` for each step, or call the object with a `vov.method.fit.Progress`."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar, self.key = quiet, None, None

    def __call__(self, p) -> None:
        self.update(step=p.step, total=p.total, stage=p.stage, loss=p.distortion, est_bits=p.est_bits, clip=p.clip,
                    clips=p.clips)

    def update(self, *, step: int, total: int, stage: int, loss: float, est_bits: float = 0.0, clip: int = 1,
               clips: int = 1) -> None:
        """`stage` 1 (fit) or 2 (fit with the rate term) shows the loss and the estimate; 3 is the search."""
        searching = stage == 3
        if (clip, searching) != self.key:
            from tqdm import tqdm

            self.close()
            what = "searching" if searching else "fitting"
            of = f" clip {clip}/{clips}" if clips > 1 else ""
            self.bar = tqdm(total=total, initial=max(0, step - 1), desc=f"{what}{of}", unit="step",
                            disable=self.quiet, dynamic_ncols=True)
            self.key = (clip, searching)
        self.bar.total = total
        self.bar.update(max(0, step - self.bar.n))
        if not searching:
            extra = {"stage": stage, "loss": f"{loss:.4f}"}
            if est_bits:
                extra["est"] = f"{est_bits / 8:.0f}B"
            self.bar.set_postfix(extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "FitBars":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StepBar:
    """A decode's `on_step(step, total)` as one bar, made at the first step and closed on exit."""

    def __init__(self, quiet: bool, what: str = "decoding"):
        self.quiet, self.what, self.bar = quiet, what, None

    def __call__(self, step: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.what, unit="step", disable=self.quiet, dynamic_ncols=True)
        self.bar.update(max(0, step - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "StepBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
