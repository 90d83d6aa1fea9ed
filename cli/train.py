"""``diffrl train``: one Hydra job = one training run (all its seeds vmapped) in its own directory."""

from __future__ import annotations

import json
import logging
import pathlib
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cli.main import CONF_DIR

log = logging.getLogger("diffrl")


def write_failed_summary(cfg: DictConfig, run_dir: pathlib.Path, err: BaseException) -> None:
    """A sweep job that raised leaves a ``summary.json`` saying so, so ``diffrl table`` can show why."""
    summary = {
        "status": "failed",
        "error": f"{type(err).__name__}: {err}",
        "traceback": traceback.format_exc(),
        "env": cfg.env.name,
        "algo": cfg.algo.name,
        "budget": cfg.budget,
        "seed": int(cfg.seed),
        "num_seeds": int(cfg.num_seeds),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    import jax

    from diffrl.experiment import check_config, check_run_dir_is_free
    from diffrl.run import TrainingDiverged, train

    hydra_cfg = HydraConfig.get()
    run_dir = pathlib.Path(hydra_cfg.runtime.output_dir)
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
            if isinstance(err, TrainingDiverged):
                log.error("%s", err)
                sys.exit(1)
            raise
        # In a sweep one crashing job must not take the others down (the basic launcher would stop the
        # sweep, joblib would cancel the pending jobs): record the failure and let the sweep go on.
        log.exception("job failed: %s: %s", type(err).__name__, err)
        write_failed_summary(cfg, run_dir, err)
        return float("nan")
    finally:
        jax.clear_caches()  # the basic launcher runs sweep jobs in one process
    return summary["final_return"]["mean"]  # what a sweeper optimises
