"""The config's schema and its checks: a bad setting fails before any work, in one sentence.

Types come from the dataclasses below (Hydra structured configs: a wrong type or an unknown key is
refused while the config is composed); the ranges that types can't express are checked by
`validate`, which names the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from mnist37.data import parse_digits
from mnist37.errors import BadInputError, first_line
from mnist37.models import keyword_settings


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
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    inspect: InspectSchema = field(default_factory=InspectSchema)
    device: DeviceSchema = field(default_factory=DeviceSchema)
    # The groups' own keys differ per option (model.hidden, model.distance, ...): checked below.
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    logger: Any = None  # name -> a logger's config (configs/logger/)


def register_schema() -> None:
    """Make `train_schema` available to configs/train.yaml's defaults list."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainSchema)


LARGEST = 2**63 - 1  # torch keeps seeds, sizes and counts in int64


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= LARGEST


# Keys of a group that Hydra reads as instructions rather than settings; `_target_` names the code
# it calls. They come from YAML files (configs/, or the user's own in hydra.searchpath), never
# from command-line overrides, which may be typed by anyone a sweep takes its values from.
META_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
SUPPLIED = {"data": set(), "model": {"digits"}, "optimizer": {"params"}}  # passed by the training code


def check_overrides(overrides) -> None:
    """Refuse command-line overrides that would make Hydra call something (a `_target_`, anywhere)."""
    for override in overrides:
        if any(key in str(override) for key in META_KEYS):
            raise BadInputError(
                f"the override {override!r} is not allowed: {', '.join(META_KEYS)} can't be set from the command "
                "line (they decide which code runs); put your own model, optimizer or data in a YAML file in "
                "your config search path (hydra.searchpath) and choose it by name"
            )


def check_group(cfg: DictConfig, group: str) -> None:
    """Each key of the group is an argument its `_target_` takes, and no value asks Hydra to call
    something: a misspelled key is named here, not in a traceback from deep inside instantiate."""
    node = cfg[group]
    for key, value in node.items():
        if isinstance(value, (DictConfig, ListConfig)) and any(k in OmegaConf.to_yaml(value) for k in META_KEYS):
            raise BadInputError(f"{group}.{key} is not valid: a setting can't hold {', '.join(META_KEYS)}")
    target = node.get("_target_")
    if not isinstance(target, str):
        raise BadInputError(f"{group} has no _target_: choose a {group} option from configs/{group}/")
    try:
        settings = keyword_settings(get_object(target))
    except Exception as error:  # noqa: BLE001 - any failure to find it means the same to the user
        raise BadInputError(f"{group}._target_={target!r} can't be found ({error})") from None
    if settings is None:
        return  # takes any keyword: nothing to check against
    allowed = sorted(settings - SUPPLIED[group])
    for key in node:
        if key not in allowed and key not in ("_target_", "_partial_"):
            raise BadInputError(
                f"{group}.{key} is not a setting of {target}: use one of {', '.join(allowed)}"
            )


def build(group: str, node: DictConfig, *args, **kwargs):
    """hydra.utils.instantiate (then called with `args`, for a `_partial_` node such as the optimizer),
    except that a bad value stays a one-line BadInputError: ours as they are, and the ValueError or
    TypeError with which a library refuses a value (torch.optim: "Invalid momentum value: -1"),
    which Hydra would wrap in an InstantiationException."""
    try:
        made = instantiate(node, **kwargs)
        return made(*args) if args else made
    except (InstantiationException, ValueError, TypeError) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if isinstance(cause, BadInputError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise BadInputError(f"{group}: {node._target_} refused its settings ({first_line(cause)}): "
                                f"check {group}.* (python -m mnist37.train --cfg job shows them)") from None
        raise


def validate(cfg: DictConfig) -> None:
    """Raise BadInputError for the first setting out of range."""

    def check(key: str, ok: bool, allowed: str) -> None:
        if not ok:
            value = OmegaConf.select(cfg, key)
            raise BadInputError(f"{key}={value!r} is not valid: {allowed}")

    check("seed", is_whole(cfg.seed, 0), "use a whole number from 0 to 2**63 - 1")
    check("trainer.epochs", is_whole(cfg.trainer.epochs, 0), "use a whole number from 0 to 2**63 - 1")
    check("trainer.batch_size", is_whole(cfg.trainer.batch_size, 1), "use a whole number from 1 to 2**63 - 1")
    check("trainer.threads", cfg.trainer.threads is None or is_whole(cfg.trainer.threads, 1),
          "use null or a whole number >= 1")
    check("inspect.examples_per_digit", is_whole(cfg.inspect.examples_per_digit, 0), "use a whole number >= 0 (0: none)")
    check("inspect.every", is_whole(cfg.inspect.every, 0), "use a whole number >= 0 (0: only at the end)")
    check("trainer.resume", cfg.trainer.resume is None or str(cfg.trainer.resume).strip() != "",
          "give a run folder (or its last.pt), or auto")
    for group in ("data", "model", "optimizer"):
        check_group(cfg, group)
    if "lr" in cfg.optimizer:
        check("optimizer.lr", is_number(cfg.optimizer.lr) and cfg.optimizer.lr > 0, "use a finite number > 0, e.g. 0.25")
    import torch

    from mnist37.loop import resolve_device

    resolve_device(cfg.device.type)  # a name it knows, and CUDA there if asked for
    digits = parse_digits(cfg.data.digits)  # raises naming data.digits
    # Each rule lives where the value is used: the model's constructor checks its settings (built
    # here on the meta device: no memory, however large), torch.optim its own.
    with torch.device("meta"):
        build("model", cfg.model, digits=digits)
    build("optimizer", cfg.optimizer, [torch.zeros(1, requires_grad=True)])
