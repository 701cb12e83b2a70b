"""The training loop: a plain function that any script can call; Hydra only feeds it.

    from mnist37 import LinearModel, load_embedded, train
    data = load_embedded(digits=(3, 7))
    model = LinearModel(data.digits)
    history = train(model, data, torch.optim.SGD(model.parameters(), lr=1.0), epochs=20)

The model is tiny, so the cost of a step is almost all overhead. The loop keeps it minimal: the data
already sits on the device, a batch is a slice of one shuffled index tensor, and nothing in the step
reads a value back to the host (which on CUDA would wait for the GPU every step). Metrics are
computed once per epoch, on the whole train and valid splits, outside the timed steps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from mnist37.data import Digits, Split
from mnist37.errors import BadInputError
from mnist37.models import Classifier

log = logging.getLogger(__name__)


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    valid_loss: float
    valid_accuracy: float
    train_seconds: float  # time spent in this epoch's optimisation steps, nothing else

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(model: Classifier, split: Split, batch_size: int = 8192) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` on `split`, computed on its device, read back once."""
    was_training = model.training
    model.eval()
    targets = model.loss_targets(split.y)
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device)
    for start in range(0, len(split), batch_size):
        rows = slice(start, start + batch_size)
        logits = model(split.x[rows])
        loss_sum += model.loss(logits, targets[rows]) * len(split.y[rows])
        correct += (model.classes(logits) == split.y[rows]).sum()
    model.train(was_training)
    loss, n_correct = torch.stack([loss_sum, correct]).tolist()
    return loss / len(split), n_correct / len(split)


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """"auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N" -> a usable torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or str(name).startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BadInputError(
                f"device={name} but CUDA is not available on this machine "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}): use device=cpu or device=auto"
            )
        return torch.device(name)
    raise BadInputError(f"device {name!r} is not known: use one of {', '.join(DEVICES)}")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer around it measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    model: Classifier,
    data: Digits,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int = 20,
    batch_size: int = 256,
    seed: int = 0,
    on_epoch_end: Callable[[EpochMetrics, Classifier], None] | None = None,
    progress: bool | None = None,
) -> list[EpochMetrics]:
    """Train `model` on `data.train` with mini-batch gradient descent; evaluate after every epoch.

    `data` must already be on the model's device. `seed` fixes the order of the batches (the model's
    initial weights are fixed by whoever built it). `progress`: a progress bar; None shows it only
    on a terminal. Returns one EpochMetrics per epoch.
    """
    from tqdm.auto import tqdm

    x, y = data.train.x, data.train.y
    targets = model.loss_targets(y)
    shuffle = torch.Generator(device=x.device).manual_seed(seed)
    history: list[EpochMetrics] = []
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=None if progress is None else not progress)
    model.train()
    for epoch in bar:
        synchronize(x.device)
        started = time.perf_counter()
        for batch in torch.randperm(len(y), device=x.device, generator=shuffle).split(batch_size):
            loss = model.loss(model(x[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(x.device)
        seconds = time.perf_counter() - started

        metrics = EpochMetrics(epoch, *evaluate(model, data.train), *evaluate(model, data.valid), seconds)
        history.append(metrics)
        bar.set_postfix(train_loss=f"{metrics.train_loss:.4f}", valid_acc=f"{metrics.valid_accuracy:.2%}")
        if bar.disable:
            log.info(
                "epoch %d/%d  train_loss %.4f  valid_loss %.4f  valid_accuracy %.2f%%",
                epoch, epochs, metrics.train_loss, metrics.valid_loss, 100 * metrics.valid_accuracy,
            )
        if on_epoch_end is not None:
            on_epoch_end(metrics, model)
    return history


def samples_per_second(history: list[EpochMetrics], n_train: int) -> float:
    """Training throughput over all epochs: optimisation steps only, no evaluation or start-up."""
    seconds = sum(m.train_seconds for m in history)
    return n_train * len(history) / seconds if seconds > 0 else float("nan")
