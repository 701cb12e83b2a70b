"""The config's schema and its checks: a bad setting fails before any work, in one sentence.

Types come from the dataclasses below (Hydra structured configs: a wrong type or an unknown key is
refused while the config is composed); the ranges that types can't express are checked by
`validate`, which names the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from mnist37.data import parse_digits
from mnist37.errors import BadInputError


@dataclass
class TrainerSchema:
    epochs: int = MISSING
    batch_size: int = MISSING
    progress: Optional[bool] = None
    threads: Optional[int] = None
    compile: bool = False
    bf16: bool = False
    resume: Optional[str] = None


@dataclass
class InspectSchema:
    examples_per_digit: int = MISSING
    every: int = MISSING


@dataclass
class DeviceSchema:
    type: str = MISSING


@dataclass
class TrainSchema:
    seed: int = MISSING
    tensorboard: bool = True
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    inspect: InspectSchema = field(default_factory=InspectSchema)
    device: DeviceSchema = field(default_factory=DeviceSchema)
    # The groups' own keys differ per option (model.hidden, model.distance, ...): checked below.
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING


def register_schema() -> None:
    """Make `train_schema` available to configs/train.yaml's defaults list."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainSchema)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(cfg: DictConfig) -> None:
    """Raise BadInputError for the first setting out of range."""

    def check(key: str, ok: bool, allowed: str) -> None:
        if not ok:
            value = OmegaConf.select(cfg, key)
            raise BadInputError(f"{key}={value!r} is not valid: {allowed}")

    check("trainer.epochs", cfg.trainer.epochs >= 0, "use a whole number >= 0")
    check("trainer.batch_size", cfg.trainer.batch_size >= 1, "use a whole number >= 1")
    check("trainer.threads", cfg.trainer.threads is None or cfg.trainer.threads >= 1, "use null or a whole number >= 1")
    check("inspect.examples_per_digit", cfg.inspect.examples_per_digit >= 0, "use a whole number >= 0 (0: none)")
    check("inspect.every", cfg.inspect.every >= 0, "use a whole number >= 0 (0: only at the end)")
    device = cfg.device.type
    check("device.type", device in ("auto", "cpu", "cuda") or device.startswith("cuda:"),
          "use device=auto, device=cpu or device=cuda (or device.type=cuda:N)")
    if "lr" in cfg.optimizer:
        check("optimizer.lr", is_number(cfg.optimizer.lr) and cfg.optimizer.lr > 0, "use a number > 0, e.g. 0.25")
    model = cfg.model
    if "hidden" in model:
        check("model.hidden", isinstance(model.hidden, int) and model.hidden >= 1, "use a whole number >= 1")
    if "init_std" in model:
        check("model.init_std", is_number(model.init_std) and model.init_std >= 0, "use a number >= 0")
    if "bias" in model:
        check("model.bias", isinstance(model.bias, bool), "use true or false")
    if "distance" in model:
        check("model.distance", model.distance in ("l1", "l2"), "use l1 or l2")
    parse_digits(cfg.data.digits)  # raises naming data.digits
