"""The run's records: schedule.csv (one row per hyper step), metrics.csv (one row per epoch) and
TensorBoard scalars. Rows are flushed as they are written; a resumed run first cuts each CSV back to
the number of rows its checkpoint had seen, so no row is ever duplicated or lost."""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Mapping, Optional, Sequence


class CsvLog:
    """Append-only CSV with a fixed header; `rows` counts the data rows written so far."""

    def __init__(self, path: str, fields: Sequence[str], keep_rows: Optional[int] = None) -> None:
        self.path, self.fields = path, list(fields)
        if keep_rows is None or not os.path.exists(path):
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)
            self.rows = 0
        else:
            self.rows = self._truncate(keep_rows)
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, self.fields)

    def _truncate(self, keep: int) -> int:
        with open(self.path, newline="") as f:
            lines = list(csv.reader(f))
        header, rows = lines[0], lines[1:]
        if header != self.fields:
            raise ValueError(f"{self.path}: header {header} differs from this run's {self.fields}")
        rows = rows[:keep]
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
        return len(rows)

    def write(self, row: Mapping[str, object]) -> None:
        self._writer.writerow({k: _fmt(row.get(k, "")) for k in self.fields})
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        self._file.close()


def _fmt(value: object) -> object:
    # repr() keeps every bit of a float, so a replay reads back exactly the recorded values.
    return repr(value) if isinstance(value, float) else value


def read_csv(path: str) -> List[Dict[str, float]]:
    """Rows of a CSV as floats where they parse (empty cells are dropped)."""
    with open(path, newline="") as f:
        out = []
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                if v == "":
                    continue
                try:
                    parsed[k] = float(v)
                except ValueError:
                    parsed[k] = v
            out.append(parsed)
        return out


def schedule_fields(names: Sequence[str]) -> List[str]:
    return ["hyper_step", "step", "epoch", "train_loss", "val_loss", *names, *(f"sigma_{n}" for n in names)]


def metrics_fields(names: Sequence[str], metric: str) -> List[str]:
    return ["epoch", "step", "lr", "train_loss", "val_loss", f"val_{metric}", "test_loss", f"test_{metric}",
            "epoch_seconds", *names]


class Records:
    """All outputs of one run directory that grow during training."""

    def __init__(self, out_dir: str, names: Sequence[str], metric: str, resume_rows: Optional[Mapping[str, int]],
                 purge_step: Optional[int]) -> None:
        keep = resume_rows or {}
        self.schedule = CsvLog(os.path.join(out_dir, "schedule.csv"), schedule_fields(names), keep.get("schedule"))
        self.metrics = CsvLog(os.path.join(out_dir, "metrics.csv"), metrics_fields(names, metric), keep.get("metrics"))
        # purge_step drops events a killed run wrote after its checkpoint (TensorBoard's resume idiom).
        from torch.utils.tensorboard import SummaryWriter  # tensorboard is slow to import: only when writing

        self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=purge_step)

    def rows(self) -> Dict[str, int]:
        return {"schedule": self.schedule.rows, "metrics": self.metrics.rows}

    def close(self) -> None:
        self.schedule.close()
        self.metrics.close()
        self.tb.close()
