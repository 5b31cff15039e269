"""What a person watches: a tqdm bar per epoch (loss and a few live hyperparameters) and one summary
line per epoch."""
from __future__ import annotations

import sys
from typing import Mapping, Optional, Sequence

from tqdm.auto import tqdm


def short(name: str) -> str:
    """dropout_conv1 → d_conv1, cutout_length → c_length: keeps the bar on one line."""
    head, _, rest = name.partition("_")
    return f"{head[0]}_{rest}" if rest else name


class Progress:
    """enabled: the tqdm bars; lines: the messages and epoch summaries (printed without a bar); a distributed
    run's other ranks have neither."""

    def __init__(self, enabled: bool, epochs: int, live: Sequence[str], lines: bool = True) -> None:
        self.enabled, self.epochs, self.live, self.lines = enabled, epochs, list(live)[:3], lines
        self.bar: Optional[tqdm] = None

    def start_epoch(self, epoch: int, total: int, done: int) -> None:
        if self.enabled:
            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                            dynamic_ncols=True, file=sys.stderr)

    def step(self, loss: float, values: Mapping[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            # set_postfix refreshes at tqdm's own rate (mininterval), not at every step.
            self.bar.set_postfix({"loss": f"{loss:.3f}", **{short(n): f"{values[n]:.3g}" for n in self.live}},
                                 refresh=False)

    def end_epoch(self, line: str) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.message(line)

    def message(self, line: str) -> None:
        if self.enabled:
            tqdm.write(line, file=sys.stderr)
        elif self.lines:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
