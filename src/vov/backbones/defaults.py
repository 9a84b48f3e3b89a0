"""What a compress uses on a backbone when no option says otherwise: adapter and fitting defaults, as plain data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdapterDefaults:
    """What a compress without adapter options uses on this backbone."""

    rank: int = 4
    d: int = 16384
    targets: str = ""  # a preset id of the backbone
    seed: int = 0  # the hash's seed (peft's proj_seed)


@dataclass(frozen=True)
class FitDefaults:
    """The fitting settings this backbone was tuned (or published) with."""

    lr_stage1: float = 2e-2  # the embedded backbone: 3e-3 / 1e-2 / 3e-2 gave 12.2 / 13.9 / 15.4 dB after 300 steps
    lr_stage2: float = 1e-2
    stage1_steps: int = 800
    stage2_steps: int = 400
    weight_decay: float = 0.0
    init_bound: float = 0.02
    lambda_ramp: int = 100
    gradient_checkpointing: bool = False  # worth it at this backbone's usual sizes
    note: str = ""

    @property
    def steps(self) -> int:
        return self.stage1_steps + self.stage2_steps
