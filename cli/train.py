"""``diffrl train``: one Hydra job = one training run (all its seeds vmapped) in its own directory."""

from __future__ import annotations

import logging
import pathlib
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cli.main import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    import jax

    from diffrl.run import TrainingDiverged, train

    hydra_cfg = HydraConfig.get()
    run_dir = pathlib.Path(hydra_cfg.runtime.output_dir)
    try:
        summary = train(cfg, run_dir)
    except TrainingDiverged as err:
        logging.getLogger("diffrl").error("%s", err)
        if hydra_cfg.mode == RunMode.RUN:
            sys.exit(1)
        return float("nan")  # in a sweep, the other jobs go on
    finally:
        jax.clear_caches()  # the basic launcher runs sweep jobs in one process
    return summary["final_return"]["mean"]  # what a sweeper optimises
