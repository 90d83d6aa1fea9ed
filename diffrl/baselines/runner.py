"""The host loop for external trainers: seeds one after another, each trained by the agent's own loop.

Same run directory as diffrl's compiled algorithms: ``metrics.jsonl`` (one row per progress report,
with ``seed_index``), ``train.log``, wandb, ``summary.json`` with one final return per seed from the
same deterministic evaluator, and ``checkpoints/seed_<i>/`` per finished seed (the trained policy and
``result.json``, written last, which marks the seed finished). A resumed run (``resume=<dir>``) keeps
the finished seeds and restarts at the first unfinished one.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

from diffrl.baselines import TORCH_TRAINERS, trainer_class
from diffrl.baselines.common import Report
from diffrl.devices import local_devices
from diffrl.evaluation import make_episode_stats
from diffrl.experiment import (
    Experiment,
    algorithm_options,
    build_env,
    build_summary,
    check_config,
    configure_jax,
    effective_settings,
    evaluation_key,
    make_logger,
    seed_keys,
    write_summary,
)
from diffrl.progress import ProgressDisplay

log = logging.getLogger("diffrl")
RESULT_FILE = "result.json"  # written after the seed's policy: its presence means "seed finished"


def seed_dir(run_dir: pathlib.Path, index: int) -> pathlib.Path:
    return pathlib.Path(run_dir) / "checkpoints" / f"seed_{index}"


def finished_seeds(run_dir: pathlib.Path, num_seeds: int) -> int:
    """How many seeds, from the first, have a complete checkpoint."""
    done = 0
    while done < num_seeds and (seed_dir(run_dir, done) / RESULT_FILE).is_file():
        done += 1
    return done


def agent_seed(seed: int, num_seeds: int, index: int) -> int:
    """Seed ``index`` of family ``seed`` as an int (these agents take ints), the same in every run."""
    key = seed_keys(seed, num_seeds)[index]
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def keep_rows_of_finished_seeds(path: pathlib.Path, done: int) -> None:
    """On resume, drop metrics of the seed that was interrupted (it is rerun from the start)."""
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if json.loads(line)["seed_index"] < done]
        path.write_text("".join(line + "\n" for line in rows))


def build_trainer(cfg: DictConfig, env, training: bool = True):
    """The external trainer; ``training=False`` only rebuilds its policy (for evaluation, on any device count)."""
    options, iterations = algorithm_options(cfg)
    if training and cfg.algo.name not in TORCH_TRAINERS:  # Brax's agents pmap their envs over local devices
        devices = local_devices(cfg.hardware.get("devices", 1), int(options["num_envs"]), what="algo.num_envs")
        options["max_devices_per_host"] = len(devices)
    return trainer_class(cfg.algo.name)(env, options, iterations), iterations


def warn_if_rounded_up(algo: str, iterations: int, trained: int) -> None:
    """Brax's and SB3's loops train in whole epochs or rollouts: say so where that is more than asked for
    (a comparison at equal samples needs the two equal: set the batch sizes or ``algo.num_evals`` to divide)."""
    if trained != iterations:
        log.warning(
            "%s will train %d per seed, not iterations=%d: its loop runs whole epochs or rollouts "
            "(%+.1f %%); for exactly %d choose batch sizes or algo.num_evals that divide it",
            algo,
            trained,
            iterations,
            100 * (trained / iterations - 1),
            iterations,
        )


def load_policies(trainer, run_dir: pathlib.Path, num_seeds: int) -> list[Any]:
    return [trainer.load(seed_dir(run_dir, i)) for i in range(num_seeds)]


def train_external(cfg: DictConfig, run_dir: pathlib.Path) -> dict[str, Any]:
    check_config(cfg)
    configure_jax(cfg.hardware)
    run_dir = pathlib.Path(run_dir)
    env = build_env(cfg)
    trainer, iterations = build_trainer(cfg, env)
    options, _ = algorithm_options(cfg)
    effective = effective_settings(cfg, env, options, iterations)
    num_seeds, episode_length = int(cfg.num_seeds), int(cfg.env.episode_length)
    log.info(
        "%s on %s (%s backend): %d iterations x %d seeds, seeds run sequentially (external trainer)",
        cfg.algo.name,
        cfg.env.name,
        cfg.env.backend,
        iterations,
        num_seeds,
    )
    warn_if_rounded_up(cfg.algo.name, iterations, trainer.trained_iterations())

    run_file = run_dir / "checkpoints" / "run.json"
    done = finished_seeds(run_dir, num_seeds) if cfg.resume else 0
    run_info = json.loads(run_file.read_text()) if cfg.resume and run_file.is_file() else {"wandb_id": None}
    if cfg.resume:
        log.info("resumed: %d of %d seeds finished, continuing with seed %d", done, num_seeds, done)
        if cfg.logger.jsonl.enabled:
            keep_rows_of_finished_seeds(run_dir / cfg.logger.jsonl.filename, done)
    logger, wandb_sink = make_logger(
        cfg, run_dir, done * iterations if cfg.resume else None, run_info["wandb_id"], effective
    )
    if wandb_sink is not None:
        run_info["wandb_id"] = wandb_sink.run_id
    run_file.parent.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(run_info) + "\n")

    progress = ProgressDisplay(
        cfg.logger.console, num_seeds * iterations, done * iterations, enabled=cfg.logger.console.enabled
    )
    try:
        with progress:
            for index in range(done, num_seeds):
                train_one_seed(cfg, trainer, run_dir, index, iterations, logger, progress)

        results = [json.loads((seed_dir(run_dir, i) / RESULT_FILE).read_text()) for i in range(num_seeds)]
        policy, params, normalizer = trainer.evaluation_policy(load_policies(trainer, run_dir, num_seeds))
        episode_stats = make_episode_stats(env, policy, episode_length, int(cfg.eval.episodes))
        eval_key = evaluation_key(int(cfg.seed))
        stats = jax.device_get(episode_stats(params, normalizer, eval_key))
        summary = build_summary(
            cfg,
            run_dir,
            eval_stats=stats,
            train_returns=[r["train_return"] for r in results],
            iterations=iterations,
            env_steps_per_seed=int(np.mean([r["env_steps"] for r in results])),
            wall_clock_s=float(sum(r["wall_clock_s"] for r in results)),
            compile_time_s=None,  # compiled inside the agent's own loop: not measured apart
            effective=effective,
        )
        summary["seeds"] = "sequential"
        write_summary(run_dir, summary, wandb_sink)
        return summary
    finally:
        logger.close()


def train_one_seed(cfg, trainer, run_dir: pathlib.Path, index: int, iterations: int, logger, progress) -> None:
    """Trains seed ``index`` with the agent's own loop, logging its reports; then checkpoints it."""
    seed = agent_seed(int(cfg.seed), int(cfg.num_seeds), index)
    start = time.perf_counter()
    last: dict[str, Any] = {}

    def report(r: Report) -> None:
        row = {
            "seed_index": index,
            # Global progress over the sequential seeds; seed i spans (i * iterations, (i + 1) * iterations].
            "iteration": index * iterations + min(r.step, iterations),
            "env_steps": r.env_steps,  # of this seed
            "wall_time_s": time.perf_counter() - start,
            "return": r.episode_return,
            **r.metrics,
        }
        if r.steps_per_second is not None:
            row["steps_per_second"] = r.steps_per_second
        logger.log(row, step=row["iteration"] + index)  # + index: wandb steps stay strictly increasing
        progress.update({**row, "return_mean": r.episode_return, "steps_per_second": r.steps_per_second or 0.0})
        last.update(row)

    log.info("seed %d/%d (agent seed %d)", index + 1, cfg.num_seeds, seed)
    policy = trainer.train_seed(seed, report)
    directory = seed_dir(run_dir, index)
    directory.mkdir(parents=True, exist_ok=True)
    trainer.save(policy, directory)
    result = {
        "seed_index": index,
        "agent_seed": seed,
        "train_return": last.get("return"),
        "env_steps": last.get("env_steps", 0),
        "wall_clock_s": time.perf_counter() - start,
    }
    (directory / RESULT_FILE).write_text(json.dumps(result) + "\n")


def load_external_policy(run_dir: pathlib.Path, cfg: DictConfig):
    """For ``diffrl eval``: (experiment, params [seeds], normalizer [seeds], env steps per seed) from the
    finished seeds' checkpoints; the policy is rebuilt from the run's config."""
    env = build_env(cfg)
    trainer, iterations = build_trainer(cfg, env, training=False)
    done = finished_seeds(run_dir, int(cfg.num_seeds))
    if done == 0:
        raise FileNotFoundError(f"no finished seed under {pathlib.Path(run_dir) / 'checkpoints'} to evaluate")
    policy, params, normalizer = trainer.evaluation_policy(load_policies(trainer, run_dir, done))
    env_steps = json.loads((seed_dir(run_dir, done - 1) / RESULT_FILE).read_text())["env_steps"]
    return (
        Experiment(env, policy, None, iterations, int(cfg.env.episode_length), {}),
        params,
        normalizer,
        env_steps,
    )
