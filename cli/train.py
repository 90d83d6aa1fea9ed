"""``diffrl train``: one Hydra job = one training run (all its seeds vmapped) in its own directory."""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cli.main import CONF_DIR

log = logging.getLogger("diffrl")


def settle_auto_resume(cfg: DictConfig, run_dir: pathlib.Path) -> dict | None:
    """``resume=auto`` (set by the Slurm launcher on a requeued job, or by hand to rerun a sweep's unfinished
    jobs): a completed run is left as it is (its summary is returned); a run with a checkpoint continues
    from it; anything else (a job that died before its first checkpoint, a failed one) starts afresh in
    the same directory, replacing that job's own earlier, unfinished files."""
    from diffrl.experiment import has_checkpoint

    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if summary.get("status") == "completed":
        log.info("resume=auto: %s already completed; nothing to do", run_dir)
        return summary
    if has_checkpoint(run_dir):
        cfg.resume = str(run_dir)
        return None
    cfg.resume = None
    for name in ("summary.json", cfg.logger.jsonl.filename):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # nothing resumable in it (e.g. a save cut short)
    return None


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    import jax

    from diffrl.errors import ConfigError
    from diffrl.experiment import check_config, check_run_dir_is_free, write_failed_summary
    from diffrl.run import TrainingDiverged, train

    hydra_cfg = HydraConfig.get()
    run_dir = pathlib.Path(hydra_cfg.runtime.output_dir)
    if cfg.get("resume") == "auto" and (done := settle_auto_resume(cfg, run_dir)) is not None:
        return done["final_return"]["mean"]
    try:  # one line, before anything is built or compiled; in a sweep, a taken directory stops the sweep
        check_run_dir_is_free(cfg, run_dir)
        if hydra_cfg.mode == RunMode.RUN:  # a sweep records an impossible job as failed and goes on
            check_config(cfg)
    except ValueError as err:
        print(f"diffrl train: error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        summary = train(cfg, run_dir)
    except Exception as err:
        if hydra_cfg.mode == RunMode.RUN:
            if isinstance(err, ConfigError):  # found once JAX is up, still before any compile (e.g. devices)
                print(f"diffrl train: error: {err}", file=sys.stderr)
                sys.exit(2)
            if isinstance(err, TrainingDiverged):
                log.error("%s", err)
                sys.exit(1)
            raise
        # In a sweep one crashing job must not take the others down (the basic launcher would stop the
        # sweep, joblib would cancel the pending jobs): record the failure and let the sweep go on.
        log.exception("job failed: %s: %s", type(err).__name__, err)
        write_failed_summary(cfg, run_dir, f"{type(err).__name__}: {err}", traceback.format_exc())
        return float("nan")
    finally:
        jax.clear_caches()  # the basic launcher runs sweep jobs in one process
    return summary["final_return"]["mean"]  # what a sweeper optimises
