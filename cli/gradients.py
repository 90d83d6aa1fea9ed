"""``diffrl gradients env=<task> [env.backend=...] [policy=...]``: a gradient report for one task.

Writes ``report.md``, ``gradients.png`` and ``gradients.json`` (every number, the settings, versions, git
commit and command) to its own run directory; the computations live in ``diffrl.gradients``.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cli.main import CONF_DIR

log = logging.getLogger("diffrl")


def settings_from(cfg: DictConfig, episode_length: int):
    from diffrl.gradients import ReportSettings, horizons_up_to

    max_horizon = int(cfg.curve.max_horizon or episode_length)
    horizons = cfg.curve.horizons if cfg.curve.horizons is not None else horizons_up_to(max_horizon)
    fd, var = cfg.finite_differences, cfg.variance
    return ReportSettings(
        num_envs=int(cfg.num_envs),
        horizon=int(cfg.horizon),
        repeats=int(cfg.repeats),
        precisions=tuple(cfg.precisions),
        num_starts=int(cfg.num_starts),
        horizons=tuple(int(h) for h in horizons),
        fd_horizon=int(fd.horizon),
        fd_directions=int(fd.directions),
        fd_epsilon=float(fd.epsilon),
        fd_tolerance=float(fd.tolerance),
        fd_precision=str(fd.precision),
        variance_horizon=int(var.horizon),
        variance_sigma=float(var.sigma),
        variance_precision=str(var.precision),
        seed=int(cfg.seed),
    )


def fail(message: str) -> None:
    print(f"diffrl gradients: error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path=str(CONF_DIR), config_name="gradients", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from diffrl.envs import check_backend

    try:
        check_backend(cfg.env.name, cfg.env.backend)
    except ValueError as err:
        fail(str(err))

    import jax

    from diffrl import gradients
    from diffrl.experiment import (
        build_env,
        build_policy,
        configure_jax,
        git_commit,
        machine_description,
        package_versions,
        policy_description,
    )
    from diffrl.loggers import to_jsonable

    configure_jax(cfg.hardware)
    run_dir = pathlib.Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        settings = settings_from(cfg, int(cfg.env.episode_length))
    except ValueError as err:
        fail(str(err))

    def make():
        env = build_env(cfg)
        return env, build_policy(cfg, env)

    start = time.perf_counter()
    env, policy = make()  # float32, for the description only (the report builds its own per precision)
    meta = {
        "command": " ".join(["diffrl gradients", *HydraConfig.get().overrides.task]),
        "env": {
            "name": cfg.env.name,
            "backend": cfg.env.backend,
            "episode_length": int(cfg.env.episode_length),
            "observation_size": int(env.observation_size),
            "action_size": int(env.action_size),
            "control_dt": float(env.dt),
        },
        "policy": policy_description(policy),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(settings).items()},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "machine": machine_description(),
        "run_dir": str(run_dir.absolute()),
    }
    results = gradients.gradient_report(make, settings, log=log.info)
    meta["wall_clock_s"] = time.perf_counter() - start

    (run_dir / "gradients.json").write_text(json.dumps(to_jsonable({**meta, "results": results}), indent=2) + "\n")
    (run_dir / "report.md").write_text(gradients.markdown_report(results, meta))
    title = f"{cfg.env.name} on {cfg.env.backend}, {policy.name} policy"
    gradients.plot_report(results, run_dir / "gradients.png", title)
    print("\n".join([f"gradient report: {title}", *gradients.summary_lines(results), f"run directory: {run_dir}"]))
    jax.clear_caches()
