"""The training loop: a plain function that any script can call; Hydra only feeds it.

    from mnist37 import LinearModel, load_embedded
    from mnist37.loop import train
    data = load_embedded(digits=(3, 7))
    model = LinearModel(data.digits)
    history = train(model, data, torch.optim.SGD(model.parameters(), lr=0.25), epochs=20)

The model is tiny, so the cost of a step is almost all overhead. The loop keeps it minimal: the data
already sits on the device, a batch is a slice of one shuffled index tensor, and nothing in the step
reads a value back to the host (which on CUDA would wait for the GPU every step). Metrics are
computed once per epoch, on the whole train and valid splits, outside the timed steps.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from mnist37.data import Digits, Split
from mnist37.errors import BadInputError
from mnist37.models import Classifier, evaluating

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
    targets = model.loss_targets(split.y)
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device)
    with evaluating(model):
        for start in range(0, len(split), batch_size):
            rows = slice(start, start + batch_size)
            logits = model(split.x[rows])
            loss_sum += model.loss(logits, targets[rows]) * len(split.y[rows])
            correct += (model.classes(logits) == split.y[rows]).sum()
    loss, n_correct = torch.stack([loss_sum, correct]).tolist()
    return loss / len(split), n_correct / len(split)


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
    raise BadInputError(f"device.type={name!r} is not valid: use device=auto, device=cpu or device=cuda "
                        "(or device.type=cuda:N)")


def epoch_metrics(epoch: int, model: Classifier, data: Digits, train_seconds: float) -> EpochMetrics:
    """The model as it stands after `epoch`: loss and accuracy on the whole train and valid splits."""
    return EpochMetrics(epoch, *evaluate(model, data.train), *evaluate(model, data.valid), train_seconds)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer around it measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class TrainState:
    """Where a run stands: enough to continue it exactly as if it had never stopped."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimisation steps done in epoch `epoch + 1` (non-zero only after a stop)
    shuffle: torch.Tensor | None = None  # batch-order generator state at the start of epoch `epoch + 1`
    seconds: float = 0.0  # step time already spent in epoch `epoch + 1`
    history: list[EpochMetrics] = field(default_factory=list)
    stopped: bool = False  # `stop()` said so before the last epoch was done

    def as_dict(self) -> dict:
        """Plain values only, for a checkpoint that loads with weights_only=True."""
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> TrainState:
        return cls(**{**saved, "history": [EpochMetrics(**m) for m in saved["history"]]})


class DivergedError(BadInputError):
    """The loss stopped being a finite number: the learning rate is too high for this model."""


