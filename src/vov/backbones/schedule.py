"""The sampler's time grid a backbone asks for: an id and a flow shift, both of which a file records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vov.errors import UsageError

SCHEDULE_UNIFORM = 0  # t uniform in [0, 1]: format version 1's only schedule
SCHEDULE_FLOW_SHIFT = 1  # s uniform, t = shift s / (1 + (shift - 1) s): Wan's and Qwen-Image's family
SCHEDULES = {SCHEDULE_UNIFORM: "uniform", SCHEDULE_FLOW_SHIFT: "flow-shift"}
MAX_SHIFT = 64.0


@dataclass(frozen=True)
class Schedule:
    """The sampler's time grid: an id the file records, and its one parameter (the flow shift).

    A shift above 1 spends more of the steps at high noise. Wan2.1 samples with shift 3 at 480p
    (its scheduler config's `flow_shift`); Qwen-Image's shift grows with the image's token count
    (`exp(mu)` of its scheduler); the embedded backbone uses the uniform grid.
    """

    id: int = SCHEDULE_UNIFORM
    shift: float = 1.0

    def __post_init__(self):
        if self.id not in SCHEDULES:
            raise UsageError(f"unknown schedule id {self.id}; known: {', '.join(map(str, SCHEDULES))}")
        if not (np.isfinite(self.shift) and 1.0 / MAX_SHIFT <= self.shift <= MAX_SHIFT):
            raise UsageError(f"flow shift must be between 1/{MAX_SHIFT:g} and {MAX_SHIFT:g}, not {self.shift}")
        if self.id == SCHEDULE_UNIFORM and self.shift != 1.0:
            raise UsageError("the uniform schedule has no shift")

    @property
    def name(self) -> str:
        return SCHEDULES[self.id]

    def times(self, steps: int) -> np.ndarray:
        """steps + 1 times from 1 down to 0, as float32 (the grid of vov.method.scheduler)."""
        from vov.method.scheduler import timesteps

        return timesteps(steps, self.id, self.shift)

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "shift": self.shift}
