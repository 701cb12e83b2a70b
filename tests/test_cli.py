"""The Hydra app: config composition, a real run, a real sweep, outputs read back, clear errors."""

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from helpers import make_config, run_cli
from mnist37 import LinearModel, load_embedded, load_model
from mnist37.train import config_dir, run

GROUPS = {
    group: sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))
    for group in ("data", "model", "optimizer", "device")
}
METRIC_KEYS = {
    "valid_accuracy", "valid_loss", "train_loss", "epochs", "train_samples_per_s", "device",
    "data_source", "n_train", "n_valid", "model", "seed",
}


def test_each_group_default_is_one_of_its_options():
    cfg = make_config()
    choices = {"data": "load_mnist", "model": "LinearModel", "optimizer": "SGD", "device": None}
    assert all(GROUPS[group] for group in choices)
    assert cfg.model._target_.endswith(choices["model"]) and cfg.data._target_.endswith(choices["data"])


@pytest.mark.parametrize("option", GROUPS["model"])
def test_every_model_option_trains_logs_explains_and_reloads(option, tmp_path, data_root):
    """A model added as a class and a YAML file needs nothing else: this finds it in configs/model/."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_config(f"model={option}", "data=embedded", f"data.root={data_root}", "trainer.epochs=1", "device=cpu")
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "completed" and metrics["valid_accuracy"] > 0.5
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert {"explain/examples", "mistakes/valid"} & set(events.Tags()["images"])
    model = load_model(tmp_path)
    assert type(model).__name__ == metrics["model"]
    valid = load_embedded(data_root, (3, 7)).valid
    accuracy = (model.predict(valid.x) == torch.tensor([3, 7])[valid.y]).float().mean().item()
    assert accuracy == pytest.approx(metrics["valid_accuracy"])


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_option_composes_and_builds(group, option):
    cfg = make_config(f"{group}={option}")
    model = instantiate(cfg.model, digits=(3, 7))
    assert model(torch.zeros(2, 784)).shape == (2,)
    optimizer = instantiate(cfg.optimizer)(LinearModel().parameters())
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr
    assert cfg.device.type in ("auto", "cpu", "cuda")


def test_defaults_are_the_lesson():
    cfg = make_config()
    assert cfg.model._target_.endswith("LinearModel") and cfg.model.bias is True
    assert list(cfg.data.digits) == [3, 7] and cfg.data._target_.endswith("load_mnist")
    assert cfg.device.type == "auto" and cfg.optimizer._target_ == "torch.optim.SGD"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = make_config("data=embedded", f"data.root={data_root}", "trainer.epochs=3", "device=cpu")
    return run_dir, run(cfg, run_dir)


def test_run_writes_metrics(finished_run):
    run_dir, metrics = finished_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == metrics and METRIC_KEYS <= saved.keys()
    assert saved["epochs"] == 3 and saved["n_train"] == 800 and saved["data_source"] == "embedded"
    assert saved["valid_accuracy"] > 0.9 and saved["train_samples_per_s"] > 0


def test_checkpoint_round_trip(finished_run, digits37):
    run_dir, metrics = finished_run
    saved = torch.load(run_dir / "model.pt", weights_only=True)  # plain values only
    model = load_model(run_dir / "model.pt")
    assert isinstance(model, LinearModel) and not model.training and model.digits == (3, 7)
    assert torch.equal(model.weights, saved["state_dict"]["weights"])
    assert load_model(run_dir).digits == (3, 7)  # a run folder works too
    predicted = model.predict(digits37.valid.x.reshape(-1, 28, 28))
    accuracy = (predicted == torch.tensor([3, 7])[digits37.valid.y]).float().mean().item()
    assert accuracy == pytest.approx(metrics["valid_accuracy"])


def test_tensorboard_has_curves_weight_images_and_histograms(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, metrics = finished_run
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss/train", "loss/valid", "accuracy/train", "accuracy/valid"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3]
    assert events.Scalars("accuracy/valid")[-1].value == pytest.approx(metrics["valid_accuracy"])
    images = events.Images("weights/model")  # a snapshot at the end: inspect.every (20) is past 3 epochs
    assert [e.step for e in images] == [3] and images[0].width == 28 and images[0].height == 28
    assert {"params/weights", "params/bias"} <= set(tags["histograms"])
    assert [e.step for e in events.Histograms("params/weights")] == [3]


def test_weight_image_shows_sign():
    from mnist37.explain import signed_rgb

    maps = torch.zeros(1, 28, 28)
    maps[0, 0, 0], maps[0, 0, 1] = 2.0, -0.5
    rgb = signed_rgb(maps)[0]
    assert rgb[:, 0, 0].tolist() == [0.0, 0.0, 1.0]  # strongest positive: blue
    assert rgb[:, 0, 1].tolist() == [1.0, 0.75, 0.75]  # weak negative: light red
    assert rgb[:, 5, 5].tolist() == [1.0, 1.0, 1.0]  # zero: white


@pytest.mark.slow
def test_cli_run_and_sweep(tmp_path, data_root):
    common = ["data=embedded", f"data.root={data_root}", "trainer.epochs=1"]
    single = run_cli(*common, cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"

    sweep = run_cli("-m", *common, "model=linear,mlp", "optimizer=sgd,adam", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1", "2", "3"]
    models = {json.loads((j / "metrics.json").read_text())["model"] for j in jobs}
    assert models == {"LinearModel", "MLP"}
    for job in jobs:
        assert (job / "model.pt").is_file() and list(job.glob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without CUDA")
def test_cli_cuda_without_cuda_fails_at_once_in_one_line(tmp_path):
    result = run_cli("device=cuda", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("mnist37-train: error: device=cuda but CUDA is not available")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_missing_data_and_bad_model(tmp_path):
    missing = run_cli("data.download=false", f"data.root={tmp_path / 'empty'}", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("mnist37-train: error: MNIST files not found in")
    assert len(missing.stderr.strip().splitlines()) == 1  # one line, no traceback

    bad_model = run_cli("model=resnet", cwd=tmp_path)
    assert bad_model.returncode != 0
    assert "model/resnet" in bad_model.stderr and "linear" in bad_model.stderr and "mlp" in bad_model.stderr


def test_csv_logger_writes_a_row_per_epoch_with_the_columns_of_metrics_json(tmp_path, data_root):
    import csv

    common = ["data=embedded", f"data.root={data_root}", "device=cpu", "logger=csv"]
    metrics = run(make_config(*common, "trainer.epochs=3"), tmp_path)
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # only the logger asked for
    from mnist37.run_folder import foreign_files

    assert foreign_files(tmp_path) == []  # metrics.csv is a run's own file: the folder can be resumed
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epochs"]) for r in rows] == [1, 2, 3] and list(rows[0]) == list(metrics)
    assert float(rows[-1]["valid_accuracy"]) == pytest.approx(metrics["valid_accuracy"])

    run(make_config(*common, "trainer.epochs=5", f"trainer.resume={tmp_path}"), tmp_path)  # continues the table
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert [int(r["epochs"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]
