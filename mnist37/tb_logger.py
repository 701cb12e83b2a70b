"""TensorBoard logging: per-epoch curves, the weight images, and weight histograms.

Open with `tensorboard --logdir outputs`. Tags:
  loss/train, loss/valid, accuracy/train, accuracy/valid   one point per epoch
  weights                                                  the weight images as one grid per epoch
  params/<name>                                            histogram of each parameter per epoch
"""

from __future__ import annotations

from pathlib import Path

import torch

from mnist37.models import Classifier
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
    """Called after every epoch by `mnist37.training.train` (as `on_epoch_end`)."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter  # imported only when logging is on

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def __call__(self, metrics: EpochMetrics, model: Classifier) -> None:
        step = metrics.epoch
        for split in ("train", "valid"):
            self.writer.add_scalar(f"loss/{split}", getattr(metrics, f"{split}_loss"), step)
            self.writer.add_scalar(f"accuracy/{split}", getattr(metrics, f"{split}_accuracy"), step)
        self.writer.add_image("weights", weight_grid(model), step)
        for name, param in model.named_parameters():
            self.writer.add_histogram(f"params/{name}", param.detach().cpu(), step)

    def close(self) -> None:
        self.writer.close()
