"""Command line: `python -m mnist37.train [overrides]` (or `mnist37-train`), a Hydra app.

This module only turns a config into calls: load the data, build the model and optimizer with
Hydra's `instantiate`, call `mnist37.training.train`, write the run's outputs. Everything it calls
works without Hydra too.

Each run writes into its own folder (outputs/runs/<time>/, or outputs/multirun/<time>/<job>/):
  metrics.json   final metrics and the run's settings
  model.pt       checkpoint for `mnist37.load_model`
  events.*       TensorBoard curves, weight images and histograms
  train.log, .hydra/   Hydra's log and the exact config used
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist37.errors import BadInputError

log = logging.getLogger("mnist37")


def config_dir() -> str:
    # A source checkout keeps the configs at the top level; an installed wheel ships them inside.
    here = Path(__file__).resolve().parent
    shipped = here / "configs"
    return str(shipped if (shipped / "train.yaml").is_file() else here.parent / "configs")


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train as `cfg` says, write metrics.json, model.pt and TensorBoard events into `run_dir`."""
    import torch

    from mnist37.checkpoints import save_checkpoint
    from mnist37.models import TemplateModel
    from mnist37.training import fit_template, resolve_device, samples_per_second, train

    run_dir = Path(run_dir)
    device = resolve_device(cfg.device.type)  # first: a bad device fails before any work
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    torch.manual_seed(cfg.seed)

    data = instantiate(cfg.data).to(device)
    model = instantiate(cfg.model, digits=data.digits).to(device)
    if cfg.trainer.compile:
        model.compile()  # in place: the module, its state_dict and its checkpoint stay as they are
    log.info(
        "%s on %s: %s digits %s, %d train / %d valid images",
        type(model).__name__, device, data.source, data.digits, len(data.train), len(data.valid),
    )

    logger = None
    if cfg.tensorboard:
        from mnist37.tb_logger import TensorBoardLogger

        logger = TensorBoardLogger(run_dir, data)
    try:
        if isinstance(model, TemplateModel):  # mean images in one pass: no optimizer, no epochs
            history = fit_template(model, data, on_epoch_end=logger)
        else:
            history = train(
                model, data, instantiate(cfg.optimizer)(model.parameters()),
                epochs=cfg.trainer.epochs, batch_size=cfg.trainer.batch_size, seed=cfg.seed,
                on_epoch_end=logger, progress=cfg.trainer.progress, bf16=cfg.trainer.bf16,
            )
    finally:
        if logger is not None:
            logger.close()

    last = history[-1].as_dict() if history else {}
    metrics = {
        "status": "completed",
        "valid_accuracy": last.get("valid_accuracy"),
        "valid_loss": last.get("valid_loss"),
        "train_accuracy": last.get("train_accuracy"),
        "train_loss": last.get("train_loss"),
        "epochs": len(history),
        "train_seconds": sum(m.train_seconds for m in history),
        "train_samples_per_s": samples_per_second(history, len(data.train)) if history else None,
        "device": str(device),
        "data_source": data.source,
        "digits": list(data.digits),
        "n_train": len(data.train),
        "n_valid": len(data.valid),
        "model": type(model).__name__,
        **({} if isinstance(model, TemplateModel) else {
            "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
            "lr": cfg.optimizer.lr,
            "batch_size": cfg.trainer.batch_size,
        }),
        "seed": cfg.seed,
    }
    save_checkpoint(run_dir / "model.pt", model, metrics=metrics, config=OmegaConf.to_yaml(cfg))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if history:
        log.info(
            "valid accuracy %.2f%%, valid loss %.4f, %.0f train samples/s; outputs in %s",
            100 * metrics["valid_accuracy"], metrics["valid_loss"], metrics["train_samples_per_s"], run_dir,
        )
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra task: returns the valid accuracy (what a sweeper optimises)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        return run(cfg, run_dir)["valid_accuracy"]
    except BadInputError as error:
        # A bad input is a sentence for a person, not a traceback.
        log.error("%s", error)
        (run_dir / "metrics.json").write_text(json.dumps({"status": "failed", "error": str(error)}, indent=2) + "\n")
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return None  # the sweep's other jobs go on
        print(f"mnist37-train: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
