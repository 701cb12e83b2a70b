"""What a run shows besides its curves, computed once per snapshot and handed to every logger.

A snapshot is taken every `inspect.every` epochs and at the end of a run (drawing images costs far
more than an epoch of this model's training): the model's weight images, its parameters, fixed valid
images taken apart (explain.py), the wrong valid predictions, the confusion matrix and the
precision-recall data. Each logger writes what it can of it (TensorBoard all of it, CSV none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnist37.data import Digits
from mnist37.explain import (
    as_tensor, confusion_markdown, confusion_matrix, explain, mistakes_grid, predictions, render_sheet, signed_rgb,
)
from mnist37.models import Classifier, TemplateModel

MAX_EXAMPLES = 16


@dataclass
class Snapshot:
    step: int
    weights: torch.Tensor | None  # (3, H, W) grid of the model's weight images, if it has any
    linear_equivalent: tuple[torch.Tensor, float] | None  # (28x28 signed RGB, bias) when the model has one
    ideal_difference: tuple[str, torch.Tensor] | None  # ("mean3_minus_mean7", its RGB image) for two digits
    parameters: dict[str, torch.Tensor]  # finite parameters, on the CPU, for histograms
    confusion: str  # markdown, true digit by row
    pr_curve: tuple[torch.Tensor, torch.Tensor] | None  # (is first digit, its probability), two digits
    examples: torch.Tensor | None  # (3, H, W) sheet of explained valid images
    numbers: str | None  # markdown: what each explained image's maps add up to
    mistakes: torch.Tensor | None  # (3, H, W) grid of wrong predictions, most confident first
    mistake_count: int


def weight_grid(images: torch.Tensor) -> torch.Tensor:
    """(K, H, W) signed weight images as one (3, H', W') grid, separated by grey lines."""
    from torchvision.utils import make_grid

    rgb = signed_rgb(images)
    return make_grid(rgb, nrow=min(len(rgb), 10), padding=2, pad_value=0.5)


def example_rows(data: Digits, per_digit: int) -> torch.Tensor:
    """The same valid images every snapshot: the first `per_digit` of each digit (at most 16 in all)."""
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


class Inspector:
    """Takes the snapshots of one run: `due(epoch)` says when, `inspector(model, step)` takes one."""

    def __init__(self, data: Digits, every: int = 20, examples_per_digit: int = 8):
        self.data, self.every = data, every
        self.examples = example_rows(data, examples_per_digit) if examples_per_digit else None
        self.ideal_difference = None
        if len(data.digits) == 2:  # the ideal (mean) first digit minus the ideal second: data, not model
            means = TemplateModel(data.digits).to(data.train.x.device)
            means.fit(data.train.x, data.train.y)
            first, second = means.weight_images()
            self.ideal_difference = (f"mean{data.digits[0]}_minus_mean{data.digits[1]}",
                                     signed_rgb((first - second)[None])[0])
        self.last = 0

    def due(self, epoch: int) -> bool:
        return bool(self.every) and epoch % self.every == 0

    def __call__(self, model: Classifier, step: int) -> Snapshot:
        self.last = step
        x, y = self.data.valid.x, self.data.valid.y
        predicted, probabilities = predictions(model, x)  # one pass serves the table and the curve
        images, equivalent = model.weight_images(), model.linear_equivalent()
        examples = numbers = None
        if self.examples is not None:
            explanations = explain(model, x[self.examples])
            truths = [model.digits[int(k)] for k in y[self.examples]]
            examples = as_tensor(render_sheet(explanations, [f"#{i}: a {t}" for i, t in enumerate(truths)]))
            numbers = numbers_table(explanations, truths)
        mistakes, count = mistakes_grid(model, x, y)
        return Snapshot(
            step=step,
            weights=None if images is None else weight_grid(images),
            linear_equivalent=None if equivalent is None else (
                signed_rgb(equivalent[0].reshape(1, 28, 28))[0], float(equivalent[1])),
            ideal_difference=self.ideal_difference,
            parameters={name: p.detach().cpu() for name, p in model.named_parameters()
                        if p.isfinite().all() and p.abs().max() < 1e15},  # TensorBoard's binning overflows beyond
            confusion=confusion_markdown(confusion_matrix(predicted, y, len(model.digits)), model.digits),
            pr_curve=((y == 0).cpu(), probabilities[:, 0].cpu()) if model.n_outputs == 1 else None,
            examples=examples, numbers=numbers, mistakes=mistakes, mistake_count=count,
        )
