"""The host loop: build the experiment from a config, run compiled training chunks, and between
them log, evaluate, checkpoint and show progress. Ends with a final evaluation and ``summary.json``.

Seeds are a ``vmap`` axis of one compiled program; the host only sees metrics between chunks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from diffrl.algos import Algorithm, make_algorithm
from diffrl.baselines import EXTERNAL_TRAINERS
from diffrl.checkpoint import Checkpointer
from diffrl.envs import make_env
from diffrl.envs.wrappers import InjectNaN
from diffrl.errors import TrainingDiverged
from diffrl.evaluation import make_episode_stats
from diffrl.loggers import JsonlSink, MetricLogger, WandbSink, to_jsonable
from diffrl.networks import RecurrentPolicy, make_recurrent_policy
from diffrl.progress import ProgressDisplay

log = logging.getLogger("diffrl")

# Keys of an algo config that describe the run rather than the algorithm's own options.
_RUNNER_KEYS = ("name", "budgets", "hidden_size")
_EVAL_KEY_OFFSET = 1_000_003  # evaluation start states never coincide with a training key


def evaluation_key(seed: int) -> jax.Array:
    """The start states of every final evaluation of seed family ``seed``, whatever the algorithm."""
    return jax.random.PRNGKey(seed + _EVAL_KEY_OFFSET)


def configure_jax(hardware: DictConfig) -> None:
    """Platform, precision, XLA flags and the persistent compilation cache, before any computation."""
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    if hardware.xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {hardware.xla_flags}".strip()
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true" if hardware.preallocate_memory else "false"
    jax.config.update("jax_platforms", hardware.platform)
    jax.config.update("jax_enable_x64", bool(hardware.enable_x64))
    if hardware.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(hardware.compilation_cache_dir).expanduser()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a config builds: the env, the policy, the algorithm and the run's length."""

    env: Any
    policy: RecurrentPolicy
    algo: Algorithm
    iterations: int
    episode_length: int


def algorithm_options(cfg: DictConfig) -> tuple[dict[str, Any], int]:
    """The algorithm's options and outer iterations for the chosen budget.

    A budget (``algo.budgets.<budget>``) fills the options left ``null`` in the algo config, and
    ``iterations`` when the top-level ``iterations`` is null: anything set explicitly wins.
    """
    algo_cfg = OmegaConf.to_container(cfg.algo, resolve=True)
    budgets = algo_cfg.get("budgets") or {}
    if cfg.budget not in budgets:
        raise ValueError(
            f"unknown budget {cfg.budget!r} for algo {cfg.algo.name!r}; valid choices: {', '.join(budgets)}"
        )
    options = {k: v for k, v in algo_cfg.items() if k not in _RUNNER_KEYS}
    budget = dict(budgets[cfg.budget])
    iterations = int(cfg.iterations if cfg.iterations is not None else budget.pop("iterations"))
    budget.pop("iterations", None)
    for key, value in budget.items():
        if options.get(key) is None:
            options[key] = value
    # A key some budget manages but this one leaves unset would reach the algorithm as None.
    managed = {key for numbers in budgets.values() for key in numbers}
    missing = sorted(k for k in managed if k != "iterations" and options.get(k) is None)
    if missing:
        raise ValueError(f"algo {cfg.algo.name!r}: budget {cfg.budget!r} sets no value for {missing}")
    options["episode_length"] = int(cfg.env.episode_length)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    return options, iterations


def divergence_message(cfg: DictConfig, seeds: list[int], iteration: int) -> str:
    limit = cfg.algo.get("grad", {}).get("max_consecutive_nonfinite", "?")
    return (
        f"training stopped at iteration {iteration}: for seed(s) {seeds}, every APG run had non-finite "
        f"gradients on its last {limit} updates in a row (each was skipped, never applied). Likely cause: "
        "gradients exploding through a long horizon or unstable dynamics. Switches that help: "
        "hardware.enable_x64=true (float64), algo.grad.truncation=<k> (stop gradients every k steps), "
        "algo.grad.clip_norm=<c>, algo.grad.step_clip=<c>, a smaller learning rate; "
        "algo.grad.max_consecutive_nonfinite sets the limit."
    )


