"""Command line: `python -m mnist37.train [overrides]` (or `mnist37-train`), a Hydra app.

This module only turns a config into calls, top to bottom in `run`: check the config, `set_up`
(data, model and optimizer with Hydra's `instantiate`), open the loggers, `fit` (the loop in
`mnist37.loop`), `write_outputs`. Everything it calls works without Hydra too.

Each run writes into its own folder (outputs/runs/<time>_<model>/, or outputs/multirun/<time>/<job>/):
  metrics.json   final metrics and the run's settings ("status": completed, failed, diverged, interrupted)
  model.pt       checkpoint for `mnist37.load_model`, written when the run finishes
  last.pt        the run so far, rewritten after every epoch: `trainer.resume=<run folder>` continues it
  events.*       logger=tensorboard: curves, weight images, explained examples (metrics.csv: logger=csv)
  train.log, .hydra/, .lock   Hydra's log and the exact config used; the lock of the running process
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist37.checkpoints import LAST_NAME, load_resumable, resume_training, save_checkpoint, save_training
from mnist37.config import build, check_overrides, register_schema, validate
from mnist37.data import Digits, parse_digits
from mnist37.errors import BadInputError, first_line
from mnist37.inspection import Inspector
from mnist37.loggers import instantiate_loggers
from mnist37.loop import DivergedError, TrainState, fit_in_one_pass, resolve_device, samples_per_second, train
from mnist37.models import Classifier
from mnist37.run_folder import SWEEP_FILES, completed_metrics, foreign_files, hold, held, holds_run

log = logging.getLogger("mnist37")


def config_dir() -> str:
    # A source checkout keeps the configs at the top level; an installed wheel ships them inside.
    here = Path(__file__).resolve().parent
    shipped = here / "configs"
    return str(shipped if (shipped / "train.yaml").is_file() else here.parent / "configs")


AUTO = "auto"  # trainer.resume=auto: continue the run in this folder if there is one (for whole sweeps)


def run_dir_for(resume: str | None, new_dir: str) -> str:
    """hydra.run.dir: a run resumed from a path continues in its own folder; any other gets `new_dir`."""
    if resume is None or resume == AUTO:
        return new_dir
    path = Path(resume).expanduser()
    return str(path if path.is_dir() else path.parent)


def hydra_output_subdir(resume: str | None, output_dir: str) -> str | None:
    """hydra.output_subdir: none for a job that trainer.resume=auto will skip, so that Hydra does not
    rewrite the finished run's .hydra/ files."""
    return None if resume == AUTO and completed_metrics(output_dir) else ".hydra"


OmegaConf.register_new_resolver("mnist37.run_dir", run_dir_for, replace=True)
OmegaConf.register_new_resolver("mnist37.output_subdir", hydra_output_subdir, replace=True)
register_schema()


