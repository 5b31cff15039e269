"""Replay: plain (fixed-mode) training that follows a recorded hyperparameter schedule step by step."""
from __future__ import annotations

import bisect
import os
from typing import Dict, List, Optional, Sequence

from ..hyper import Hyper
from .records import read_csv


class Schedule:
    """Piecewise-constant values: a hyper step recorded after training step s sets the values used
    from training step s + 1 on; before the first recorded hyper step the initial values hold."""

    def __init__(self, rows: List[Dict[str, float]], names: Sequence[str]) -> None:
        missing = [n for n in names if rows and n not in rows[0]]
        if missing:
            raise ValueError(f"schedule: no column for hyperparameters {missing}")
        self.names = list(names)
        self.steps = [int(r["step"]) for r in rows]
        self.values = [{n: float(r[n]) for n in names} for r in rows]

    @classmethod
    def from_run(cls, run_dir: str, names: Sequence[str]) -> "Schedule":
        path = os.path.join(run_dir, "schedule.csv")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{run_dir}: no schedule.csv to replay")
        return cls(read_csv(path, required=("step", *names)), names)

    def __len__(self) -> int:
        return len(self.steps)

    def row_at(self, steps_done: int) -> int:
        """The index of the row whose values the training step after `steps_done` completed steps uses (-1: the
        initial values)."""
        return bisect.bisect_right(self.steps, steps_done) - 1

    def values_at(self, steps_done: int) -> Optional[Dict[str, float]]:
        """The values for the training step that follows `steps_done` completed steps (None: initial)."""
        i = self.row_at(steps_done)
        return None if i < 0 else self.values[i]


def unconstrained(hyper: Hyper, value: float) -> float:
    """T⁻¹(value), with the value nudged inside the open range: a float32 sigmoid can land exactly on
    a bound, where the inverse is infinite."""
    span = (hyper.high - hyper.low) if hyper.low is not None and hyper.high is not None else 1.0
    margin = 1e-7 * span
    if hyper.low is not None:
        value = max(value, hyper.low + margin)
    if hyper.high is not None:
        value = min(value, hyper.high - margin)
    return hyper.unconstrain(value)
