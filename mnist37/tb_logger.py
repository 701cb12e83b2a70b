"""TensorBoard logging: per-epoch curves, the weight images, and weight histograms.

Open with `tensorboard --logdir outputs`. Tags:
  loss/train, loss/valid, accuracy/train, accuracy/valid   one point per epoch
  weights/model                                            the weight images as one grid per epoch
  weights/mean3_minus_mean7                                the ideal 3 minus the ideal 7 (two digits)
  weights/template_l2_as_linear(_bias)                     model=template distance=l2 as x @ w + b
  params/<name>                                            histogram of each parameter per epoch
"""

from __future__ import annotations

from pathlib import Path

import torch

from mnist37.data import Digits
from mnist37.models import Classifier, TemplateModel
from mnist37.training import EpochMetrics


def signed_rgb(maps: torch.Tensor) -> torch.Tensor:
    """(K, 28, 28) signed maps -> (K, 3, 28, 28) RGB: blue > 0, white = 0, red < 0.

    Each map is scaled by its own largest |value|, symmetrically, so zero stays white and the sign is
    never lost: blue pixels vote for the first digit (or for that digit's class), red ones against.
    """
    scale = maps.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    v = (maps / scale).float().cpu()
    red, blue = 1 - v.clamp(min=0), 1 + v.clamp(max=0)
    green = 1 - v.abs()
    return torch.stack([red, green, blue], dim=1)


def weight_grid(model: Classifier) -> torch.Tensor:
    """All of the model's weight images as one (3, H, W) grid, separated by grey lines."""
    from torchvision.utils import make_grid

    images = signed_rgb(model.weight_images())
    return make_grid(images, nrow=min(len(images), 10), padding=2, pad_value=0.5)


class TensorBoardLogger:
    """Called after every epoch by `mnist37.training.train` (as `on_epoch_end`).

    Given the run's `data` with two digits, it also logs, once, the picture to compare the learned
    weights with: the first digit's mean image minus the second's.
    """

    def __init__(self, log_dir: str | Path, data: Digits | None = None, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imported only when logging is on

        # purge_step: TensorBoard hides what earlier writers logged at this step and later (a resume).
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        if data is not None and len(data.digits) == 2 and purge_step is None:
            probe = TemplateModel(data.digits).to(data.train.x.device)
            probe.fit(data.train.x, data.train.y)
            first, second = probe.weight_images()
            self.writer.add_image(f"weights/mean{data.digits[0]}_minus_mean{data.digits[1]}",
                                  signed_rgb((first - second)[None])[0], 0)

    def __call__(self, metrics: EpochMetrics, model: Classifier) -> None:
        step = metrics.epoch
        for split in ("train", "valid"):
            self.writer.add_scalar(f"loss/{split}", getattr(metrics, f"{split}_loss"), step)
            self.writer.add_scalar(f"accuracy/{split}", getattr(metrics, f"{split}_accuracy"), step)
        self.writer.add_image("weights/model", weight_grid(model), step)
        if isinstance(model, TemplateModel) and model.hparams["distance"] == "l2" and model.n_outputs == 1:
            weights, bias = model.linear_equivalent()
            self.writer.add_image("weights/template_l2_as_linear", signed_rgb(weights.reshape(1, 28, 28))[0], step)
            self.writer.add_scalar("weights/template_l2_as_linear_bias", bias, step)
        for name, param in model.named_parameters():
            values = param.detach().cpu()
            if values.isfinite().all() and values.abs().max() < 1e15:  # TensorBoard's binning overflows beyond
                self.writer.add_histogram(f"params/{name}", values, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
