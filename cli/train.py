"""``diffrl train``: one Hydra job = one training run (all its seeds vmapped) in its own directory."""

from __future__ import annotations

import pathlib

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cli.main import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    import jax

    from diffrl.run import train

    run_dir = pathlib.Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = train(cfg, run_dir)
    finally:
        jax.clear_caches()  # the basic launcher runs sweep jobs in one process
    return summary["final_return"]["mean"]  # what a sweeper optimises
