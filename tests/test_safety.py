"""Nothing lost, nothing let in: resume after SIGKILL or Ctrl-C, safe loading, divergence, bad inputs."""

import json
import os
import pickle
import random
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import run_cli, write_idx
from mnist37.checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from mnist37.config import validate
from mnist37.data import DataError, load_mnist
from mnist37.errors import BadInputError
from mnist37.models import LinearModel
from helpers import make_config

# ---------------------------------------------------------------- resume after a crash or Ctrl-C

RESUMABLE = ["data=embedded", "trainer.epochs=40", "trainer.batch_size=16", "optimizer=adam"]


def start(tmp_path, data_root, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mnist37.train", *RESUMABLE, f"data.root={data_root}", *extra],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def final_weights(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def scalar_steps(run_dir, tag="loss/valid"):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, data_root):
    folder = tmp_path_factory.mktemp("unbroken")
    result = run_cli(*RESUMABLE, f"data.root={data_root}", "hydra.run.dir=run", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "run"


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_gives_identical_weights(tmp_path, data_root, unbroken):
    rng = random.Random(37)
    run_dir = tmp_path / "run"
    kills = 0
    process = start(tmp_path, data_root, "hydra.run.dir=run")
    for _ in range(3):
        wait_for(run_dir / "last.pt", process)
        time.sleep(rng.uniform(0.05, 0.6))  # somewhere in a later epoch, mid-step or mid-write
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        process = start(tmp_path, data_root, f"trainer.resume={run_dir}")
    assert process.wait() == 0, process.stderr.read()
    assert kills >= 1

    resumed, reference = final_weights(run_dir), final_weights(unbroken)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    assert scalar_steps(run_dir) == list(range(1, 41))  # no step missing, none twice


@pytest.mark.slow
def test_ctrl_c_saves_and_prints_a_resume_command_that_pastes(tmp_path, data_root, unbroken):
    run_dir = tmp_path / "runs" / "3_model=linear,seed=0"  # named like a sweep's job: = and , inside
    process = start(tmp_path, data_root, f'hydra.run.dir="{run_dir}"')
    wait_for(run_dir / "last.pt", process)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 130
    assert "SIGINT at epoch" in stderr
    saved = load_checkpoint(run_dir, name="last.pt")
    assert saved["train_state"]["step"] > 0 or saved["train_state"]["epoch"] > 0
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"

    command = stderr.split("continue with: ", 1)[1].splitlines()[0]
    assert command.startswith("python -m mnist37.train ")
    command = shlex.quote(sys.executable) + command[len("python"):]  # this test's Python, as typed in its venv
    resumed = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    reference = final_weights(unbroken)
    for name, tensor in final_weights(run_dir).items():
        assert torch.equal(tensor, reference[name])


@pytest.mark.slow
def test_sigterm_and_sigusr2_also_save(tmp_path, data_root):
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        run_dir = tmp_path / sig.name
        process = start(tmp_path, data_root, f"hydra.run.dir={sig.name}")
        wait_for(run_dir / "last.pt", process)
        process.send_signal(sig)
        stderr = process.communicate(timeout=60)[1]
        assert process.returncode == 128 + sig and f"{sig.name} at epoch" in stderr
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_resume_with_other_model_or_digits_is_refused(tmp_path, data_root, unbroken):
    for change in ("model=mlp", "data.digits=[1,7]"):
        result = run_cli(*RESUMABLE, f"data.root={data_root}", change, f"trainer.resume={unbroken}", cwd=tmp_path)
        assert result.returncode == 1
        assert "the checkpoint holds LinearModel" in result.stderr and "this run asks for" in result.stderr
    assert json.loads((unbroken / "metrics.json").read_text())["status"] == "completed"  # nothing lost


# ---------------------------------------------------------------- safe loading


class RunsCode:
    """Unpickling this calls open(marker, 'w'): what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_runs_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"format": "mnist37-checkpoint", "payload": RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match="not a loadable mnist37 checkpoint"):
        load_model(evil)
    assert not marker.exists()
    with open(evil, "rb") as f:  # the same file really does run code when loaded unsafely
        torch.load(f, weights_only=False)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "last.pt"
    evil.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"])
def test_broken_files_name_the_file(tmp_path, content):
    path = tmp_path / "model.pt"
    if content == "truncated":
        save_checkpoint(path, LinearModel())
        path.write_bytes(path.read_bytes()[:500])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path)


def test_a_foreign_but_safe_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not an mnist37 checkpoint"):
        load_model(path)


def test_checkpoint_is_written_atomically(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", LinearModel())
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
    assert load_model(path).digits == (3, 7)


# ---------------------------------------------------------------- divergence


@pytest.mark.slow
def test_divergence_stops_with_a_message_and_a_status(tmp_path, data_root):
    result = run_cli("data=embedded", f"data.root={data_root}", "model=mlp", "optimizer.lr=1e38",
                     "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "diverged" in line and "epoch 1" in line and "step " in line and "lr 1e+38" in line
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "diverged" in metrics["error"]


@pytest.mark.slow
def test_a_diverging_job_does_not_stop_the_sweep(tmp_path, data_root):
    result = run_cli("-m", "data=embedded", f"data.root={data_root}", "model=mlp", "trainer.epochs=2",
                     "optimizer.lr=1e38,0.25", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    statuses = sorted(json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json"))
    assert statuses == ["completed", "diverged"]


# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize("override,key", [
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-1", "optimizer.lr"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.epochs=-1", "trainer.epochs"),
    ("model=mlp model.hidden=0", "model.hidden"),
    ("model.init_std=-0.5", "model.init_std"),
    ("data.digits=[3,3]", "data.digits"),
    ("data.digits=[3]", "data.digits"),
    ("data.digits=[3,12]", "data.digits"),
    ("model=template model.distance=cosine", "model.distance"),
    ("device.type=tpu", "device.type"),
])
def test_bad_values_name_the_key_and_what_is_allowed(override, key):
    cfg = make_config(*override.split())
    with pytest.raises(BadInputError, match=key.replace(".", r"\.")) as error:
        validate(cfg)
    assert "valid" in str(error.value) or "use" in str(error.value)


@pytest.mark.parametrize("override,words", [
    ("trainer.epochs=many", ["trainer.epochs", "Integer"]),
    ("trainer.epoch=3", ["trainer.epoch", "not in"]),
    ("seed=one", ["seed", "Integer"]),
    ("model=resnet", ["model/resnet", "linear", "mlp", "template"]),
    ("optimizer=lbfgs", ["optimizer/lbfgs", "adam", "sgd"]),
    ("device=tpu", ["device/tpu", "auto", "cpu", "cuda"]),
])
def test_wrong_types_unknown_keys_and_names_fail_while_composing(override, words):
    with pytest.raises(Exception) as error:
        make_config(override)
    message = f"{error.value} {error.value.__cause__}"  # Hydra's words, then OmegaConf's
    for word in words:
        assert word in message


@pytest.mark.slow
def test_cli_bad_value_fails_before_any_output(tmp_path):
    result = run_cli("optimizer.lr=-1", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "mnist37-train: error: optimizer.lr=-1 is not valid: use a finite number > 0, e.g. 0.25"
    assert not (tmp_path / "outputs").exists()


# ---------------------------------------------------------------- bad data


def small_mnist(root, n_train=20, n_test=10):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.zeros(n, 28, 28))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n) % 10)
    return raw


def snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_wrong_magic_is_named(tmp_path):
    raw = small_mnist(tmp_path)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 40)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is not an MNIST IDX file"):
        load_mnist(tmp_path, download=False)


def test_truncated_file_is_named_and_kept(tmp_path):
    raw = small_mnist(tmp_path)
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is truncated or corrupt"):
        load_mnist(tmp_path, download=True)
    assert snapshot(tmp_path) == before  # nothing downloaded over it, nothing rewritten


def test_image_label_count_mismatch(tmp_path):
    raw = small_mnist(tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte", torch.arange(19) % 10)
    with pytest.raises(DataError, match="holds 20 images but train-labels-idx1-ubyte holds 19 labels"):
        load_mnist(tmp_path, download=False)


def test_label_out_of_range(tmp_path):
    raw = small_mnist(tmp_path)
    write_idx(raw / "t10k-labels-idx1-ubyte", torch.full((10,), 12))
    with pytest.raises(DataError, match="label 12"):
        load_mnist(tmp_path, download=False)


def test_partial_folder_is_never_downloaded_over(tmp_path):
    raw = small_mnist(tmp_path)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match="only part of MNIST.*t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path, download=True)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- outputs


@pytest.mark.slow
def test_unwritable_output_folder_is_reported_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_cli("data=embedded", f"hydra.run.dir={blocker}/run", cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot use the output folder {blocker}/run (Not a directory)" in result.stderr
    assert "LinearModel on" not in result.stdout  # nothing started


@pytest.mark.slow
def test_an_existing_run_folder_is_never_overwritten(tmp_path, unbroken):
    before = snapshot(unbroken)
    result = run_cli(f"hydra.run.dir={unbroken}", cwd=tmp_path)
    assert result.returncode == 1 and "already holds a run" in result.stderr
    assert snapshot(unbroken) == before
