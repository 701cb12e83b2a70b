"""Sweeps through a real SLURM: `bash tests/slurm_cluster.sh up` starts a single-node cluster here
(CI does it in .ci/run). Without one these tests are skipped, unless MNIST37_REQUIRE_SLURM=1 (CI),
which makes a missing cluster a failure."""

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import REPO
from mnist37.report import find_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SWEEP = ["-m", "hydra/launcher=slurm", "data=embedded", "logger=none", "hydra.sweep.dir=sweep"]


@pytest.fixture(scope="module")
def cluster():
    try:
        state = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=30)
        ready = state.returncode == 0 and {"idle", "mix", "alloc"} & set(state.stdout.split())
    except (OSError, subprocess.TimeoutExpired):
        ready = False
    if not ready:
        message = "no SLURM cluster answers: start one with `bash tests/slurm_cluster.sh up`"
        if os.environ.get("MNIST37_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return os.cpu_count() or 1


def start_sweep(cwd, data_root, *extra):
    return subprocess.Popen([sys.executable, "-m", "mnist37.train", *SWEEP, f"data.root={data_root}", *extra],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(process, timeout):
    """The sweep command's exit code and output; a sweep that does not end by itself fails the test."""
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the sweep command did not return within {timeout} s:\n{process.communicate()[0][-3000:]}")
    return process.returncode, output


def test_a_sweep_runs_as_slurm_jobs_and_completes(cluster, tmp_path, data_root):
    process = start_sweep(tmp_path, data_root, "trainer.epochs=2", "seed=0,1", "hydra.launcher.cpus_per_task=1")
    code, output = finish(process, timeout=240)
    assert code == 0, output
    jobs = find_jobs(tmp_path / "sweep")
    assert [j.status for j in jobs] == ["completed", "completed"], output
    assert {j.metrics["threads"] for j in jobs} == {1}  # torch threads follow SLURM_CPUS_PER_TASK
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh"))  # sbatch scripts: real SLURM jobs


def test_a_job_at_its_time_limit_is_saved_and_the_sweep_ends_then_resume_auto_goes_on(cluster, tmp_path, data_root):
    """timeout_min=1 with signal_delay_s=50: SLURM warns the job with SIGUSR2 within the first
    minute (its timer ticks every ~30 s); the job saves last.pt, says `interrupted` and returns."""
    limited = ["trainer.epochs=100000", "seed=0", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=50",
               "hydra.launcher.cpus_per_task=1"]
    code, output = finish(start_sweep(tmp_path, data_root, *limited), timeout=300)
    assert code == 0, output
    (job,) = find_jobs(tmp_path / "sweep")
    assert job.status == "interrupted" and job.metrics["signal"] == "SIGUSR2", output
    assert (job.folder / "last.pt").is_file()
    first = job.metrics["epochs"]

    code, output = finish(start_sweep(tmp_path, data_root, *limited, "trainer.resume=auto"), timeout=300)
    assert code == 0, output
    (job,) = find_jobs(tmp_path / "sweep")  # the same folder, continued from where it stopped
    assert job.status == "interrupted" and job.metrics["epochs"] > first


def test_scancel_ends_the_sweep_cleanly(cluster, tmp_path, data_root):
    """Two jobs that each take every CPU of the node: the first runs, the second waits. scancel:
    the running one is saved as interrupted (SIGTERM), the waiting one never ran; the sweep ends."""
    process = start_sweep(tmp_path, data_root, "trainer.epochs=100000", "seed=0,1",
                          f"hydra.launcher.cpus_per_task={cluster}")
    deadline = time.monotonic() + 180
    while not list((tmp_path / "sweep").glob("*/last.pt")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.2)
    jobs = subprocess.run(["squeue", "--noheader", "--format=%i %t"], capture_output=True, text=True, timeout=30)
    assert " R" in jobs.stdout and " PD" in jobs.stdout, jobs.stdout
    for job_id in {line.split("_")[0] for line in jobs.stdout.split()[::2]}:
        subprocess.run(["scancel", job_id], check=True, timeout=30)
    code, output = finish(process, timeout=120)
    assert code == 0, output
    (ran,) = find_jobs(tmp_path / "sweep")
    assert ran.status == "interrupted" and ran.metrics["signal"] == "SIGTERM"
    assert json.loads((ran.folder / "metrics.json").read_text())["epochs"] >= 0
    assert "ended without a result (cancelled before it started" in output


def test_the_cluster_script_is_idempotent(cluster):
    again = subprocess.run(["bash", str(REPO / "tests" / "slurm_cluster.sh"), "up"], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "idle" in again.stderr, again.stderr
