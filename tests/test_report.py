"""mnist37-report on hand-made job folders (running, half-written, failed, seeds) and on a real sweep."""

import csv
import io
import json
from pathlib import Path

import pytest

from helpers import run_cli
from mnist37.report import find_jobs, main, make_rows
from mnist37.train import config_dir


def job(root, name, overrides, metrics=None, raw=None):
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if raw is not None:
        (folder / "metrics.json").write_text(raw)
    return folder


def done(accuracy, loss=0.1, epochs=3):
    return {"status": "completed", "valid_accuracy": accuracy, "valid_loss": loss, "epochs": epochs, "train_seconds": 1.5}


@pytest.fixture
def sweep(tmp_path):
    job(tmp_path, "0_model=linear,optimizer=sgd", ["model=linear", "optimizer=sgd", "data=embedded"], done(0.95))
    job(tmp_path, "1_model=mlp,optimizer=sgd", ["model=mlp", "optimizer=sgd", "data=embedded"], done(0.98))
    job(tmp_path, "2_model=linear,optimizer=adam", ["model=linear", "optimizer=adam", "data=embedded"],
        {"status": "failed", "error": "optimizer.lr=-1 is not valid\nmore detail"})
    job(tmp_path, "3_model=mlp,optimizer=adam", ["model=mlp", "optimizer=adam", "data=embedded"])  # running
    job(tmp_path, "4_model=mlp,optimizer=adamw", ["model=mlp", "optimizer=adamw", "data=embedded"], raw='{"status": "compl')
    return tmp_path


def test_rows_show_what_varies_best_first_and_every_state(sweep):
    columns, rows = make_rows(find_jobs(sweep))
    assert columns == ["model", "optimizer"]  # data=embedded is the same everywhere
    assert [r.settings for r in rows][:2] == [{"model": "mlp", "optimizer": "sgd"}, {"model": "linear", "optimizer": "sgd"}]
    statuses = {tuple(r.settings.values()): (r.status, r.error) for r in rows}
    assert statuses["linear", "adam"] == ("failed", "optimizer.lr=-1 is not valid")
    assert statuses["mlp", "adam"] == ("running", "")
    assert statuses["mlp", "adamw"] == ("running", "")  # half-written metrics: not trusted, not a crash


def test_table_marks_the_best(sweep, capsys):
    assert main([str(sweep)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "optimizer", "valid_acc"]
    assert lines[1].startswith("*") and "mlp" in lines[1] and "98.00" in lines[1]
    assert sum(line.startswith("*") for line in lines) == 1


def test_every_format_parses(sweep, capsys):
    main([str(sweep), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["best"] and rows[0]["valid_accuracy"] == 0.98 and len(rows) == 5
    main([str(sweep), "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert table[0]["best"] == "*" and table[0]["model"] == "mlp" and len(table) == 5
    main([str(sweep), "--format", "markdown"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("| ---") and all(line.startswith("|") for line in lines)


def test_seeds_are_grouped_into_mean_and_std(tmp_path, capsys):
    for seed, (lin, mlp) in enumerate([(0.95, 0.97), (0.96, 0.98), (0.97, 0.99)]):
        job(tmp_path, f"{2 * seed}", ["model=linear", f"seed={seed}"], done(lin))
        job(tmp_path, f"{2 * seed + 1}", ["model=mlp", f"seed={seed}"], done(mlp))
    columns, rows = make_rows(find_jobs(tmp_path))
    assert columns == ["model"] and [len(r.jobs) for r in rows] == [3, 3]
    assert rows[0].settings == {"model": "mlp"} and rows[0].mean("valid_accuracy") == pytest.approx(0.98)
    assert rows[0].std("valid_accuracy") == pytest.approx(0.01)
    main([str(tmp_path)])
    assert "98.00 ± 1.00" in capsys.readouterr().out


def test_single_run_and_bad_paths(tmp_path, capsys):
    run = job(tmp_path, "run", [], done(0.9))
    assert main([str(run)]) == 0 and "90.00" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no runs under" in capsys.readouterr().err


@pytest.mark.slow
def test_why_weights_experiment_compares_every_contender(tmp_path, data_root):
    result = run_cli("-m", "experiment=why_weights", "data=embedded", f"data.root={data_root}", "seed=0",
                     "trainer.epochs=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    columns, rows = make_rows(find_jobs(sweep))
    assert columns == ["why_weights"]
    contenders = {p.stem for p in (Path(config_dir()) / "why_weights").glob("*.yaml")}  # all of them, cnn too
    assert {r.settings["why_weights"] for r in rows} == contenders and len(contenders) >= 6
    for row in rows:
        assert row.status == "completed" and row.mean("valid_accuracy") > 0.8  # 3 epochs: the CNN is at ~86%
    models = {r.settings["why_weights"]: json.loads((r.jobs[0].folder / "metrics.json").read_text())["model"] for r in rows}
    assert models["template_l1"] == "TemplateModel" and models["linear_no_bias"] == "LinearModel"
    assert models["cnn"] == "CNN"
