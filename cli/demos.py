"""``diffrl demos``: an expert trained and rolled out into a demo file (``diffrl.demos.make_demos``)."""

from __future__ import annotations

import pathlib
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cli.main import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="demos", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from diffrl.demos import make_demos
    from diffrl.errors import TrainingDiverged
    from diffrl.experiment import check_config

    run_dir = pathlib.Path(HydraConfig.get().runtime.output_dir)
    try:
        check_config(cfg)
        make_demos(cfg, run_dir)
    except TrainingDiverged as err:
        print(f"diffrl demos: error: {err}", file=sys.stderr)
        sys.exit(1)
    except ValueError as err:  # ConfigError, DemoError: one line
        print(f"diffrl demos: error: {err}", file=sys.stderr)
        sys.exit(2)
