"""TensorBoard logging: curves, weight images, and what the model does to single images.

Open with `tensorboard --logdir outputs`. Curves are written every epoch; everything else is a
snapshot, written every `every` epochs and at the end, because drawing images costs far more than
an epoch of this model's training. Tags (steps are epochs):
  loss/train, loss/valid, accuracy/train, accuracy/valid   the curves
  weights/model                                            the weight images, one grid
  weights/mean3_minus_mean7                                the ideal 3 minus the ideal 7 (two digits, once)
  weights/template_l2_as_linear(_bias)                     model=template distance=l2 as x @ w + b
  params/<name>                                            histogram of each parameter (snapshot)
  explain/examples, explain/numbers                        fixed valid images taken apart (see explain.py)
  mistakes/valid, mistakes/count                           the wrong valid predictions, most confident first
  confusion/valid                                          confusion matrix, as a table
  pr_curve/valid                                           precision-recall of the first digit (two digits)
  HParams dashboard                                        the run's settings next to its final valid metrics
"""

from __future__ import annotations

from pathlib import Path

import torch

from mnist37.data import Digits
from mnist37.explain import (
    as_tensor, confusion_markdown, confusion_matrix, explain, mistakes_grid, predictions, render_sheet, signed_rgb,
)
from mnist37.models import Classifier, TemplateModel
from mnist37.loop import EpochMetrics

MAX_EXAMPLES = 16


def weight_grid(model: Classifier) -> torch.Tensor:
    """All of the model's weight images as one (3, H, W) grid, separated by grey lines."""
    from torchvision.utils import make_grid

    images = signed_rgb(model.weight_images())
    return make_grid(images, nrow=min(len(images), 10), padding=2, pad_value=0.5)


def example_rows(data: Digits, per_digit: int) -> torch.Tensor:
    """The same valid images every epoch: the first `per_digit` of each digit (at most 16 in all)."""
    per_digit = max(1, min(per_digit, MAX_EXAMPLES // len(data.digits)))
    y = data.valid.y
    return torch.cat([(y == k).nonzero().flatten()[:per_digit] for k in range(len(data.digits))])


def numbers_table(explanations, truths) -> str:
    """Markdown, one row per card: a column per number, or (when the cards' numbers differ, as
    with more digits: each names its own predicted digit and runner-up) one summary column."""
    keys = list(explanations[0].numbers)
    if any(list(e.numbers) != keys for e in explanations):
        rows = [f"| {i} | {t} | {e.summary()} |" for i, (e, t) in enumerate(zip(explanations, truths))]
        return "\n".join(["| # | true | numbers |", "|---|---|---|", *rows])
    rows = [f"| {i} | {t} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in e.numbers.values())
            + " |" for i, (e, t) in enumerate(zip(explanations, truths))]
    return "\n".join(["| # | true | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2), *rows])


class TensorBoardLogger:
    """Called after every epoch by `mnist37.loop.train` (as `on_epoch_end`); `finish` at the end."""

    def __init__(self, log_dir: str | Path, data: Digits, purge_step: int | None = None,
                 examples_per_digit: int = 8, every: int = 20, hparams: dict | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imported only when logging is on

        # purge_step: TensorBoard hides what earlier writers logged at this step and later (a resume).
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        if hparams and purge_step is None:
            self.log_hparams(hparams)
        self.data = data
        self.examples = example_rows(data, examples_per_digit) if examples_per_digit else None
        self.every = every
        self.last_snapshot = 0
        if len(data.digits) == 2 and purge_step is None:
            probe = TemplateModel(data.digits).to(data.train.x.device)
            probe.fit(data.train.x, data.train.y)
            first, second = probe.weight_images()
            self.writer.add_image(f"weights/mean{data.digits[0]}_minus_mean{data.digits[1]}",
                                  signed_rgb((first - second)[None])[0], 0)

    def log_hparams(self, hparams: dict) -> None:
        """HParams dashboard entry, in this run's own folder (SummaryWriter.add_hparams would make a
        nested extra run). Its metrics are this run's own `accuracy/valid` and `loss/valid` curves."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        for summary in hparams_summaries(hparams, {"accuracy/valid": 0.0, "loss/valid": 0.0}):
            self.writer.file_writer.add_summary(summary)

    def __call__(self, metrics: EpochMetrics, model: Classifier) -> None:
        step = metrics.epoch
        for split in ("train", "valid"):
            self.writer.add_scalar(f"loss/{split}", getattr(metrics, f"{split}_loss"), step)
            self.writer.add_scalar(f"accuracy/{split}", getattr(metrics, f"{split}_accuracy"), step)
        if self.every and step % self.every == 0:
            self.snapshot(model, step)
        self.writer.flush()  # on disk before last.pt: a resume never misses a logged epoch

    def snapshot(self, model: Classifier, step: int) -> None:
        """Weight images, histograms, explained examples, mistakes, confusion and PR curve."""
        self.last_snapshot = step
        if model.weight_images() is not None:
            self.writer.add_image("weights/model", weight_grid(model), step)
        if (equivalent := model.linear_equivalent()) is not None:  # the L2 template: secretly x @ w + b
            weights, bias = equivalent
            self.writer.add_image("weights/template_l2_as_linear", signed_rgb(weights.reshape(1, 28, 28))[0], step)
            self.writer.add_scalar("weights/template_l2_as_linear_bias", bias, step)
        for name, param in model.named_parameters():
            values = param.detach().cpu()
            if values.isfinite().all() and values.abs().max() < 1e15:  # TensorBoard's binning overflows beyond
                self.writer.add_histogram(f"params/{name}", values, step)
        self.log_predictions(model, step)
        self.log_mistakes(model, step)

    def log_predictions(self, model: Classifier, step: int) -> None:
        x, y = self.data.valid.x, self.data.valid.y
        predicted, probabilities = predictions(model, x)  # one pass serves the table and the curve
        matrix = confusion_matrix(predicted, y, len(model.digits))
        self.writer.add_text("confusion/valid", confusion_markdown(matrix, model.digits), step)
        if model.n_outputs == 1:
            self.writer.add_pr_curve("pr_curve/valid", (y == 0).cpu(), probabilities[:, 0].cpu(), step)
        if self.examples is not None:
            explanations = explain(model, x[self.examples])
            truths = [model.digits[int(k)] for k in y[self.examples]]
            # The numbers go into the explain/numbers table (row # = card #): drawing them costs more.
            sheet = render_sheet(explanations, [f"#{i}: a {t}" for i, t in enumerate(truths)])
            self.writer.add_image("explain/examples", as_tensor(sheet), step)
            self.writer.add_text("explain/numbers", numbers_table(explanations, truths), step)

    def log_mistakes(self, model: Classifier, step: int) -> None:
        grid, count = mistakes_grid(model, self.data.valid.x, self.data.valid.y)
        self.writer.add_scalar("mistakes/count", count, step)
        if grid is not None:
            self.writer.add_image("mistakes/valid", grid, step)

    def finish(self, model: Classifier, epoch: int) -> None:
        """The end of a run: a snapshot of the final model, unless its last epoch took one already."""
        if epoch and self.last_snapshot != epoch:
            self.snapshot(model, epoch)
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()
