"""hydra-submitit-launcher's Slurm and local launchers, made to survive a cluster.

- **A requeued job resumes.** Slurm requeues a job that is preempted (``PreemptMode=REQUEUE``), or
  that submitit requeues itself when Slurm warns of its time limit or of a preemption (``USR2``, then
  this launcher's ``checkpoint``). The job runs again with the same overrides, into the same directory;
  it is told ``resume=auto`` and continues from its last checkpoint (at most one chunk lost).
- **A job that dies for good is recorded, not lost.** Cancelled, out of time, out of memory, node lost:
  the job never writes its ``summary.json``, and submitit raises on its result. The sweep goes on
  waiting for the other jobs, then writes a failed ``summary.json`` with Slurm's reason into the dead
  job's directory, which ``diffrl table`` shows as a failed cell.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as upstream
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

AUTO_RESUME = "resume=auto"


def is_restart() -> bool:
    """Whether this process runs a job Slurm has requeued (preempted, or requeued at its time limit)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


class _ResumingMixin:
    """What diffrl adds to hydra-submitit-launcher's launchers (module docstring)."""

    def __call__(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> JobReturn:
        if is_restart() and AUTO_RESUME not in sweep_overrides:
            log.warning("requeued by Slurm (restart %s): resuming", os.environ.get("SLURM_RESTART_COUNT"))
            sweep_overrides = [*sweep_overrides, AUTO_RESUME]
        return super().__call__(sweep_overrides, *args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # hydra-submitit-launcher 1.2's launch, except that one job's failure neither hides the others'
        # results nor leaves the failed job without a record.
        import submitit

        assert self.config is not None
        params = dict(self.params)
        init_params = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init_params[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        queue_keys = set(OmegaConf.structured(upstream.BaseQueueConf).keys())
        executor.update_parameters(**{k if k in queue_keys else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        jobs_args = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            jobs_args.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*jobs_args))
        return [self._result(job, overrides, idx) for job, (overrides, _, idx, *_) in zip(jobs, jobs_args)]

    def _result(self, job: Any, overrides: list[str], idx: int) -> JobReturn:
        try:
            return job.results()[0]
        except Exception as err:  # submitit's UncompletedJobError / FailedJobError: the job left no result
            return self._record_failure(job, overrides, idx, err)

    def failure_reason(self, job: Any, err: Exception) -> str:
        """What ended a job without a result: Slurm's state (CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY...),
        or the exception the job raised outside diffrl's own handler (e.g. while composing its config)."""
        from submitit.core.utils import FailedJobError

        name = f"{'Slurm job' if self._EXECUTOR == 'slurm' else 'job'} {job.job_id}"
        if isinstance(err, FailedJobError):
            lines = [line for line in str(err).splitlines() if line.strip()]
            return f"{name} raised {lines[-1].strip() if lines else type(err).__name__}"
        return f"{name} ended {getattr(job, 'state', 'UNKNOWN')} without a result"

    def _record_failure(self, job: Any, overrides: list[str], idx: int, err: Exception) -> JobReturn:
        from diffrl.experiment import write_failed_summary

        reason = self.failure_reason(job, err)
        try:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config.hydra.job):
                config.hydra.job.num = idx
            run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        except Exception as load_err:  # the job's config itself does not compose: nowhere to record it
            log.error("job #%d failed: %s (%s); its config does not compose: %s", idx, reason, err, load_err)
            run_dir = None
        if run_dir is not None:
            summary = run_dir / "summary.json"
            if not (summary.is_file() and '"status": "failed"' in summary.read_text()):  # the job's own record wins
                details = f"{type(err).__name__}: {err}\nlogs: {job.paths.stderr}"
                write_failed_summary(config, run_dir, reason, details=details)
            log.error("job #%d (%s) failed: %s; recorded in %s", idx, run_dir.name, reason, summary)
        result = JobReturn(overrides=list(overrides), working_dir=str(run_dir or ""))
        result.status, result._return_value = JobStatus.COMPLETED, float("nan")  # as a job that raised
        return result


class SlurmLauncher(_ResumingMixin, upstream.SlurmLauncher):
    pass


class LocalLauncher(_ResumingMixin, upstream.LocalLauncher):
    pass
