"""hydra-submitit-launcher's SLURM launcher, except for jobs that end without a result.

submitit learns that a job ended from its result file, or else from `sacct`. A job cancelled
before it started (or killed outright) writes no result, and then the plugin's launcher either ends
the whole sweep with UncompletedJobError (a cluster with accounting) or waits for it forever (one
without: sacct answers nothing). Here such a job becomes a NaN result, like any failed mnist37 job,
found by `squeue` no longer listing it; the other jobs' results are kept, and the same sweep
command with `trainer.resume=auto` runs what is missing.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from typing import Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
RESULT_GRACE_SECONDS = 10.0


def in_queue(job_id: str) -> bool:
    """Whether SLURM still lists the job (pending, running or finishing); True when squeue can't say."""
    try:
        listed = subprocess.run(["squeue", "--noheader", "--format=%i", "--jobs", job_id],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if listed.returncode != 0:  # "Invalid job id": long gone; anything else: don't guess
        return "invalid job id" not in listed.stderr.lower()
    return bool(listed.stdout.strip())


def ended_without_result(job, overrides: Sequence[str]) -> JobReturn:
    log.error("job %s (%s) ended without a result (cancelled before it started, or killed); run the sweep "
              "again with trainer.resume=auto to finish it", job.job_id, " ".join(overrides))
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=math.nan)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """Submits like the plugin's launcher (its own `launch`, with the jobs' results collected here)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        submitted = []
        map_array = submitit.AutoExecutor.map_array

        def keep_jobs(executor, *args, **kwargs):
            submitted.extend(map_array(executor, *args, **kwargs))
            return []  # the plugin's own result loop then has nothing to wait for

        submitit.AutoExecutor.map_array = keep_jobs  # for this call only: the plugin has no hook for it
        try:
            super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = map_array
        return self.collect(submitted, job_overrides)

    @staticmethod
    def collect(jobs, job_overrides: Sequence[Sequence[str]]) -> list[JobReturn]:
        """Each job's JobReturn, as soon as it has one; NaN for a job that left the queue without."""
        results: dict[int, JobReturn] = {}
        gone_since: dict[int, float] = {}
        while len(results) < len(jobs):
            for i, job in enumerate(jobs):
                if i in results:
                    continue
                if job.paths.result_pickle.exists():
                    results[i] = job.results()[0]
                elif not in_queue(job.job_id):
                    # a result can reach a shared file system a little after the job left the queue
                    gone_since.setdefault(i, time.monotonic())
                    if time.monotonic() - gone_since[i] > RESULT_GRACE_SECONDS:
                        results[i] = ended_without_result(job, job_overrides[i])
            if len(results) < len(jobs):
                time.sleep(POLL_SECONDS)
        return [results[i] for i in range(len(jobs))]