def run_epoch(model, optimizer, x, targets, batches, precision, stop=None) -> list[torch.Tensor]:
    """Optimisation steps over `batches` (index tensors into x); returns the loss of each step done.

    Nothing here reads a value back to the host, so on CUDA the steps queue up without waiting; the
    losses stay on the device until the caller checks them, once per epoch.
    """
    losses = []
    for batch in batches:
        if stop is not None and stop():
            break
        with precision:
            # index_select, not x[batch]: the same rows, gathered ~2.5x faster on the CPU.
            loss = model.loss(model(x.index_select(0, batch)), targets.index_select(0, batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


def check_finite(losses: list[torch.Tensor], model: Classifier, epoch: int, first_step: int, optimizer) -> None:
    """Raise DivergedError naming the first step whose loss is not finite, or saying that the
    weights are not (a last step can break them with a finite loss); one host sync for both."""
    if not losses:
        return
    stacked = torch.stack(losses)
    weights_broken = ~torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all()
    bad = torch.cat([~torch.isfinite(stacked), weights_broken.reshape(1)]).nonzero()  # the sync
    if not len(bad):
        return
    step, lr = int(bad[0]), optimizer.param_groups[0]["lr"]
    if step < len(losses):
        raise DivergedError(
            f"training diverged: the loss became {stacked[step].item()} at epoch {epoch}, "
            f"step {first_step + step + 1} (lr {lr:g}): lower optimizer.lr"
        )
    raise DivergedError(
        f"training diverged: the weights became nan or inf in epoch {epoch}, by step "
        f"{first_step + len(losses)} (lr {lr:g}): lower optimizer.lr"
    )


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
    bf16: bool = False,
    state: TrainState | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[EpochMetrics]:
    """Train `model` on `data.train` with mini-batch gradient descent; evaluate after every epoch.

    `data` must already be on the model's device. `seed` fixes the order of the batches (the model's
    initial weights are fixed by whoever built it). `progress`: a progress bar; None shows it only
    on a terminal. `bf16`: run forward and loss under bfloat16 autocast (weights stay float32).
    `state`: where to start (a saved TrainState continues a run); it is updated as training goes.
    `stop`: checked before every step; when it returns True, training stops there with
    `state.stopped` set. Returns one EpochMetrics per epoch (including those of a resumed run).
    """
    from tqdm.auto import tqdm

    state = state if state is not None else TrainState()
    state.stopped = False
    x, y = data.train.x, data.train.y
    targets = model.loss_targets(y)
    shuffle = torch.Generator(device=x.device).manual_seed(seed)
    if state.shuffle is not None:
        shuffle.set_state(state.shuffle)
    precision = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    bar = tqdm(
        range(state.epoch + 1, epochs + 1), desc="train", unit="epoch", initial=state.epoch, total=epochs,
        disable=None if progress is None else not progress,
    )
    model.train()
    for epoch in bar:
        state.shuffle = shuffle.get_state()  # a stop mid-epoch replays this epoch's order on resume
        batches = torch.randperm(len(y), device=x.device, generator=shuffle).split(batch_size)
        synchronize(x.device)
        started = time.perf_counter()
        losses = run_epoch(model, optimizer, x, targets, batches[state.step:], precision, stop)
        synchronize(x.device)
        state.seconds += time.perf_counter() - started
        check_finite(losses, model, epoch, state.step, optimizer)
        state.step += len(losses)
        if state.step < len(batches):
            state.stopped = True
            break

        metrics = epoch_metrics(epoch, model, data, state.seconds)
        state.history.append(metrics)
        state.epoch, state.step, state.seconds, state.shuffle = epoch, 0, 0.0, shuffle.get_state()
        bar.set_postfix(train_loss=f"{metrics.train_loss:.4f}", valid_acc=f"{metrics.valid_accuracy:.2%}")
        if bar.disable:
            log.info(
                "epoch %d/%d  train_loss %.4f  valid_loss %.4f  valid_accuracy %.2f%%",
                epoch, epochs, metrics.train_loss, metrics.valid_loss, 100 * metrics.valid_accuracy,
            )
        if on_epoch_end is not None:
            on_epoch_end(metrics, model)
    bar.close()
    return state.history


def fit_in_one_pass(
    model: Classifier,
    data: Digits,
    on_epoch_end: Callable[[EpochMetrics, Classifier], None] | None = None,
) -> list[EpochMetrics]:
    """"Train" a model that is fitted in one pass (`model.fits_in_one_pass`, e.g. the template model,
    which averages the images of each digit): `model.fit(x, y)` once, then evaluate.

    Returns a one-epoch history, so its metrics look like any other run's.
    """
    synchronize(data.train.x.device)
    started = time.perf_counter()
    model.fit(data.train.x, data.train.y)
    synchronize(data.train.x.device)
    seconds = time.perf_counter() - started
    metrics = epoch_metrics(1, model, data, seconds)
    log.info("%s fitted on %s: valid_accuracy %.2f%%", type(model).__name__, data.digits, 100 * metrics.valid_accuracy)
    if on_epoch_end is not None:
        on_epoch_end(metrics, model)
    return [metrics]


def samples_per_second(history: list[EpochMetrics], n_train: int) -> float:
    """Training throughput over all epochs: optimisation steps only, no evaluation or start-up."""
    seconds = sum(m.train_seconds for m in history)
    return n_train * len(history) / seconds if seconds > 0 else float("nan")
