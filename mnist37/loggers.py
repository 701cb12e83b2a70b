"""Loggers, a config group (`logger=tensorboard`, the default; `logger=csv`; `logger=none`).

A logger gets each epoch's row (the columns of metrics.json, so far) and, if it takes them, each
snapshot (inspection.py: computed once, whichever loggers are on). A new one is a subclass of
`Logger` and a YAML file in configs/logger/ naming it; `instantiate_loggers` builds what the config
lists, as lightning-hydra-template does.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mnist37.inspection import Snapshot


class Logger:
    """The interface, with do-nothing defaults. Built with the run folder, `purge_step` (on a
    resume: the first epoch to log again; anything logged from it on is stale) and the run's
    settings, flat, as TensorBoard's HParams take them."""

    takes_snapshots = False  # whether snapshots are worth computing for this logger

    def __init__(self, run_dir: str | Path, purge_step: int | None = None, hparams: dict | None = None):
        self.run_dir = Path(run_dir)

    def log_epoch(self, row: dict) -> None:
        """After each epoch, before last.pt is written: what is logged here survives a kill."""

    def log_snapshot(self, snap: Snapshot) -> None:
        """Every inspect.every epochs and at the end, if `takes_snapshots`."""

    def close(self) -> None:
        """The run is over (completed, stopped or failed)."""


class CSVLogger(Logger):
    """metrics.csv in the run folder: one row per epoch with the columns of metrics.json, for a
    spreadsheet, pandas or a plot script. A resumed run keeps the rows of the epochs it had saved."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None, hparams: dict | None = None):
        super().__init__(run_dir)
        self.path = self.run_dir / "metrics.csv"
        self.columns: list[str] | None = None
        if purge_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if row.get("epochs", "").isdigit()
                        and int(row["epochs"]) < purge_step]
            self.columns = list(kept[0]) if kept else None
            self.write(kept, mode="w")
        elif self.path.exists():
            self.path.unlink()  # a fresh run in a folder that held a failed one

    def log_epoch(self, row: dict) -> None:
        self.write([row], mode="a")

    def write(self, rows: list[dict], mode: str) -> None:
        new = self.columns is None
        self.columns = self.columns or (list(rows[0]) if rows else None)
        with open(self.path, mode, newline="") as f:
            if self.columns is None:
                return
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new or mode == "w":
                writer.writeheader()
            writer.writerows(rows)


def instantiate_loggers(config, run_dir: Path, purge_step: int | None, hparams: dict) -> list[Logger]:
    """One logger per entry of the `logger` config node (none for logger=none)."""
    from hydra.utils import instantiate

    return [instantiate(node, run_dir=run_dir, purge_step=purge_step, hparams=hparams, _convert_="all")
            for node in (config or {}).values()]