class PreflightChecks(Callback):
    """Before Hydra writes anything: no override asks Hydra to call code, the settings are valid, a
    run to resume is there and fits these settings, and the output folder is writable, holds nothing
    that is not a run's own, no run unless asked to continue it, and is held by no other process
    (this one takes it). A failure is one line on stderr and exit code 1, with nothing written."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        one_line(self.check_run, config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        one_line(self.check_sweep, config)

    @staticmethod
    def check_run(config: DictConfig) -> None:
        folder = Path(config.hydra.run.dir)
        resume = config.trainer.resume
        check_overrides(config.hydra.overrides.task)
        validate(config)
        if resume not in (None, AUTO) or (resume == AUTO and (folder / LAST_NAME).is_file()):
            check_resumable(config, folder if resume == AUTO else resume)
        if resume is None and holds_run(folder):
            raise BadInputError(f"{folder} already holds a run: refusing to overwrite it; choose another "
                                "hydra.run.dir, or continue that run with trainer.resume=auto")
        refuse_foreign(folder, foreign_files(folder), "a run's", "hydra.run.dir")
        folder.mkdir(parents=True, exist_ok=True)
        hold(folder)  # for as long as this process runs

    @staticmethod
    def check_sweep(config: DictConfig) -> None:
        folder = Path(config.hydra.sweep.dir)
        check_overrides([*config.hydra.overrides.task, *OmegaConf.to_yaml(
            OmegaConf.select(config, "hydra.sweeper.params") or {}).splitlines()])
        if config.trainer.resume != AUTO and (runs := [job for job in folder.glob("*") if holds_run(job)]):
            raise BadInputError(f"{folder} already holds {len(runs)} job(s) of a sweep: refusing to overwrite "
                                "them; add trainer.resume=auto to continue that sweep (completed jobs are "
                                "skipped), or choose another hydra.sweep.dir")
        jobs = {job.name for job in folder.glob("*") if job.is_dir() and not foreign_files(job)}
        refuse_foreign(folder, [name for name in foreign_files(folder, SWEEP_FILES) if name not in jobs],
                       "a sweep's", "hydra.sweep.dir")
        folder.mkdir(parents=True, exist_ok=True)
        hold(folder)


def refuse_foreign(folder: Path, foreign: list[str], whose: str, key: str) -> None:
    if foreign:
        raise BadInputError(f"{folder} holds files that are not {whose} ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}): refusing to write into it; choose an empty {key}")


def one_line(check, config: DictConfig) -> None:
    """Run a preflight check; a failure is one line on stderr and exit code 1 (Hydra would turn an
    exception raised in a callback into a warning and go on)."""
    try:
        check(config)
    except BadInputError as error:
        fail(str(error))
    except OSError as error:
        name = str(error.filename or "")
        fail(f"cannot use the output folder {name if len(name) <= 80 else name[:77] + '...'} ({error.strerror or error}): "
             "set hydra.run.dir (or hydra.sweep.dir) to a folder that can be written")


def check_resumable(cfg: DictConfig, target) -> None:
    """The run at `target` can be continued with these settings (before Hydra rewrites its config)."""
    hparams = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if not k.startswith("_")}
    load_resumable(target, cfg.model._target_.rsplit(".", 1)[-1], hparams, list(parse_digits(cfg.data.digits)),
                   optimizer_name(cfg))


def fail(message: str, code: int = 1) -> None:
    print(f"mnist37-train: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class StopRequest:
    """Ctrl-C, SIGTERM or SIGUSR2 (SLURM's warning before a time limit, as submitit sets it up):
    finish the current step, save, exit. A second signal stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.signal: int | None = None
        self.previous = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            self.previous = {sig: signal.signal(sig, self.request) for sig in self.SIGNALS}
        return self

    def request(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __call__(self) -> bool:
        return self.signal is not None

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run(cfg: DictConfig, run_dir: str | Path, choices: dict | None = None) -> dict:
    """Train as `cfg` says, writing metrics.json, last.pt, model.pt and the loggers' files into
    `run_dir`; returns the metrics. Ctrl-C, SIGTERM or SIGUSR2 stop it after the current step, saved
    ("status": "interrupted"), from the moment it starts: a signal during set-up stops it before
    the first step.

    `choices`: config groups picked beyond model/optimizer/data/device (e.g. {"why_weights":
    "template_l1"}), logged with the settings so that each run of a sweep can be told apart."""
    run_dir = Path(run_dir)
    if cfg.trainer.resume == AUTO and (done := completed_metrics(run_dir)) is not None:
        # said on stderr, not logged: the finished run's folder stays exactly as it is
        print(f"mnist37-train: {run_dir} holds a completed run: skipped (trainer.resume=auto)", file=sys.stderr)
        return done
    with held(run_dir), StopRequest() as stop:  # one process per run folder
        validate(cfg)
        setup = set_up(cfg, run_dir)
        loggers = instantiate_loggers(cfg.logger, run_dir, purge_step=setup.state.epoch + 1 if setup.state.epoch else None,
                                      hparams=hparams_of(cfg, setup.model, setup.data, choices))
        try:
            fit(setup, loggers, stop)
        except DivergedError as error:
            write_metrics(run_dir, metrics_of(setup, "diverged", error=str(error)))
            raise
        finally:
            for logger in loggers:
                logger.close()
        return write_outputs(setup, stop)


@dataclass
class Setup:
    """Everything a run is made of, built from its config by `set_up`."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    data: Digits
    model: Classifier
    optimizer: torch.optim.Optimizer | None  # None for a model fitted in one pass
    state: TrainState
    config_yaml: str  # the config as saved in last.pt and model.pt, rendered once


def set_up(cfg: DictConfig, run_dir: Path) -> Setup:
    """Device, data, model and optimizer, as the config says; restored from last.pt on a resume."""
    resume = cfg.trainer.resume
    if resume == AUTO:
        resume = run_dir if (run_dir / LAST_NAME).is_file() else None
    device = resolve_device(cfg.device.type)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    torch.manual_seed(cfg.seed)
    data = build("data", cfg.data).to(device)
    model = build("model", cfg.model, digits=data.digits).to(device)
    optimizer = None if model.fits_in_one_pass else build("optimizer", cfg.optimizer, model.parameters())
    state = TrainState()
    if resume is not None:
        if optimizer is None:
            raise BadInputError(f"trainer.resume: {type(model).__name__} is fitted in one pass, there is nothing to resume")
        state = resume_training(resume, model, optimizer)
        log.info("resuming from %s: %d epochs done, %d steps into the next", resume, state.epoch, state.step)
    log.info("%s on %s: %s digits %s, %d train / %d valid images",
             type(model).__name__, device, data.source, data.digits, len(data.train), len(data.valid))
    if cfg.trainer.compile:
        model.compile()  # in place: the module, its state_dict and its checkpoints stay as they are
    return Setup(cfg, run_dir, device, data, model, optimizer, state, OmegaConf.to_yaml(cfg))


def fit(setup: Setup, loggers: list, stop: StopRequest) -> None:
    """Train (or fit in one pass) with each epoch logged and saved, and snapshots for the loggers
    that take them: every inspect.every epochs, and of the final model."""
    cfg, model = setup.cfg, setup.model
    inspector = None
    if any(logger.takes_snapshots for logger in loggers):
        inspector = Inspector(setup.data, cfg.inspect.every, cfg.inspect.examples_per_digit)

    def snapshot(step: int) -> None:
        snap = inspector(model, step)
        for logger in loggers:
            if logger.takes_snapshots:
                logger.log_snapshot(snap)

    def end_of_epoch(metrics, model) -> None:
        row = metrics_of(setup, "running")
        for logger in loggers:  # logged first: a resume never misses an epoch that last.pt holds
            logger.log_epoch(row)
        if inspector is not None and inspector.due(metrics.epoch):
            snapshot(metrics.epoch)
        if setup.optimizer is not None:
            save_last(setup)

    if model.fits_in_one_pass:
        setup.state.history = fit_in_one_pass(model, setup.data)
        setup.state.epoch = len(setup.state.history)
        end_of_epoch(setup.state.history[-1], model)
    else:
        train(model, setup.data, setup.optimizer, epochs=cfg.trainer.epochs, batch_size=cfg.trainer.batch_size,
              seed=cfg.seed, on_epoch_end=end_of_epoch, progress=cfg.trainer.progress, bf16=cfg.trainer.bf16,
              state=setup.state, stop=stop)
    if inspector is not None and not setup.state.stopped and setup.state.epoch and inspector.last != setup.state.epoch:
        snapshot(setup.state.epoch)


def write_outputs(setup: Setup, stop: StopRequest) -> dict:
    """metrics.json, and model.pt for a finished run (last.pt for a stopped one); returns the metrics."""
    if setup.state.stopped:
        save_last(setup)
        metrics = metrics_of(setup, "interrupted", signal=signal.Signals(stop.signal).name)
        write_metrics(setup.run_dir, metrics)
        log.info("%s at epoch %d, step %d: saved %s", metrics["signal"], setup.state.epoch + 1, setup.state.step,
                 setup.run_dir / LAST_NAME)
        return metrics
    metrics = metrics_of(setup, "completed")
    save_checkpoint(setup.run_dir / "model.pt", setup.model, metrics=metrics, config=setup.config_yaml)
    write_metrics(setup.run_dir, metrics)
    if setup.state.history:
        log.info("valid accuracy %.2f%%, valid loss %.4f, %.0f train samples/s; outputs in %s",
                 100 * metrics["valid_accuracy"], metrics["valid_loss"], metrics["train_samples_per_s"], setup.run_dir)
    return metrics


def metrics_of(setup: Setup, status: str, **extra) -> dict:
    """What metrics.json says: the status, the last epoch's metrics and the run's settings."""
    cfg, data, history = setup.cfg, setup.data, setup.state.history
    last = history[-1].as_dict() if history else {}
    settings = {} if setup.optimizer is None else {
        "optimizer": optimizer_name(cfg), "lr": cfg.optimizer.lr, "batch_size": cfg.trainer.batch_size,
    }
    return {
        "status": status, **extra,
        **{key: last.get(key) for key in ("valid_accuracy", "valid_loss", "train_accuracy", "train_loss")},
        "epochs": len(history),
        "train_seconds": sum(m.train_seconds for m in history),
        "train_samples_per_s": samples_per_second(history, len(data.train)) if history else None,
        "device": str(setup.device), "data_source": data.source, "digits": list(data.digits),
        "n_train": len(data.train), "n_valid": len(data.valid), "model": type(setup.model).__name__,
        **settings, "seed": cfg.seed, "threads": torch.get_num_threads(),
    }


def write_metrics(run_dir: Path, metrics: dict) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def save_last(setup: Setup) -> None:
    save_training(setup.run_dir / LAST_NAME, setup.model, setup.optimizer, setup.state, setup.config_yaml)


def optimizer_name(cfg: DictConfig) -> str:
    """e.g. "SGD" for torch.optim.SGD."""
    return cfg.optimizer._target_.rsplit(".", 1)[-1]


NOT_APPLICABLE = "-"  # an HParams value for a key that this run's model or optimizer does not have


@functools.cache
def option_keys(group: str) -> tuple[str, ...]:
    """Every key that some option of a config group sets, e.g. ("bias", "distance", "hidden", "init_std")."""
    keys = set()
    for option in Path(config_dir(), group).glob("*.yaml"):
        keys |= {k for k in OmegaConf.load(option) if not str(k).startswith("_")}
    return tuple(sorted(keys))


def hparams_of(cfg: DictConfig, model, data, choices: dict | None = None) -> dict:
    """The settings that tell runs apart, flat and plain, for TensorBoard's HParams dashboard.

    Every run logs the same keys: the dashboard takes its columns from one run, so a key that only
    some runs had (model.hidden in a linear-vs-MLP sweep) would be missing for the others. A key that
    doesn't apply is "-". `choices`: config groups picked beyond model/optimizer/data/device, e.g.
    {"why_weights": "template_l1"}, which tell apart runs whose other settings agree.
    """
    one_pass = model.fits_in_one_pass  # no optimizer, no epochs
    optimizer = {} if one_pass else OmegaConf.to_container(cfg.optimizer)
    settings = {
        "model": type(model).__name__,
        **{f"model.{k}": NOT_APPLICABLE for k in option_keys("model")},
        **{f"model.{k}": v for k, v in model.hparams.items()},
        "optimizer": NOT_APPLICABLE if one_pass else optimizer_name(cfg),
        **{f"optimizer.{k}": NOT_APPLICABLE for k in option_keys("optimizer")},
        **{f"optimizer.{k}": v for k, v in optimizer.items() if not k.startswith("_")},
        "trainer.epochs": NOT_APPLICABLE if one_pass else cfg.trainer.epochs,
        "trainer.batch_size": NOT_APPLICABLE if one_pass else cfg.trainer.batch_size,
        "digits": ",".join(map(str, data.digits)), "data": data.source, "seed": cfg.seed,
        **{group: NOT_APPLICABLE if choice is None else choice for group, choice in (choices or {}).items()},
    }
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in settings.items()}


def extra_choices(hydra_cfg) -> dict:
    """The config groups a run picked besides the ones its settings already show, e.g. why_weights."""
    shown = {"model", "optimizer", "data", "device"}
    return {group: choice for group, choice in hydra_cfg.runtime.choices.items()
            if group not in shown and not group.startswith("hydra/")}


def threads_per_job(hydra_cfg) -> int | None:
    """CPU threads for one job, so that parallel jobs don't fight over the cores: the CPUs SLURM gave
    it; in a sweep on this machine, the launcher's cpus_per_task, or the cores shared by the jobs it
    runs at once (joblib's n_jobs, submitit's array_parallelism); None (torch's default) otherwise."""
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    if cpus := OmegaConf.select(hydra_cfg, "launcher.cpus_per_task"):
        return cpus
    cores = os.cpu_count() or 1
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs") or OmegaConf.select(hydra_cfg, "launcher.array_parallelism")
    if not n_jobs:
        return None  # the basic launcher: one job at a time
    parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 means every core
    return max(1, cores // min(parallel, cores))


def resume_command(overrides: list[str], run_dir: Path) -> str:
    """The command that continues the run in `run_dir`, ready to paste into a shell: the path is
    quoted for Hydra's override parser (job folders hold `=` and `,`) and then for the shell."""
    path = str(run_dir).replace("\\", "\\\\").replace('"', '\\"')
    kept = [o for o in overrides if not o.lstrip("+~").startswith("trainer.resume=")]
    return " ".join(["python -m mnist37.train", *map(shlex.quote, kept), shlex.quote(f'trainer.resume="{path}"')])


def interrupted(metrics: dict, hydra_cfg, run_dir: Path) -> float:
    """A run stopped by a signal, saved: say how to continue it. A job of a sweep returns (NaN, so an
    Optuna trial counts as failed), letting the launcher collect it and the sweep finish; a single
    run, or a job run by the sweep's own process (the basic launcher), exits with 128 + signal."""
    print(f"mnist37-train: {metrics['signal']} at epoch {metrics['epochs'] + 1}: saved {run_dir / LAST_NAME}; "
          f"continue with: {resume_command(list(hydra_cfg.overrides.task), run_dir)}", file=sys.stderr)
    in_own_process = OmegaConf.select(hydra_cfg, "launcher._target_", default="").endswith(".BasicLauncher")
    if hydra_cfg.mode == RunMode.MULTIRUN and not in_own_process:
        print("mnist37-train: or continue the whole sweep: the same sweep command with trainer.resume=auto", file=sys.stderr)
        return float("nan")
    raise SystemExit(128 + signal.Signals[metrics["signal"]])


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra task: returns the valid accuracy (what a sweeper optimises)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.trainer.threads is None:
        cfg.trainer.threads = threads_per_job(hydra_cfg)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        metrics = run(cfg, run_dir, extra_choices(hydra_cfg))
        if metrics["status"] == "interrupted":
            return interrupted(metrics, hydra_cfg, run_dir)
        return metrics["valid_accuracy"]
    except Exception as error:  # noqa: BLE001 - in a sweep, one job's failure must not end the others
        if not isinstance(error, BadInputError) and not sweeping:
            raise  # a bug in a single run: the whole traceback helps
        if not (run_dir / "metrics.json").exists():  # a diverged or resumed run has its own: keep it
            write_metrics(run_dir, {"status": "failed", "error": first_line(error)})
        if isinstance(error, BadInputError):
            log.error("%s", error)  # a bad input is a sentence for a person, not a traceback
        else:
            log.exception("job failed")
        if sweeping:
            return float("nan")  # the sweep goes on; Optuna records the trial as failed
        fail(str(error))


if __name__ == "__main__":
    # Run the app as `mnist37.train`, not `__main__`: launchers that ship the task to another process
    # (submitit, joblib) then pickle it by reference, and that process imports this module by name.
    from mnist37.train import main as app

    app()
