"""`logger=tensorboard` (the default): curves every epoch, and each snapshot (inspection.py) as images.

Open with `tensorboard --logdir outputs`. Tags (steps are epochs):
  loss/train, loss/valid, accuracy/train, accuracy/valid   the curves
  weights/model                                            the weight images, one grid
  weights/mean3_minus_mean7                                the ideal 3 minus the ideal 7 (two digits)
  weights/template_l2_as_linear(_bias)                     model=template distance=l2 as x @ w + b
  params/<name>                                            histogram of each parameter
  explain/examples, explain/numbers                        fixed valid images taken apart (see explain.py)
  mistakes/valid, mistakes/count                           the wrong valid predictions, most confident first
  confusion/valid                                          confusion matrix, as a table
  pr_curve/valid                                           precision-recall of the first digit (two digits)
  HParams dashboard                                        the run's settings next to its final valid metrics
"""

from __future__ import annotations

from pathlib import Path

from mnist37.inspection import Snapshot
from mnist37.loggers import Logger


class TensorBoardLogger(Logger):
    takes_snapshots = True

    def __init__(self, run_dir: str | Path, purge_step: int | None = None, hparams: dict | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imported only when this logger is on

        super().__init__(run_dir)
        # purge_step: TensorBoard hides what earlier writers logged at this step and later (a resume).
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        if hparams and purge_step is None:
            self.log_hparams(hparams)

    def log_hparams(self, hparams: dict) -> None:
        """HParams dashboard entry, in this run's own folder (SummaryWriter.add_hparams would make a
        nested extra run). Its metrics are this run's own `accuracy/valid` and `loss/valid` curves."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        for summary in hparams_summaries(hparams, {"accuracy/valid": 0.0, "loss/valid": 0.0}):
            self.writer.file_writer.add_summary(summary)

    def log_epoch(self, row: dict) -> None:
        for split in ("train", "valid"):
            self.writer.add_scalar(f"loss/{split}", row[f"{split}_loss"], row["epochs"])
            self.writer.add_scalar(f"accuracy/{split}", row[f"{split}_accuracy"], row["epochs"])
        self.writer.flush()  # on disk before last.pt: a resume never misses a logged epoch

    def log_snapshot(self, snap: Snapshot) -> None:
        step, add_image = snap.step, self.writer.add_image
        if snap.weights is not None:
            add_image("weights/model", snap.weights, step)
        if snap.ideal_difference is not None:
            add_image(f"weights/{snap.ideal_difference[0]}", snap.ideal_difference[1], step)
        if snap.linear_equivalent is not None:  # the L2 template: secretly x @ w + b
            add_image("weights/template_l2_as_linear", snap.linear_equivalent[0], step)
            self.writer.add_scalar("weights/template_l2_as_linear_bias", snap.linear_equivalent[1], step)
        for name, values in snap.parameters.items():
            self.writer.add_histogram(f"params/{name}", values, step)
        self.writer.add_text("confusion/valid", snap.confusion, step)
        if snap.pr_curve is not None:
            self.writer.add_pr_curve("pr_curve/valid", *snap.pr_curve, step)
        if snap.examples is not None:
            add_image("explain/examples", snap.examples, step)
            self.writer.add_text("explain/numbers", snap.numbers, step)
        self.writer.add_scalar("mistakes/count", snap.mistake_count, step)
        if snap.mistakes is not None:
            add_image("mistakes/valid", snap.mistakes, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
