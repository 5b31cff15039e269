"""The run's records: schedule.csv (one row per hyper step), metrics.csv (one row per epoch) and
TensorBoard scalars. Rows are flushed as they are written; a resumed run first cuts each CSV back to
the number of rows its checkpoint had seen, so no row is ever duplicated or lost. A CSV that cannot give
those rows back (missing, another header, a damaged row) stops the resume with a message instead of
being silently shortened."""
from __future__ import annotations

import csv
import io
import os
from typing import Dict, List, Mapping, Optional, Sequence

from .files import replace_atomically, with_path
from .rundir import RunDirectoryError


class CsvLog:
    """Append-only CSV with a fixed header; `rows` counts the data rows written so far.

    kept: the data rows to start from (a resume's, from `kept_rows`); None starts a new file."""

    def __init__(self, path: str, fields: Sequence[str], kept: Optional[List[List[str]]] = None) -> None:
        self.path, self.fields = path, list(fields)
        text = io.StringIO()
        csv.writer(text).writerows([self.fields, *(kept or [])])
        replace_atomically(path, [text.getvalue().encode("utf-8")])
        self.rows = len(kept or [])
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, self.fields)

    def write(self, row: Mapping[str, object]) -> None:
        try:
            self._writer.writerow({k: _fmt(row.get(k, "")) for k in self.fields})
            self._file.flush()
        except OSError as err:
            raise with_path(err, self.path) from err
        self.rows += 1

    def close(self) -> None:
        self._file.close()


def kept_rows(path: str, fields: Sequence[str], keep: int) -> List[List[str]]:
    """The first `keep` data rows of an existing CSV, checked (header, whole rows, numbers); rows after them
    are what a killed run wrote after its checkpoint, and are dropped."""
    advice = "restore the file, or start the run over with --overwrite"
    if not os.path.exists(path):
        if keep:
            raise RunDirectoryError(f"{path} is missing, but the checkpoint has seen {keep} rows of it; {advice}")
        return []
    try:
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
    except (csv.Error, UnicodeDecodeError) as err:
        raise RunDirectoryError(f"{path} is damaged ({err}); {advice}") from None
    if not lines or lines[0] != list(fields):
        raise RunDirectoryError(f"{path} is damaged: its header is not this run's ({', '.join(fields)}); {advice}")
    rows = lines[1:keep + 1]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(fields) or not all(_is_number(cell) for cell in row):
            raise RunDirectoryError(f"{path} is damaged at line {number} (expected {len(fields)} numbers); {advice}")
    if len(rows) < keep:
        raise RunDirectoryError(f"{path} holds {len(rows)} rows, but the checkpoint has seen {keep}; {advice}")
    return rows


def _is_number(cell: str) -> bool:
    if cell == "":
        return True
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _fmt(value: object) -> object:
    # repr() keeps every bit of a float, so a replay reads back exactly the recorded values.
    return repr(value) if isinstance(value, float) else value


def read_csv(path: str, required: Sequence[str] = ()) -> List[Dict[str, float]]:
    """Rows of a CSV as floats where they parse (empty cells are dropped); every row must hold a number in
    each of the `required` columns (RunDirectoryError naming the file and line otherwise)."""
    try:
        with open(path, newline="") as f:
            out = []
            for row in csv.DictReader(f):
                parsed = {}
                for k, v in row.items():
                    if v == "" or v is None or k is None:
                        continue
                    try:
                        parsed[k] = float(v)
                    except (TypeError, ValueError):
                        parsed[k] = v
                out.append(parsed)
    except (csv.Error, UnicodeDecodeError) as err:
        raise RunDirectoryError(f"{path} is damaged ({err})") from None
    for number, row in enumerate(out, start=2):
        missing = [k for k in required if not isinstance(row.get(k), float)]
        if missing:
            raise RunDirectoryError(f"{path} is damaged at line {number}: no number in column {missing[0]!r}")
    return out


def schedule_fields(names: Sequence[str]) -> List[str]:
    return ["hyper_step", "step", "epoch", "train_loss", "val_loss", *names, *(f"sigma_{n}" for n in names)]


def metrics_fields(names: Sequence[str], metric: str) -> List[str]:
    return ["epoch", "step", "lr", "train_loss", "val_loss", f"val_{metric}", "test_loss", f"test_{metric}",
            "epoch_seconds", *names]


class Records:
    """All outputs of one run directory that grow during training. resume_rows: the row counts a resumed
    checkpoint has seen (both files are checked before either is touched); None starts new files."""

    def __init__(self, out_dir: str, names: Sequence[str], metric: str, resume_rows: Optional[Mapping[str, int]],
                 purge_step: Optional[int]) -> None:
        paths = {"schedule": os.path.join(out_dir, "schedule.csv"), "metrics": os.path.join(out_dir, "metrics.csv")}
        fields = {"schedule": schedule_fields(names), "metrics": metrics_fields(names, metric)}
        kept = {k: None if resume_rows is None else kept_rows(paths[k], fields[k], resume_rows.get(k, 0))
                for k in paths}
        self.schedule = CsvLog(paths["schedule"], fields["schedule"], kept["schedule"])
        self.metrics = CsvLog(paths["metrics"], fields["metrics"], kept["metrics"])
        # purge_step drops events a killed run wrote after its checkpoint (TensorBoard's resume idiom).
        from torch.utils.tensorboard import SummaryWriter  # tensorboard is slow to import: only when writing

        self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=purge_step)

    def rows(self) -> Dict[str, int]:
        return {"schedule": self.schedule.rows, "metrics": self.metrics.rows}

    def close(self) -> None:
        self.schedule.close()
        self.metrics.close()
        self.tb.close()
