"""``diffrl eval run_dir=<dir>``: rebuild config and policy from a run directory and evaluate it."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from cli.main import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from diffrl.eval_run import evaluate_run

    try:
        evaluate_run(
            cfg.run_dir,
            episodes=int(cfg.episodes),
            seed=int(cfg.seed),
            html=bool(cfg.html),
            platform=cfg.hardware_platform,
            early_exit=bool(cfg.early_exit),
        )
    except FileNotFoundError as err:  # not a run directory, or a run that never checkpointed: one line
        print(f"diffrl eval: error: {err}", file=sys.stderr)
        sys.exit(2)
