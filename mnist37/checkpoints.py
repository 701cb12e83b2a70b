"""Checkpoints: the weights plus what is needed to rebuild the model, in a file that is safe to load.

A checkpoint holds only tensors, strings and numbers, and is always read with
`torch.load(..., weights_only=True)`: loading someone else's file can never run their code. The model
class is looked up by name in `mnist37.models.MODELS`, never imported from a path in the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mnist37.data import parse_digits
from mnist37.errors import BadInputError, first_line
from mnist37.models import MODELS, Classifier, keyword_settings

FORMAT = "mnist37-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "model.pt"  # the trained model, written when a run finishes
LAST_NAME = "last.pt"  # the run so far (model, optimizer, RNGs, progress), rewritten every epoch


class CheckpointError(BadInputError):
    pass


def save_checkpoint(path: str | Path, model: Classifier, **extra) -> Path:
    """Write `model` (and `extra` plain values, e.g. metrics or the config) to `path`, atomically."""
    path = Path(path)
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "model": type(model).__name__,
        "hparams": dict(model.hparams),
        "digits": list(model.digits),
        "state_dict": {name: t.detach().cpu() for name, t in model.state_dict().items()},
        **extra,
    }
    # Write next to the target, then rename: a crash never leaves a half-written checkpoint.
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)
    return path


def load_checkpoint(path: str | Path, name: str = CHECKPOINT_NAME) -> dict:
    """The checkpoint dict at `path` (a file, or a run folder holding `name`), checked."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: give a {name} file or a run folder holding one")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every way a file can fail to load means "not ours"
        raise CheckpointError(
            f"{path} is not a loadable mnist37 checkpoint ({first_line(error)}); "
            "only files written by mnist37 (tensors and plain values) are accepted"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mnist37 checkpoint (no '{FORMAT}' format marker)")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu",
               model_class: type[Classifier] | None = None) -> Classifier:
    """The trained model saved at `path` (a checkpoint or a run folder), in eval mode on `device`.

    mnist37's own models are found by the class name the file stores; a model class of your own is
    handed over, `load_model(path, model_class=MyModel)`: no class is ever imported from a name in
    a file, which anyone could have written.

    The file is trusted for nothing: its settings must be ones the model class takes, and the model
    is first built on the "meta" device (shapes, no memory), so a crafted `hidden=10**12` costs
    nothing; the weights then take its place only if every name and shape fits.
    """
    checkpoint = load_checkpoint(path)
    name, hparams, digits = checkpoint.get("model"), checkpoint.get("hparams"), checkpoint.get("digits")
    known = {**MODELS, **({model_class.__name__: model_class} if model_class else {})}
    if name not in known:
        raise CheckpointError(f"{path} holds a model {name!r} that is not one of mnist37's ({', '.join(MODELS)}): "
                              "if it is yours, hand its class over: load_model(path, model_class=...)")
    model_class = known[name]
    allowed = keyword_settings(model_class)
    allowed = allowed - {"digits"} if allowed is not None else None
    if not isinstance(hparams, dict) or (allowed is not None and set(hparams) - allowed):
        raise CheckpointError(f"{path}: settings {hparams!r} are not those of a {name} "
                              f"(it takes {', '.join(sorted(allowed or []))})")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} holds no weights (no state_dict): it is not a complete mnist37 checkpoint")
    try:
        with torch.device("meta"):
            model = model_class(digits=parse_digits(digits), **hparams)
        model.load_state_dict(checkpoint["state_dict"], assign=True)
    except (BadInputError, TypeError, ValueError, RuntimeError) as error:
        detail = " ".join(str(error).split())  # load_state_dict spreads its reason over lines
        raise CheckpointError(f"{path}: the file does not describe a working {name}: {detail[:300]}") from None
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise CheckpointError(f"{path}: weights are missing for a {name}")
    return model.to(device).eval()


def rng_states() -> dict:
    """Every random generator a run could draw from, as plain values a safe load accepts."""
    import random

    import numpy as np

    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype("int64")), position, has_gauss, cached],
        "python": random.getstate(),
    }


def restore_rng_states(states: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(states["python"])


def save_training(path: str | Path, model: Classifier, optimizer: torch.optim.Optimizer, state, config: str) -> Path:
    """last.pt: the model, the optimizer, where training stands and every RNG: enough to go on exactly."""
    return save_checkpoint(path, model, optimizer=optimizer.state_dict(), train_state=state.as_dict(),
                           rng=rng_states(), config=config)


def load_resumable(path: str | Path, model: str, hparams: dict, digits: list, optimizer: str) -> dict:
    """The last.pt that `path` (a run folder or its last.pt) holds, checked to continue a run of this
    model (class name and settings), digits and optimizer class; a CheckpointError otherwise."""
    path = Path(path).expanduser()
    if path.is_file() and path.name != LAST_NAME:
        raise CheckpointError(f"trainer.resume={path}: give the run folder or its {LAST_NAME} ({path.name} is not "
                              "one: a finished model.pt has no optimizer state to continue from)")
    if not path.exists():
        raise CheckpointError(f"trainer.resume={path}: no such folder; give the folder of the run to continue")
    saved = load_checkpoint(path, name=LAST_NAME)
    missing = [key for key in ("optimizer", "train_state", "rng", "config") if key not in saved]
    if missing:
        raise CheckpointError(f"trainer.resume={path}: the checkpoint has no {', '.join(missing)}: "
                              f"it is not a {LAST_NAME} that mnist37 wrote")
    from omegaconf import OmegaConf

    saved_optimizer = str(OmegaConf.select(OmegaConf.create(saved["config"]), "optimizer._target_", default=""))
    wanted = (model, dict(hparams), list(digits), optimizer)
    found = (saved["model"], saved["hparams"], saved["digits"], saved_optimizer.rsplit(".", 1)[-1])
    if wanted != found:
        raise CheckpointError(
            f"trainer.resume={path}: the checkpoint holds {found[0]} {found[1]} for digits {found[2]} trained "
            f"with {found[3]}, but this run asks for {wanted[0]} {wanted[1]} for digits {wanted[2]} with "
            f"{wanted[3]}; pass the original run's settings again (see its .hydra/overrides.yaml)"
        )
    return saved


def resume_training(path: str | Path, model: Classifier, optimizer: torch.optim.Optimizer):
    """Load the last.pt at `path` (or in that run folder) into `model` and `optimizer`, restore the
    RNGs, and return the TrainState to continue from. Another model, digits or optimizer is refused."""
    from mnist37.loop import TrainState

    saved = load_resumable(path, type(model).__name__, model.hparams, list(model.digits), type(optimizer).__name__)
    try:
        model.load_state_dict(saved["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState.from_dict(saved["train_state"])
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"trainer.resume={path}: {LAST_NAME} does not fit this run ({first_line(error)})") from None
    restore_rng_states(saved["rng"])
    return state
