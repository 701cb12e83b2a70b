"""An Optuna sweeper for Hydra, through Optuna's ask/tell interface (Optuna >= 4).

The keys are those of hydra-optuna-sweeper (`hydra.sweeper.n_trials`, `n_jobs`, `study_name`,
`storage`, `direction`, `sampler`, `params`), with its search-space syntax:

    params:
      optimizer: choice(sgd, adam)                   # categorical
      optimizer.lr: tag(log, interval(1e-4, 1.0))    # float, log scale
      trainer.batch_size: range(32, 257, step=32)    # int with a step
      model.hidden: int(interval(8, 128))            # int

Each batch asks the study for `n_jobs` trials, launches them as one batch of jobs (job number =
trial number, so job folders never repeat within a study) and tells the study each job's value. A
job that fails, or returns NaN (every failed or interrupted mnist37 job does), is told as FAIL and
the search goes on. `storage`: null keeps the study in memory; a plain path is an Optuna journal
file, safe for several searches at once (processes or SLURM jobs on one file system); a URL
(`sqlite:///...`, `postgresql://...`) is a database. Searches on the same storage and study name
share one study, and the search stops when the study holds `n_trials` finished trials, so a
stopped search started again continues where it was (searches running at once may together
overshoot by up to `n_jobs` each). With a storage the sampler's seed is not used: searches sharing
a study must not propose the same trials.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def distribution(override: Override):
    """The Optuna distribution for one sweep override of Hydra's grammar."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution([v for v in override.sweep_iterator(transformer=lambda x: x)])
    if isinstance(value, RangeSweep):
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step))
        return CategoricalDistribution(list(override.sweep_iterator(transformer=lambda x: x)))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space; use choice(...), range(...) or interval(...)")


def open_storage(storage: str | None):
    """None (in memory), a journal file for a plain path, or the database a URL names."""
    if storage is None or "://" in storage:
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(storage).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


class OptunaSweeper(Sweeper):
    def __init__(self, direction: str = "maximize", study_name: str | None = None, storage: str | None = None,
                 n_trials: int = 20, n_jobs: int = 1, sampler: Any = None, params: Any = None) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: use maximize or minimize")
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials}, n_jobs={n_jobs}: both must be >= 1")
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler = sampler
        self.params = OmegaConf.to_container(params) if OmegaConf.is_config(params) else dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        given = parser.parse_overrides(list(arguments))  # the command line wins over `params`
        keys = {o.get_key_element() for o in given}
        searched = [f"{key}={value}" for key, value in self.params.items() if key not in keys]
        overrides = parser.parse_overrides(searched) + given
        space = {o.get_key_element(): distribution(o) for o in overrides if o.is_sweep_override()}
        fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
        sampler = instantiate(self.sampler) if self.sampler else None
        if sampler is not None and self.storage is not None:
            # Searches sharing a study would otherwise propose the very same trials, seed for seed;
            # a seed makes a search reproducible only in memory.
            sampler.reseed_rng()
        study = optuna.create_study(study_name=self.study_name, storage=open_storage(self.storage),
                                    sampler=sampler, direction=self.direction, load_if_exists=True)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        log.info("Optuna study %r (%s): %d of %d trials done; searching %s", study.study_name,
                 self.storage or "in memory", len(study.get_trials(states=finished)), self.n_trials, ", ".join(space))

        while (left := self.n_trials - len(study.get_trials(deepcopy=False, states=finished))) > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, left))]
            batch = [[*fixed, *(f"{key}={value}" for key, value in trial.params.items())] for trial in trials]
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, job in zip(trials, returns):
                try:
                    value = float(job.return_value)
                except Exception as error:  # noqa: BLE001 - any way a job can fail is a failed trial
                    log.warning("trial %d failed: %s", trial.number, error)
                    value = math.nan
                if math.isfinite(value):
                    study.tell(trial, value)
                else:
                    log.info("trial %d failed (value %s): recorded as FAIL", trial.number, value)
                    study.tell(trial, state=TrialState.FAIL)

        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not completed:
            log.warning("no trial of study %r completed", study.study_name)
            return
        best = study.best_trial
        log.info("best trial %d: value %s, params %s", best.number, best.value, best.params)
        OmegaConf.save(OmegaConf.create({"name": "optuna", "study_name": study.study_name,
                                         "best_trial": best.number, "best_params": best.params,
                                         "best_value": best.value, "n_trials": len(study.trials)}),
                       sweep_dir / "optimization_results.yaml")
