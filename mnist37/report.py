"""Sweep report: `mnist37-report PATH` (or `python -m mnist37.report PATH`).

PATH is a multirun folder, a single run folder, or `outputs/` as a whole: every job folder under it
(a folder with a `.hydra/` inside) becomes one row with the overrides that vary between jobs, its
valid accuracy and loss, epochs, train time and status, best first. Jobs that differ only by seed
(and have the same status) are grouped into one row, mean ± standard deviation. It reads while a
sweep is still running: a job without metrics is "running" while its process holds the folder, and
"crashed" once no process does. It never trusts a file: a half-written one, something that is not a
regular file, NaN or an absurd number are reported as what they are, and NaN is never "best".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mnist37.run_folder import LOCK_NAME, is_held, read_metrics, read_regular

METRICS = ("valid_accuracy", "valid_loss", "epochs", "train_seconds")
NOT_SETTINGS = {"trainer.resume", "data.root", "hydra.run.dir"}  # where a run lives, not what it is


@dataclass
class Job:
    folder: Path
    overrides: dict[str, str]
    status: str  # completed, failed, diverged, interrupted or running
    metrics: dict = field(default_factory=dict)
    error: str = ""


def read_overrides(folder: Path) -> dict[str, str]:
    """The job's command-line overrides, from Hydra's .hydra/overrides.yaml ("key=value" lines)."""
    text = read_regular(folder / ".hydra" / "overrides.yaml")
    if text is None:
        return {}
    lines = text.splitlines()
    overrides = {}
    for line in lines:
        item = line.removeprefix("- ").strip().strip("'\"")
        if "=" in item:
            key, value = item.split("=", 1)
            if key.lstrip("+~") not in NOT_SETTINGS:
                overrides[key.lstrip("+~")] = value
    return overrides


def read_job(folder: Path) -> Job:
    overrides = read_overrides(folder)
    # No metrics yet: running while a process holds the folder; crashed once none does (a run that
    # took its lock and died before writing metrics.json, e.g. killed).
    unfinished = "crashed" if (folder / LOCK_NAME).exists() and not is_held(folder) else "running"
    if (folder / "metrics.json").exists() and not (folder / "metrics.json").is_file():
        return Job(folder, overrides, "failed", error="metrics.json is not a regular file")
    metrics = read_metrics(folder)
    if metrics is None:
        return Job(folder, overrides, unfinished)
    status = str(metrics.get("status", "completed"))
    error = (str(metrics.get("error", "")).splitlines() or [""])[0]
    return Job(folder, overrides, status, metrics, error)


def find_jobs(path: Path) -> list[Job]:
    """Every job folder at or under `path`, in name order."""
    if (path / ".hydra").is_dir():
        return [read_job(path)]
    folders = sorted({p.parent.parent for p in path.rglob(".hydra/overrides.yaml")}, key=str)
    return [read_job(folder) for folder in folders]


@dataclass
class Row:
    """One line of the report: a job, or jobs that differ only by seed."""

    settings: dict[str, str]
    jobs: list[Job]

    def values(self, key: str) -> list[float]:
        return [number(j.metrics[key]) for j in self.jobs
                if isinstance(j.metrics.get(key), (int, float)) and not isinstance(j.metrics.get(key), bool)]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        if not values:
            return None
        if not all(math.isfinite(v) for v in values):  # NaN or inf says more than any average of it
            return next(v for v in values if math.isnan(v)) if any(map(math.isnan, values)) else max(values, key=abs)
        return statistics.fmean(values)

    def std(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.stdev(values) if len(values) > 1 and all(map(math.isfinite, values)) else None

    @property
    def status(self) -> str:
        statuses = sorted({j.status for j in self.jobs})
        return statuses[0] if len(statuses) == 1 else "/".join(statuses)

    @property
    def error(self) -> str:
        return next((j.error for j in self.jobs if j.error), "")


def number(value: int | float) -> float:
    """`value` as a float; an int too large for one (a 400-digit epochs) becomes inf."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def rank(row: Row) -> tuple:
    """Sort key, best first: completed rows with a finite valid accuracy, by it; then the others (an
    interrupted run's accuracy is that of an unfinished model) by it; then those without one."""
    accuracy = row.mean("valid_accuracy")
    finite = accuracy is not None and math.isfinite(accuracy)
    return (not finite, row.status != "completed", -accuracy if finite else 0.0)


def make_rows(jobs: list[Job]) -> tuple[list[str], list[Row]]:
    """(the override keys that vary, the rows sorted best first)."""
    keys = sorted({k for j in jobs for k in j.overrides})
    varying = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]
    columns = [k for k in varying if k != "seed"]
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:  # a completed and an interrupted job are not two samples of one thing
        groups.setdefault((*(job.overrides.get(k, "") for k in columns), job.status), []).append(job)
    if all(len(group) == 1 for group in groups.values()):  # nothing repeats but the seed: one row a job
        columns = varying
        groups = {(*(j.overrides.get(k, "") for k in columns), j.status): [j] for j in jobs}
    rows = [Row(dict(zip(columns, key)), group) for key, group in groups.items()]
    rows.sort(key=rank)
    return columns, rows


def cell(row: Row, key: str) -> str:
    mean, std = row.mean(key), row.std(key)
    if mean is None:
        return "-"
    if not math.isfinite(mean):
        return str(mean)  # nan, inf, -inf
    scale, digits = {"valid_accuracy": (100, 2), "valid_loss": (1, 4), "epochs": (1, 0)}.get(key, (1, 2))
    text = f"{mean * scale:.{digits}f}"
    spread = std is not None and key in ("valid_accuracy", "valid_loss")  # seeds vary these; epochs don't
    return text + (f" ± {std * scale:.{digits}f}" if spread else "")


def plain(value: float | None) -> float | str | None:
    """JSON has no NaN or Infinity: those become the strings "nan", "inf", "-inf"."""
    return str(value) if value is not None and not math.isfinite(value) else value


def render(columns: list[str], rows: list[Row], fmt: str) -> str:
    header = ["", *columns, "valid_acc %", "valid_loss", "epochs", "train_s", "jobs", "status"]
    best = next((r for r in rows if r.status == "completed" and not rank(r)[0]), None)
    table = [
        ["*" if r is best else "", *(r.settings.get(c, "") for c in columns), *(cell(r, k) for k in METRICS),
         str(len(r.jobs)), r.status + (f": {r.error}" if r.error else "")]
        for r in rows
    ]
    if fmt == "json":
        return json.dumps([
            {"best": r is best, **r.settings, **{k: plain(r.mean(k)) for k in METRICS},
             **{f"{k}_std": r.std(k) for k in METRICS if r.std(k) is not None},
             "jobs": [str(j.folder) for j in r.jobs], "status": r.status, "error": r.error}
            for r in rows
        ], indent=2, allow_nan=False)
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out).writerows([["best", *header[1:]], *table])
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = [header, ["---"] * len(header), *table]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [header, *table])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist37-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", default="outputs", help="a multirun folder, a run folder or outputs/")
    parser.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")
    args = parser.parse_args(argv)
    path = Path(args.path)
    if not path.is_dir():
        print(f"mnist37-report: error: {path} is not a folder: give a multirun folder, a run folder or outputs/",
              file=sys.stderr)
        return 2
    jobs = find_jobs(path)
    if not jobs:
        print(f"mnist37-report: error: no runs under {path} (a run folder holds .hydra/overrides.yaml)",
              file=sys.stderr)
        return 2
    try:
        print(render(*make_rows(jobs), args.format), flush=True)
    except BrokenPipeError:  # `mnist37-report | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
