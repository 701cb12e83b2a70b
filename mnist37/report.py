"""Sweep report: `mnist37-report PATH` (or `python -m mnist37.report PATH`).

PATH is a multirun folder, a single run folder, or `outputs/` as a whole: every job folder under it
(a folder with a `.hydra/` inside) becomes one row with the overrides that vary between jobs, its
valid accuracy and loss, epochs, train time and status, best first. Jobs that differ only by seed
are grouped into one row, mean ± standard deviation. It reads while a sweep is still running (a job
without metrics is "running") and never trusts a half-written file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

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
    try:
        lines = (folder / ".hydra" / "overrides.yaml").read_text().splitlines()
    except OSError:
        return {}
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
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return Job(folder, overrides, "running")
    if not isinstance(metrics, dict):
        return Job(folder, overrides, "running")
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
        return [float(j.metrics[key]) for j in self.jobs if isinstance(j.metrics.get(key), (int, float))]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def status(self) -> str:
        statuses = sorted({j.status for j in self.jobs})
        return statuses[0] if len(statuses) == 1 else "/".join(statuses)

    @property
    def error(self) -> str:
        return next((j.error for j in self.jobs if j.error), "")


def make_rows(jobs: list[Job]) -> tuple[list[str], list[Row]]:
    """(the override keys that vary, the rows sorted best first)."""
    keys = sorted({k for j in jobs for k in j.overrides})
    varying = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]
    columns = [k for k in varying if k != "seed"]
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.overrides.get(k, "") for k in columns), []).append(job)
    if all(len(group) == 1 for group in groups.values()):  # nothing repeats but the seed: one row a job
        columns = varying
        groups = {tuple(j.overrides.get(k, "") for k in columns): [j] for j in jobs}
    rows = [Row(dict(zip(columns, settings)), group) for settings, group in groups.items()]
    rows.sort(key=lambda r: (r.mean("valid_accuracy") is None, -(r.mean("valid_accuracy") or 0)))
    return columns, rows


def cell(row: Row, key: str) -> str:
    mean, std = row.mean(key), row.std(key)
    if mean is None:
        return "-"
    scale, digits = {"valid_accuracy": (100, 2), "valid_loss": (1, 4), "epochs": (1, 0)}.get(key, (1, 2))
    text = f"{mean * scale:.{digits}f}"
    spread = std is not None and key in ("valid_accuracy", "valid_loss")  # seeds vary these; epochs don't
    return text + (f" ± {std * scale:.{digits}f}" if spread else "")


def render(columns: list[str], rows: list[Row], fmt: str) -> str:
    header = ["", *columns, "valid_acc %", "valid_loss", "epochs", "train_s", "jobs", "status"]
    best = next((r for r in rows if r.mean("valid_accuracy") is not None), None)
    table = [
        ["*" if r is best else "", *(r.settings.get(c, "") for c in columns), *(cell(r, k) for k in METRICS),
         str(len(r.jobs)), r.status + (f": {r.error}" if r.error else "")]
        for r in rows
    ]
    if fmt == "json":
        return json.dumps([
            {"best": r is best, **r.settings, **{k: r.mean(k) for k in METRICS},
             **{f"{k}_std": r.std(k) for k in METRICS if r.std(k) is not None},
             "jobs": [str(j.folder) for j in r.jobs], "status": r.status, "error": r.error}
            for r in rows
        ], indent=2)
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
    print(render(*make_rows(jobs), args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