def build_experiment(cfg: DictConfig) -> Experiment:
    env = make_env(cfg.env.name, cfg.env.backend)
    if cfg.env.get("inject_nan_after") is not None:
        env = InjectNaN(env, int(cfg.env.inject_nan_after))
    policy = make_recurrent_policy(env.observation_size, env.action_size, cfg.algo.get("hidden_size"))
    options, iterations = algorithm_options(cfg)
    algo = make_algorithm(cfg.algo.name, env, policy, options, iterations)
    return Experiment(env, policy, algo, iterations, int(cfg.env.episode_length))


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """One PRNG key per vmapped seed; seed i of family ``seed`` is the same in every run."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num_seeds))


def chunk_lengths(total: int, chunk: int | None) -> list[int]:
    """Iterations per compiled chunk; a resumed run reuses exactly the same boundaries.

    ``chunk=None`` picks about 20 chunks a run: enough points for a learning curve, few host syncs.
    """
    chunk = chunk or max(1, total // 20)
    full, rest = divmod(total, chunk)
    return [chunk] * full + ([rest] if rest else [])


def make_chunk_runner(algo: Algorithm):
    """``run(states, length) -> (states, metrics [length, seeds])``: ``length`` vmapped steps in one scan."""

    def run(states, length: int):
        return jax.lax.scan(lambda s, _: jax.vmap(algo.train_step)(s), states, None, length=length)

    return jax.jit(run, static_argnums=1)


def summarize_chunk(metrics: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-chunk view of per-iteration, per-seed metrics: the last iteration's values (per seed for
    the return, seed-mean otherwise) and totals of the non-finite counters over the whole chunk."""
    out: dict[str, Any] = {}
    for key, values in metrics.items():
        last = values[-1]
        if key.startswith("nonfinite"):
            out[key] = int(np.sum(values))
        elif key == "return":
            out["return"] = last.tolist()
            out["return_mean"] = float(np.mean(last))
        else:
            out[key] = float(np.nanmean(last)) if np.any(np.isfinite(last)) else float("nan")
    return out


def mean_std(values: list[float]) -> dict[str, Any]:
    """Per-seed values with their mean and population std (as the papers report)."""
    arr = np.asarray(values, dtype=float)
    return {"per_seed": arr.tolist(), "mean": float(arr.mean()), "std": float(arr.std())}


def package_versions() -> dict[str, str]:
    names = ["diffrl", "jax", "jaxlib", "brax", "mujoco", "flax", "optax", "orbax-checkpoint", "hydra-core", "wandb"]
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    repo = pathlib.Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def build_summary(
    cfg: DictConfig,
    run_dir: pathlib.Path,
    *,
    eval_returns: np.ndarray,
    train_returns: list[float] | None,
    iterations: int,
    env_steps_per_seed: int,
    wall_clock_s: float,
    compile_time_s: float,
    upright_fraction: np.ndarray | None = None,
) -> dict[str, Any]:
    """What ``summary.json`` holds for any algorithm; ``eval_returns`` (and ``upright_fraction``,
    the share of each episode's last 100 steps spent balanced) are [seeds, episodes]."""
    return {
        "status": "completed",
        "env": cfg.env.name,
        "algo": cfg.algo.name,
        "backend": cfg.env.backend,
        "budget": cfg.budget,
        "seed": int(cfg.seed),
        "num_seeds": int(eval_returns.shape[0]),
        "iterations": iterations,
        "env_steps_per_seed": env_steps_per_seed,
        "final_return": mean_std(eval_returns.mean(axis=1).tolist()),
        "final_train_return": mean_std(train_returns) if train_returns else None,
        "final_upright_fraction": mean_std(upright_fraction.mean(axis=1).tolist())
        if upright_fraction is not None
        else None,
        "eval_episodes": int(eval_returns.shape[1]),
        "wall_clock_s": wall_clock_s,
        "compile_time_s": compile_time_s,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "run_dir": str(run_dir.absolute()),
    }


def write_summary(run_dir: pathlib.Path, summary: dict[str, Any], wandb_sink: WandbSink | None) -> None:
    (run_dir / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2) + "\n")
    final = summary["final_return"]
    if wandb_sink is not None:
        wandb_sink.summary({"final_return_mean": final["mean"], "final_return_std": final["std"]})
    log.info(
        "final return %.2f +- %.2f over %d seeds (%d episodes each); summary: %s",
        final["mean"],
        final["std"],
        summary["num_seeds"],
        summary["eval_episodes"],
        run_dir / "summary.json",
    )


def make_logger(cfg: DictConfig, run_dir: pathlib.Path, resume_step: int | None, wandb_id: str | None):
    sinks: list = []
    wandb_sink = None
    if cfg.logger.jsonl.enabled:
        sinks.append(JsonlSink(run_dir / cfg.logger.jsonl.filename, resume_step))
    if cfg.logger.wandb.enabled:
        config = OmegaConf.to_container(cfg, resolve=True)
        name = f"{cfg.env.name}_{cfg.algo.name}_seed{cfg.seed}"
        wandb_sink = WandbSink(run_dir, config, OmegaConf.to_container(cfg.logger.wandb, resolve=True), name, wandb_id)
        sinks.append(wandb_sink)
    return MetricLogger(sinks), wandb_sink


