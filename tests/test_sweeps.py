"""Real sweeps in temporary folders, kept small: every launcher, Optuna, the report, HParams."""

import json

import pytest
import yaml
from hydra.utils import instantiate

from conftest import run_cli
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
    assert launcher._target_.endswith("SlurmLauncher")  # the submitit plugin's, extended by the preset
    assert launcher.partition == "long" and launcher.gpus_per_node == 2 and launcher.timeout_min == 30


def test_optuna_search_reports_the_best_trial(tmp_path, data_root):
    result = run_cli(*SMALL, f"data.root={data_root}", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Best value" in result.stdout + result.stderr
    folder = sweep_dir(tmp_path)
    jobs = completed(folder, 3)
    best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(j.metrics["valid_accuracy"] for j in jobs)
    assert set(best["best_params"]) == {"optimizer", "optimizer.lr", "trainer.batch_size", "model.hidden"}


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
    from test_cli import make_config

    data = load_embedded(data_root, (3, 7))
    rows = {}
    for contender in ("template_l1", "template_l2"):
        cfg = make_config(f"+why_weights={contender}", "data=embedded")
        model = instantiate(cfg.model, digits=data.digits)
        rows[contender] = hparams_of(cfg, model, data, is_template=True, choices={"why_weights": contender})
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
