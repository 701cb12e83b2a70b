"""Real sweeps in temporary folders, kept small: every launcher, Optuna, the report, HParams."""

import json

import pytest
import yaml
from hydra.utils import instantiate

from helpers import run_cli
from mnist37.report import find_jobs, main as report_main, make_rows

pytestmark = pytest.mark.slow

SMALL = ["data=embedded", "trainer.epochs=1", "inspect.examples_per_digit=0"]


def sweep_dir(cwd):
    (folder,) = (cwd / "outputs" / "multirun").iterdir()
    return folder


def job_dirs(folder):
    return sorted(p.parent.parent for p in folder.glob("*/.hydra/overrides.yaml"))


def completed(folder, n):
    jobs = find_jobs(folder)
    assert len(jobs) == n and all(j.status == "completed" for j in jobs), [(j.folder, j.status, j.error) for j in jobs]
    return jobs


def test_joblib_runs_jobs_side_by_side_with_threads_shared(tmp_path, data_root):
    result = run_cli("-m", *SMALL, f"data.root={data_root}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "model=linear,mlp", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = completed(sweep_dir(tmp_path), 2)
    import os

    expected_threads = max(1, (os.cpu_count() or 1) // 2)
    assert {j.metrics["threads"] for j in jobs} == {expected_threads}
    assert {j.overrides["model"] for j in jobs} == {"linear", "mlp"}


def test_submitit_local_runs_real_subprocesses(tmp_path, data_root):
    result = run_cli("-m", *SMALL, f"data.root={data_root}", "hydra/launcher=submitit_local",
                     "optimizer=sgd,adam", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = sweep_dir(tmp_path)
    completed(folder, 2)
    assert (folder / ".submitit").is_dir()  # submitit's own job records: it really went through the plugin


def test_slurm_preset_composes_with_overridable_settings():
    from hydra import compose, initialize_config_dir

    from mnist37.train import config_dir

    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=long", "hydra.launcher.gpus_per_node=2"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.mnist37_plugins.slurm_launcher.SlurmLauncher"
    assert launcher.partition == "long" and launcher.gpus_per_node == 2 and launcher.timeout_min == 30
    assert launcher.cpus_per_task == 2 and launcher.max_num_timeout == 0  # fits a small node; no requeue


def optuna_trials(journal, study_name):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=study_name, storage=JournalStorage(JournalFileBackend(str(journal)))).trials


def test_optuna_search_reports_the_best_trial(tmp_path, data_root):
    result = run_cli(*SMALL, f"data.root={data_root}", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "best trial" in result.stdout + result.stderr
    folder = sweep_dir(tmp_path)
    jobs = completed(folder, 3)
    best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(j.metrics["valid_accuracy"] for j in jobs)
    assert set(best["best_params"]) == {"optimizer", "optimizer.lr", "trainer.batch_size", "model.hidden"}


def test_optuna_failed_trials_are_recorded_as_failed_and_the_search_goes_on(tmp_path, data_root):
    from optuna.trial import TrialState

    journal = tmp_path / "study.journal"
    result = run_cli(*SMALL, f"data.root={data_root}", "hparams_search=optuna", "hydra.sweeper.n_trials=6",
                     f"hydra.sweeper.storage={journal}", "optimizer=sgd", "optimizer.lr=choice(1e38,0.25)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = optuna_trials(journal, "mnist37")
    jobs = {j.folder.name.split("_", 1)[0]: j for j in find_jobs(sweep_dir(tmp_path))}
    assert len(trials) == len(jobs) == 6
    for trial in trials:  # job folder n is trial n: a diverged job is a FAIL, a completed one its accuracy
        job = jobs[str(trial.number)]
        if trial.params["optimizer.lr"] == 1e38:
            assert job.status == "diverged" and trial.state == TrialState.FAIL
        else:
            assert job.status == "completed" and trial.value == job.metrics["valid_accuracy"]
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.COMPLETE}


def test_two_searches_share_one_journal_study_and_a_restart_continues_it(tmp_path, data_root):
    import os
    import subprocess
    import sys

    journal = tmp_path / "shared.journal"
    argv = [sys.executable, "-m", "mnist37.train", *SMALL, f"data.root={data_root}", "hparams_search=optuna",
            f"hydra.sweeper.storage={journal}", "hydra.sweeper.study_name=shared", "logger=none"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    searches = [subprocess.Popen([*argv, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir=s{i}"], cwd=tmp_path, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for search in searches:
        assert search.wait(timeout=300) == 0, search.stderr.read()
    trials = optuna_trials(journal, "shared")
    assert 6 <= len(trials) <= 7  # one budget; a search may ask once more than the other left
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # no trial proposed twice
    ran = [len(list((tmp_path / f"s{i}").glob("*/metrics.json"))) for i in range(2)]
    assert min(ran) >= 1 and sum(ran) == len(trials)  # both searches took part

    again = run_cli(*SMALL[:2], f"data.root={data_root}", "hparams_search=optuna", f"hydra.sweeper.storage={journal}",
                    "hydra.sweeper.study_name=shared", "logger=none", "hydra.sweeper.n_trials=9",
                    "hydra.sweep.dir=s2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(optuna_trials(journal, "shared")) == max(9, len(trials))  # continued: only the missing trials ran
    assert len(list((tmp_path / "s2").glob("*/metrics.json"))) == max(9, len(trials)) - len(trials)


def test_seeds_are_grouped_and_every_report_format_works(tmp_path, data_root, capsys):
    result = run_cli("-m", *SMALL, f"data.root={data_root}", "model=linear,mlp", "seed=range(3)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = sweep_dir(tmp_path)
    columns, rows = make_rows(find_jobs(folder))
    assert columns == ["model"] and [len(r.jobs) for r in rows] == [3, 3]
    for fmt in ("table", "markdown", "csv", "json"):
        assert report_main([str(folder), "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert "mlp" in out and "linear" in out
    report_main([str(folder), "--format", "json"])
    assert all(row["valid_accuracy_std"] is not None for row in json.loads(capsys.readouterr().out))


def test_every_job_has_the_same_hparams_in_its_own_run(tmp_path, data_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    result = run_cli("-m", *SMALL, f"data.root={data_root}", "model=linear,mlp,template", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    logged = {}
    for job in job_dirs(sweep_dir(tmp_path)):
        assert [p for p in job.rglob("events.out.tfevents.*") if p.parent != job] == []  # nothing nested
        events = EventAccumulator(str(job))
        events.Reload()
        content = events.PluginTagToContent("hparams")
        assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = {k: v.string_value or v.number_value or v.bool_value for k, v in start.session_start_info.hparams.items()}
        logged[json.loads((job / "metrics.json").read_text())["model"]] = hparams
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
        assert {h.name for h in experiment.experiment.hparam_infos} == set(hparams)  # the dashboard's columns
        metric_tags = {m.name.tag for m in experiment.experiment.metric_infos}
        assert metric_tags == {"accuracy/valid", "loss/valid"} <= set(events.Tags()["scalars"])
    linear, mlp, template = logged["LinearModel"], logged["MLP"], logged["TemplateModel"]
    assert set(linear) == set(mlp) == set(template)  # one key set: every row has every column
    assert {"model.hidden", "model.distance", "model.bias", "optimizer.lr", "optimizer.weight_decay"} <= set(linear)
    assert (linear["model"], mlp["model.hidden"], template["model.distance"]) == ("LinearModel", 30, "l1")
    assert (linear["model.hidden"], mlp["model.distance"], template["optimizer"]) == ("-", "-", "-")
    assert mlp["optimizer"] == "SGD" and mlp["optimizer.lr"] == 0.25


def test_hparams_name_the_preset_contender(data_root):
    from mnist37.data import load_embedded
    from mnist37.train import hparams_of
    from helpers import make_config

    data = load_embedded(data_root, (3, 7))
    rows = {}
    for contender in ("template_l1", "template_l2"):
        cfg = make_config(f"+why_weights={contender}", "data=embedded")
        model = instantiate(cfg.model, digits=data.digits)
        rows[contender] = hparams_of(cfg, model, data, choices={"why_weights": contender})
    l1, l2 = rows["template_l1"], rows["template_l2"]
    assert set(l1) == set(l2) and (l1["why_weights"], l2["why_weights"]) == ("template_l1", "template_l2")
    assert (l1["model.distance"], l2["model.distance"]) == ("l1", "l2")


def test_a_failing_job_keeps_the_others(tmp_path, data_root, capsys):
    result = run_cli("-m", *SMALL, f"data.root={data_root}", "optimizer.lr=-1,0.25", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = sweep_dir(tmp_path)
    statuses = {j.overrides["optimizer.lr"]: (j.status, j.error) for j in find_jobs(folder)}
    assert statuses["0.25"] == ("completed", "")
    assert statuses["-1"][0] == "failed" and "optimizer.lr=-1 is not valid" in statuses["-1"][1]
    report_main([str(folder)])
    assert "failed: optimizer.lr=-1 is not valid" in capsys.readouterr().out


def test_two_sweeps_in_the_same_second_never_collide(tmp_path, data_root):
    import subprocess
    import sys

    argv = [sys.executable, "-m", "mnist37.train", "-m", *SMALL, f"data.root={data_root}", "model=linear"]
    first, second = (subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                     for _ in range(2))
    assert first.wait() == 0 and second.wait() == 0
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 2 and all(len(job_dirs(s)) == 1 for s in sweeps)


def snapshot(folder):
    """Every file under `folder` with its bytes and modification time."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_used_sweep_folder_is_refused_and_resume_auto_skips_its_completed_jobs(tmp_path, data_root):
    sweep = ["-m", *SMALL, f"data.root={data_root}", "hydra.sweep.dir=sweep"]
    assert run_cli(*sweep, "seed=0,1", cwd=tmp_path).returncode == 0
    before = snapshot(tmp_path / "sweep")

    again = run_cli(*sweep, "seed=0,1", cwd=tmp_path)
    assert again.returncode == 1
    (line,) = again.stderr.strip().splitlines()
    assert "sweep already holds 2 job(s) of a sweep: refusing to overwrite them; add trainer.resume=auto" in line
    assert snapshot(tmp_path / "sweep") == before  # nothing written, not even multirun.yaml

    more = run_cli(*sweep, "seed=0,1,2", "trainer.resume=auto", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert more.stderr.count("holds a completed run: skipped (trainer.resume=auto)") == 2
    after = snapshot(tmp_path / "sweep")
    jobs = [p for p in before if p.parent != tmp_path / "sweep"]  # not multirun.yaml, not the sweep's lock
    assert {p: after[p] for p in jobs} == {p: before[p] for p in jobs}  # the completed jobs: untouched
    completed(tmp_path / "sweep", 3)


def job_processes(marker: str) -> list[int]:
    """PIDs of the processes whose command line holds `marker`."""
    from pathlib import Path

    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not __import__("pathlib").Path("/proc").is_dir(), reason="finds job processes in /proc")
def test_interrupted_jobs_return_so_the_sweep_ends_and_resume_auto_finishes_them(tmp_path, data_root):
    """SIGUSR2 is what SLURM sends before a time limit: each job saves, returns, and the sweep command
    ends by itself; the same command with trainer.resume=auto continues both jobs to the end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sweep = ["-m", "data=embedded", f"data.root={data_root}", "trainer.epochs=1000", "trainer.batch_size=64",
             "logger=none", "seed=0,1", "hydra.sweep.dir=sweep"]
    process = subprocess.Popen([sys.executable, "-m", "mnist37.train", *sweep, "hydra/launcher=submitit_local"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    signalled = set()
    deadline = time.monotonic() + 180
    while len(signalled) < 2 and process.poll() is None and time.monotonic() < deadline:
        if len(list((tmp_path / "sweep").glob("*/last.pt"))) == 2:  # both jobs are training
            for pid in set(job_processes(f"submitit.core._submit {tmp_path / 'sweep' / '.submitit'}")) - signalled:
                os.kill(pid, signal.SIGUSR2)
                signalled.add(pid)
        time.sleep(0.05)
    stderr = process.communicate(timeout=180)[1]
    assert process.returncode == 0 and len(signalled) == 2, stderr
    jobs = find_jobs(tmp_path / "sweep")
    assert [j.status for j in jobs] == ["interrupted", "interrupted"]
    assert all(j.metrics["signal"] == "SIGUSR2" and 0 < j.metrics["epochs"] < 1000 for j in jobs)

    finish = run_cli(*sweep, "trainer.resume=auto", cwd=tmp_path)
    assert finish.returncode == 0, finish.stderr
    assert all(j.metrics["epochs"] == 1000 for j in completed(tmp_path / "sweep", 2))
    assert finish.stderr.count("resuming from") + finish.stdout.count("resuming from") == 2


def test_threads_follow_slurm_cpus_per_task(monkeypatch):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from mnist37.train import threads_per_job

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert threads_per_job(OmegaConf.create({"mode": RunMode.MULTIRUN, "launcher": {"n_jobs": 1}})) == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert threads_per_job(OmegaConf.create({"mode": RunMode.RUN})) is None
    sweep = lambda **launcher: threads_per_job(OmegaConf.create({"mode": RunMode.MULTIRUN, "launcher": launcher}))  # noqa: E731
    assert sweep() is None  # one job at a time: torch's default
    assert sweep(n_jobs=2) == 4 and sweep(n_jobs=-1) == 1  # joblib
    assert sweep(array_parallelism=256, cpus_per_task=None) == 1 and sweep(cpus_per_task=2) == 2  # submitit


def test_optuna_database_storage_continues_a_study(tmp_path, data_root):
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    common = [*SMALL, f"data.root={data_root}", "hparams_search=optuna", f"hydra.sweeper.storage={url}",
              "hydra.sweeper.study_name=db", "logger=none"]
    assert run_cli(*common, "hydra.sweeper.n_trials=2", "hydra.sweep.dir=first", cwd=tmp_path).returncode == 0
    again = run_cli(*common, "hydra.sweeper.n_trials=3", "hydra.sweep.dir=second", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(optuna.load_study(study_name="db", storage=url).trials) == 3
    assert [m.parent.name.split("_")[0] for m in (tmp_path / "second").glob("*/metrics.json")] == ["2"]  # trial 2 only
