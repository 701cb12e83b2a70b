"""Nothing lost, nothing let in, part 2: hostile overrides, folders, checkpoints, pictures and
report inputs each get one line naming the value, and change nothing that is not the run's own."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import REPO, make_config, run_cli, trained, write_idx
from mnist37 import MLP, LinearModel, load_model, save_checkpoint
from mnist37.checkpoints import CheckpointError
from mnist37.data import DataError, load_mnist
from mnist37.loop import DivergedError, train
from mnist37.report import main as report_main
from mnist37.run_folder import hold, held, is_held


def files_under(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(result) -> str:
    """The run's one-line error: exit code 1, and stderr's last line says it all."""
    assert result.returncode == 1, result.stderr
    return result.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- the command line

REFUSED = {  # override(s): what the one line says
    "trainer.resume=": "trainer.resume='' is not valid: give a run folder",
    "trainer.resume=nowhere/run": "trainer.resume=nowhere/run: no such folder",
    "seed=99999999999999999999": "seed=99999999999999999999 is not valid: use a whole number from 0 to 2**63 - 1",
    "trainer.batch_size=99999999999999999999": "trainer.batch_size=99999999999999999999 is not valid",
    "+optimizer.momentm=0.9": "optimizer.momentm is not a setting of torch.optim.SGD: use one of",
    "+optimizer.momentum=-1": "torch.optim.SGD refused its settings (Invalid momentum value: -1)",
    "data.digits=[true,7]": "data.digits=[True, 7] is not valid",
    "data.digits=[3.9,7.2]": "data.digits=[3.9, 7.2] is not valid",
    "model.init_std=inf": "model.init_std=inf is not valid: use a finite number >= 0",
    "optimizer.lr=inf": "optimizer.lr=inf is not valid: use a finite number > 0",
    "model._target_=builtins.print": "the override 'model._target_=builtins.print' is not allowed",
    "+model.digits=[1,2]": "model.digits is not a setting of mnist37.models.LinearModel",
    "hydra.run.dir=" + "x" * 300: "cannot use the output folder",
}


@pytest.mark.slow
@pytest.mark.parametrize("override", REFUSED, ids=[o[:40] for o in REFUSED])
def test_bad_overrides_are_one_line_and_write_nothing(override, tmp_path, data_root):
    before = sorted(os.listdir(tmp_path))
    result = run_cli("data=embedded", f"data.root={data_root}", "trainer.epochs=1", override, cwd=tmp_path)
    assert error_line(result).startswith("mnist37-train: error: ") and REFUSED[override] in error_line(result)
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == before  # no outputs/, no .hydra/, nothing


@pytest.mark.slow
def test_an_override_that_would_call_code_calls_nothing(tmp_path, data_root):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    attack = f"+data.x={{_target_:builtins.open,file:{victim},mode:w}}"
    for argv in ([attack], ["-m", attack, "seed=0,1"]):
        result = run_cli(*argv, "data=embedded", f"data.root={data_root}", cwd=tmp_path)
        assert "is not allowed: _target_" in error_line(result)
        assert victim.read_text() == "precious"
    assert not (tmp_path / "outputs").exists()


def test_a_nested_target_in_a_setting_is_refused_even_without_hydra(data_root):
    from mnist37.config import validate
    from mnist37.errors import BadInputError

    cfg = make_config("data=embedded", f"data.root={data_root}")
    cfg.data.digits = {"_target_": "builtins.print"}
    with pytest.raises(BadInputError, match="data.digits is not valid: a setting can't hold _target_"):
        validate(cfg)


@pytest.mark.slow
def test_a_folder_of_other_files_is_never_written_into(tmp_path, data_root):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    before = files_under(home)
    for target in (f"hydra.run.dir={home}", f"hydra.sweep.dir={home}"):
        argv = ["-m", target, "seed=0,1"] if "sweep" in target else [target]
        result = run_cli(*argv, "data=embedded", f"data.root={data_root}", cwd=tmp_path)
        assert "holds files that are not a " in error_line(result) and "thesis.tex" in error_line(result)
        assert files_under(home) == before and sorted(os.listdir(home)) == ["thesis.tex"]


@pytest.mark.slow
def test_a_refused_resume_changes_nothing_in_the_run(tmp_path, data_root):
    run = tmp_path / "run"
    assert run_cli("data=embedded", f"data.root={data_root}", "trainer.epochs=2", f"hydra.run.dir={run}",
                   cwd=tmp_path).returncode == 0
    before = files_under(run)
    for change, says in (("model=mlp", "this run asks for MLP"), ("optimizer=adam", "with Adam"),
                         ("data.digits=[1,7]", "for digits [1, 7]")):
        result = run_cli("data=embedded", f"data.root={data_root}", change, f"trainer.resume={run}", cwd=tmp_path)
        assert "the checkpoint holds LinearModel" in error_line(result) and says in error_line(result)
    result = run_cli("data=embedded", f"data.root={data_root}", f"trainer.resume={run}/model.pt", cwd=tmp_path)
    assert "give the run folder or its last.pt (model.pt is not one" in error_line(result)
    assert files_under(run) == before  # .hydra/config.yaml included


@pytest.mark.slow
def test_two_runs_never_share_a_folder(tmp_path, data_root):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "mnist37.train", "data=embedded", f"data.root={data_root}",
                              "trainer.epochs=100000", "logger=none", f"hydra.run.dir={run}"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    for second in (["trainer.resume=auto", f"hydra.run.dir={run}"], [f"trainer.resume={run}"]):
        result = run_cli("data=embedded", f"data.root={data_root}", "trainer.epochs=100000", "logger=none",
                         *second, cwd=tmp_path)
        assert f"{run} is in use by another run (process {first.pid})" in error_line(result)
    assert first.poll() is None  # the first run went on undisturbed
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 128 + signal.SIGTERM, first.stderr.read()
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    assert not list(run.glob(".*.partial"))
    assert run_cli("data=embedded", f"data.root={data_root}", "trainer.epochs=1", "logger=none",
                   f"trainer.resume={run}", cwd=tmp_path).returncode == 0  # free again


def test_a_folder_is_held_by_one_process_and_let_go_after(tmp_path):
    other = [sys.executable, "-c", "import sys; from pathlib import Path; from mnist37.run_folder import hold; "
             "hold(Path(sys.argv[1]))", str(tmp_path)]
    with held(tmp_path):
        assert is_held(tmp_path)
        refused = subprocess.run(other, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and f"is in use by another run (process {os.getpid()})" in refused.stderr
    assert not is_held(tmp_path)
    assert subprocess.run(other, capture_output=True, timeout=60).returncode == 0
    assert hold(tmp_path) and not hold(tmp_path)  # this process: taken once, then already its own


# ---------------------------------------------------------------- training and data


def test_weights_broken_by_the_last_step_are_a_divergence(digits37):
    model = LinearModel(digits37.digits)
    with pytest.raises(DivergedError, match=r"the weights became nan or inf in epoch 1, by step 1 \(lr inf\)"):
        train(model, digits37, torch.optim.SGD(model.parameters(), lr=float("inf")), epochs=1, batch_size=1000)


def test_ctrl_c_while_the_data_loads_stops_before_the_first_step(tmp_path, data_root, monkeypatch):
    import mnist37.data
    from mnist37.train import run

    real = mnist37.data.read_embedded

    def interrupted_read(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of loading
        return real(*args, **kwargs)

    monkeypatch.setattr(mnist37.data, "read_embedded", interrupted_read)
    metrics = run(make_config("data=embedded", f"data.root={data_root}", "device=cpu", "logger=none"), tmp_path)
    assert metrics["status"] == "interrupted" and metrics["signal"] == "SIGINT" and metrics["epochs"] == 0
    assert (tmp_path / "last.pt").is_file() and not (tmp_path / "model.pt").exists()


def test_idx_files_without_images_or_without_a_digit_are_refused(idx_root):
    raw = idx_root / "MNIST" / "raw"
    labels = torch.arange(40) % 10
    write_idx(raw / "train-labels-idx1-ubyte", torch.where(labels == 7, 1, labels))  # no 7 left
    with pytest.raises(DataError, match=r"the train .* split has no images of digit\(s\) 7: choose data.digits"):
        load_mnist(idx_root, (3, 7), download=False)
    write_idx(raw / "t10k-images-idx3-ubyte", torch.zeros(0, 28, 28))
    write_idx(raw / "t10k-labels-idx1-ubyte", torch.zeros(0))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte holds no items"):
        load_mnist(idx_root, (3, 7), download=False)


# ---------------------------------------------------------------- checkpoints


def crafted(tmp_path, change) -> Path:
    saved = torch.load(save_checkpoint(tmp_path / "good.pt", MLP()), weights_only=True)
    change(saved)
    torch.save(saved, tmp_path / "crafted.pt")
    return tmp_path / "crafted.pt"


@pytest.mark.parametrize("change,says", [
    (lambda c: c["hparams"].update(hidden=10**12), "does not describe a working MLP: Error(s) in loading state_dict"),
    (lambda c: c["hparams"].update(evil=1), "are not those of a MLP (it takes hidden)"),
    (lambda c: c.pop("state_dict"), "holds no weights"),
    (lambda c: c["state_dict"].pop("layers.2.bias"), 'Missing key(s) in state_dict: "layers.2.bias"'),
    (lambda c: c.update(digits=[3, 3]), "data.digits=[3, 3] is not valid"),
], ids=["huge hidden", "extra setting", "no weights", "missing weight", "bad digits"])
def test_crafted_checkpoints_with_the_format_marker_are_refused(change, says, tmp_path):
    with pytest.raises(CheckpointError) as error:
        load_model(crafted(tmp_path, change))  # a 10**12-unit MLP is never allocated: it would need 3 TB
    assert says in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------- predict


@pytest.fixture
def checkpoint(tmp_path, digits37):
    return save_checkpoint(tmp_path / "model.pt", trained(LinearModel, digits37, epochs=5))


def digit_picture(digits37, row: int, size: int = 140) -> Image.Image:
    return Image.fromarray((digits37.valid.x[row].reshape(28, 28) * 255).byte().numpy(), "L").resize((size, size))


def test_predict_keeps_going_past_every_kind_of_bad_file(checkpoint, digits37, tmp_path, monkeypatch, capsys):
    from mnist37.predict import main

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    digit_picture(digits37, 0).save(tmp_path / "a" / "x.png")  # a 3
    digit_picture(digits37, 150).save(tmp_path / "b" / "x.png")  # a 7
    Image.new("L", (400, 400)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 400x400 is then a "decompression bomb"
    pictures = [str(tmp_path / p) for p in ("a/x.png", "bomb.png", "b/x.png")]
    assert main(["--checkpoint", str(checkpoint), "--explain", "--explain-dir", str(tmp_path / "ex"), *pictures]) == 1
    out, err = capsys.readouterr()
    assert f"{pictures[1]}: too many pixels to be a picture of a digit (more than 100,000)" in err
    assert f"{pictures[0]}: 3 (p=" in out and f"{pictures[2]}: 7 (p=" in out
    assert sorted(os.listdir(tmp_path / "ex")) == ["x-2.explain.png", "x.explain.png"]  # none overwritten

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    assert main(["--checkpoint", str(checkpoint), "--explain", "--explain-dir", str(blocker), pictures[0], pictures[2]]) == 1
    out, err = capsys.readouterr()
    assert f"{pictures[0]}: 3 (p=" in out and f"{pictures[2]}: 7 (p=" in out  # still predicted
    assert err.count(f"({blocker}: not a folder)") == 2 and blocker.read_text() == ""


def test_a_float_tiff_in_0_1_is_read_as_a_digit(checkpoint, digits37, tmp_path, capsys):
    from mnist37.predict import main, read_image

    three = digits37.valid.x[0].reshape(28, 28)
    Image.fromarray(three.numpy(), "F").save(tmp_path / "three.tif")
    assert torch.allclose(read_image(tmp_path / "three.tif"), three)
    assert main(["--checkpoint", str(checkpoint), str(tmp_path / "three.tif")]) == 0
    assert f"three.tif: 3 (p=" in capsys.readouterr().out


# ---------------------------------------------------------------- report


def make_job(root: Path, name: str, seed: int, metrics: str | None = None, lock: bool = False, fifo: bool = False,
             lr: float = 0.25):
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- optimizer.lr={lr}\n")
    if fifo:
        os.mkfifo(folder / "metrics.json")
    elif metrics is not None:
        (folder / "metrics.json").write_text(metrics)
    if lock:
        (folder / ".lock").write_text("12345\n")
    return folder


def test_report_takes_nan_infinity_huge_numbers_fifos_and_crashes_in_its_stride(tmp_path):
    make_job(tmp_path, "0", 0, json.dumps({"status": "completed", "valid_accuracy": 0.9, "epochs": 20}))
    make_job(tmp_path, "1", 1, '{"status": "completed", "valid_accuracy": NaN, "epochs": 20}')
    make_job(tmp_path, "2", 2, '{"status": "diverged", "valid_accuracy": Infinity, "epochs": ' + "9" * 400 + "}")
    make_job(tmp_path, "3", 3, json.dumps({"status": "interrupted", "valid_accuracy": 0.99, "epochs": 3}))
    make_job(tmp_path, "4", 4, lock=True)  # took its lock and died before writing metrics
    make_job(tmp_path, "5", 5, fifo=True)
    running = make_job(tmp_path, "6", 6)
    with held(running):
        report = subprocess.run([sys.executable, "-m", "mnist37.report", str(tmp_path), "--format", "json"],
                                capture_output=True, text=True, timeout=60)  # a FIFO read would hang here
    assert report.returncode == 0, report.stderr
    rows = {tuple(Path(j).name for j in row["jobs"]): row for row in json.loads(report.stdout)}
    assert rows[("0", "1")]["valid_accuracy"] == "nan" and not rows[("0", "1")]["best"]  # NaN: never best
    assert rows[("2",)]["valid_accuracy"] == "inf" and rows[("2",)]["epochs"] == "inf"
    assert rows[("3",)]["status"] == "interrupted" and not rows[("3",)]["best"]  # not averaged with completed
    assert rows[("4",)]["status"] == "crashed" and rows[("6",)]["status"] == "running"
    assert rows[("5",)]["error"] == "metrics.json is not a regular file"
    assert not any(row["best"] for row in rows.values())  # no completed job has a finite accuracy
    assert report_main([str(tmp_path)]) == 0  # the table too


def test_report_into_a_closed_pipe_is_quiet(tmp_path):
    for i in range(1500):  # more than a pipe holds, so the writer meets the closed end
        make_job(tmp_path, f"{i:04d}", 0, json.dumps({"status": "completed", "valid_accuracy": i / 1500}), lr=i)
    shell = f"{sys.executable} -m mnist37.report {tmp_path} | head -c 100"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, timeout=120, cwd=REPO)
    assert result.returncode == 0 and len(result.stdout) == 100
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "BrokenPipeError" not in result.stderr and "Traceback" not in result.stderr