def train(cfg: DictConfig, run_dir: pathlib.Path) -> dict[str, Any]:
    """Runs (or resumes) one training job into ``run_dir``; returns the summary it writes."""
    if cfg.algo.name in EXTERNAL_TRAINERS:  # PPO, SAC, Brax APG, SB3: agents with their own training loop
        from diffrl.baselines.runner import train_external

        return train_external(cfg, run_dir)
    configure_jax(cfg.hardware)
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it for `diffrl train`; library callers may not
    exp = build_experiment(cfg)
    algo, num_seeds = exp.algo, int(cfg.num_seeds)
    log.info(
        "%s on %s (%s backend): %d iterations x %d seeds, %d env steps per iteration per seed",
        cfg.algo.name,
        cfg.env.name,
        cfg.env.backend,
        exp.iterations,
        num_seeds,
        algo.env_steps_per_iteration,
    )

    states = jax.jit(jax.vmap(algo.init))(seed_keys(int(cfg.seed), num_seeds))
    checkpointer = (
        Checkpointer(run_dir / "checkpoints", int(cfg.checkpoint.max_to_keep)) if cfg.checkpoint.enabled else None
    )
    host = {"iteration": 0, "chunk": 0, "wall_clock_s": 0.0, "compile_time_s": 0.0, "wandb_id": None}
    if cfg.resume:
        if checkpointer is None or checkpointer.latest_step() is None:
            raise FileNotFoundError(
                f"resume={cfg.resume}: no checkpoint under {run_dir / 'checkpoints'} to resume from"
            )
        states, host = checkpointer.restore(states)
        log.info("resumed from iteration %d (%s)", host["iteration"], checkpointer.directory)

    logger, wandb_sink = make_logger(cfg, run_dir, host["iteration"] if cfg.resume else None, host["wandb_id"])
    if wandb_sink is not None:
        host["wandb_id"] = wandb_sink.run_id
    episode_stats = make_episode_stats(exp.env, exp.policy, exp.episode_length, int(cfg.eval.episodes))
    evaluate = lambda params, normalizer, key: episode_stats(params, normalizer, key)["return"]
    eval_key = evaluation_key(int(cfg.seed))
    policy_of = jax.jit(jax.vmap(algo.policy_params))
    run_chunk = make_chunk_runner(algo)
    compiled: dict[int, Any] = {}
    lengths = chunk_lengths(exp.iterations, cfg.chunk_iterations)
    steps_per_iteration = algo.env_steps_per_iteration
    progress = ProgressDisplay(
        cfg.logger.console, exp.iterations, host["iteration"], enabled=cfg.logger.console.enabled
    )
    last_train_return: list[float] | None = None
    segment_start = time.perf_counter() - host["wall_clock_s"]

    try:
        with progress:
            for chunk_index in range(host["chunk"], len(lengths)):
                length = lengths[chunk_index]
                if length not in compiled:  # ahead-of-time compile, so its cost is measured apart
                    t0 = time.perf_counter()
                    compiled[length] = run_chunk.lower(states, length).compile()
                    host["compile_time_s"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                states, metrics = compiled[length](states)
                metrics = jax.device_get(metrics)
                chunk_seconds = time.perf_counter() - t0
                host["iteration"] += length
                host["chunk"] = chunk_index + 1
                host["wall_clock_s"] = time.perf_counter() - segment_start

                row = {
                    "iteration": host["iteration"],
                    "env_steps": host["iteration"] * steps_per_iteration,
                    "wall_time_s": host["wall_clock_s"],
                    **summarize_chunk(metrics),
                    "steps_per_second": length * steps_per_iteration * num_seeds / chunk_seconds,
                }
                last_train_return = row.get("return")
                every = int(cfg.eval.every_chunks)
                if every and host["chunk"] % every == 0 and host["chunk"] < len(lengths):
                    params, normalizer = policy_of(states)
                    row["eval_return"] = np.mean(
                        jax.device_get(evaluate(params, normalizer, eval_key)), axis=1
                    ).tolist()
                logger.log(row, step=host["iteration"])
                progress.update(row)
                if "nonfinite_stalled" in metrics and np.any(metrics["nonfinite_stalled"][-1]):
                    stalled = np.flatnonzero(metrics["nonfinite_stalled"][-1]).tolist()
                    raise TrainingDiverged(divergence_message(cfg, stalled, host["iteration"]))
                if checkpointer and (
                    host["chunk"] % int(cfg.checkpoint.every_chunks) == 0 or host["chunk"] == len(lengths)
                ):
                    checkpointer.save(host["iteration"], states, host)

        params, normalizer = policy_of(states)
        final_stats = jax.device_get(episode_stats(params, normalizer, eval_key))
        host["wall_clock_s"] = time.perf_counter() - segment_start
        summary = build_summary(
            cfg,
            run_dir,
            eval_returns=np.asarray(final_stats["return"]),
            upright_fraction=np.asarray(final_stats["upright_fraction"]),
            train_returns=last_train_return,
            iterations=host["iteration"],
            env_steps_per_seed=host["iteration"] * steps_per_iteration,
            wall_clock_s=host["wall_clock_s"],
            compile_time_s=host["compile_time_s"],
        )
        write_summary(run_dir, summary, wandb_sink)
        return summary
    finally:
        logger.close()
        if checkpointer:
            checkpointer.close()
