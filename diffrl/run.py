"""Training: ``train(cfg, run_dir)`` chooses the loop, and the compiled-chunk loop of diffrl's own
algorithms. Between compiled chunks the host logs, evaluates, checkpoints and shows progress; a run
ends with a final evaluation and ``summary.json``.

Seeds are a ``vmap`` axis of one compiled program; the host only sees metrics between chunks.
External trainers (Brax's and SB3's agents) run their own loop in ``diffrl.baselines.runner``.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

from diffrl.algos import Algorithm, make_algorithm
from diffrl.checkpoint import Checkpointer
from diffrl.devices import local_devices, per_seed_shards, population_mesh, seed_mesh, shard_seeds
from diffrl.errors import ConfigError, TrainingDiverged
from diffrl.evaluation import make_episode_stats
from diffrl.experiment import (
    Experiment,
    algorithm_options,
    build_env,
    build_policy,
    build_summary,
    check_config,
    check_run_dir_is_free,
    configure_jax,
    effective_settings,
    evaluation_key,
    evaluation_length,
    is_external,
    make_logger,
    mean_std,
    population_size,
    seed_keys,
    write_summary,
)
from diffrl.progress import ProgressDisplay

log = logging.getLogger("diffrl")

__all__ = ["Experiment", "TrainingDiverged", "build_experiment", "load_policy", "train"]


def build_experiment(cfg: DictConfig) -> Experiment:
    check_config(cfg)
    options, iterations = algorithm_options(cfg)
    try:  # the task's, the policy's and the algorithm's own option checks: one line, before any compile
        env = build_env(cfg)
        policy = build_policy(cfg, env)
        algo = make_algorithm(cfg.algo.name, env, policy, options, iterations)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    effective = effective_settings(cfg, env, options, iterations, policy)
    return Experiment(env, policy, algo, iterations, evaluation_length(cfg), effective)


def train(cfg: DictConfig, run_dir: pathlib.Path) -> dict[str, Any]:
    """Runs (or resumes) one training job into ``run_dir``; returns the summary it writes.
    The one place that chooses the loop: external trainers run their own, the rest compiled chunks."""
    check_config(cfg)
    check_run_dir_is_free(cfg, pathlib.Path(run_dir))
    if is_external(cfg):
        from diffrl.baselines.runner import train_external  # imports torch for SB3: only when needed

        return train_external(cfg, run_dir)
    return train_compiled(cfg, run_dir)


def load_policy(run_dir: pathlib.Path, cfg: DictConfig):
    """(experiment, params [seeds], normalizer [seeds], iteration) from a run directory's checkpoints."""
    if is_external(cfg):
        from diffrl.baselines.runner import load_external_policy

        return load_external_policy(run_dir, cfg)
    exp = build_experiment(cfg)
    like = jax.jit(jax.vmap(exp.algo.init))(seed_keys(int(cfg.seed), int(cfg.num_seeds)))
    checkpointer = Checkpointer(pathlib.Path(run_dir) / "checkpoints")
    try:
        states, host = checkpointer.restore(like)
    finally:
        checkpointer.close()
    params, normalizer = jax.jit(jax.vmap(exp.algo.policy_params))(states)
    return exp, params, normalizer, host["iteration"]


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


def chunk_lengths(total: int, chunk: int | None) -> list[int]:
    """Iterations per compiled chunk; a resumed run reuses exactly the same boundaries.

    ``chunk=None`` picks about 20 chunks a run: enough points for a learning curve, few host syncs.
    """
    chunk = chunk or max(1, total // 20)
    full, rest = divmod(total, chunk)
    return [chunk] * full + ([rest] if rest else [])


HOLD_AT_CHECKPOINT = "DIFFRL_HOLD_AT_CHECKPOINT"


def hold_if_asked(iteration: int, limit_s: float = 600.0) -> None:
    """For tests of preemption: with ``DIFFRL_HOLD_AT_CHECKPOINT=<iteration>`` set, the run waits after it
    saved that iteration's checkpoint, so a test can kill it there (SIGKILL, a Slurm preemption) without
    racing the machine's speed. A resumed run saves later iterations only, so it never holds again; a hold
    nobody ends carries on after ``limit_s``."""
    if os.environ.get(HOLD_AT_CHECKPOINT) != str(iteration):
        return
    log.info("holding after the checkpoint of iteration %d until killed (%s)", iteration, HOLD_AT_CHECKPOINT)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.05)


def make_chunk_runner(algo: Algorithm, mesh=None):
    """``run(states, length) -> (states, metrics [length, seeds])``: ``length`` vmapped steps in one scan;
    with a mesh, each device scans its own slice of the seeds."""

    def run(states, length: int):
        scan = lambda s: jax.lax.scan(lambda c, _: jax.vmap(algo.train_step)(c), s, None, length=length)
        return per_seed_shards(scan, mesh, out_seed_axis=(0, 1))(states)  # states: seeds first; metrics second

    return jax.jit(run, static_argnums=1)


def summarize_chunk(metrics: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-chunk view of per-iteration, per-seed metrics ([iterations, seeds] each).

    - ``return``: the last iteration's, per seed (``return_mean`` over seeds);
    - ``nonfinite*`` counters: totals over the chunk;
    - ``<name>_sum`` with ``<name>_count`` (e.g. returns of training episodes that ended at irregular
      times): ``<name>`` = sum / count over the whole chunk, per seed, and the seed mean over the seeds
      that finished an episode; ``null`` when none did, never a NaN from 0 / 0;
    - anything else: the last iteration's seed mean.
    """
    out: dict[str, Any] = {}
    for key, values in metrics.items():
        last = values[-1]
        if key.endswith("_count") and key[: -len("_count")] + "_sum" in metrics:
            continue
        if key.endswith("_sum") and key[: -len("_sum")] + "_count" in metrics:
            name = key[: -len("_sum")]
            total, count = np.sum(values, axis=0), np.sum(metrics[name + "_count"], axis=0)
            per_seed = [float(t / c) if c > 0 else None for t, c in zip(total, count)]
            finished = [v for v in per_seed if v is not None]
            out[name] = per_seed
            out[name + "_mean"] = float(np.mean(finished)) if finished else None
            out[name + "_count"] = int(np.sum(count))
        elif key.startswith("nonfinite"):
            out[key] = int(np.sum(values))
        elif key == "return":
            out["return"] = last.tolist()
            out["return_mean"] = float(np.mean(last))
        else:
            out[key] = float(np.nanmean(last)) if np.any(np.isfinite(last)) else float("nan")
    return out


def run_warmup(algo: Algorithm, states, logger):
    """The algorithm's one-off ``warmup(state) -> (state, metrics)`` before its first iteration, vmapped over
    seeds; its metrics (seed means) and cost are logged as iteration 0."""
    t0 = time.perf_counter()
    states, metrics = jax.jit(jax.vmap(algo.warmup))(states)
    metrics = jax.device_get(metrics)
    seconds = time.perf_counter() - t0
    row = {"iteration": 0, "env_steps": 0, **{k: float(np.mean(v)) for k, v in metrics.items()}, "warmup_s": seconds}
    log.info("warm-up: %s", ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("iteration", "env_steps")))
    logger.log(row, step=0)
    return states


def place_on_devices(cfg: DictConfig, exp: Experiment):
    """``hardware.devices``: the seed mesh the runner shards its states over (``None`` for one device, or
    when the algorithm shards its population instead), and a phrase for the log."""
    num_seeds = int(cfg.num_seeds)
    population = population_size(cfg.algo.name, vars(exp.algo.config))  # the built algorithm's, as resolved
    devices = local_devices(cfg.hardware.get("devices", 1), num_seeds, population=population)
    if len(devices) == 1:
        return None, ""
    if num_seeds % len(devices) == 0:
        return seed_mesh(devices), f" sharded over {len(devices)} devices"
    exp.algo.population_mesh = population_mesh(devices)
    return None, f", each seed's population ({population}) sharded over {len(devices)} devices"


def sampled_evaluation(exp: Experiment, params, normalizer, eval_key) -> dict[str, Any]:
    """The final evaluation with sampled actions, for an algorithm that asks for one
    (``sampled_evaluation_episodes``: ILD and BC, as ILD's authors evaluated), from as many random resets;
    empty otherwise. Summary keys: ``final_sampled_return`` and ``sampled_eval_episodes``."""
    episodes = int(getattr(exp.algo, "sampled_evaluation_episodes", 0) or 0)
    if not episodes or not exp.policy.stochastic:
        return {}
    stats = make_episode_stats(exp.env, exp.policy, exp.episode_length, episodes, sample_actions=True)
    returns = np.asarray(jax.device_get(stats(params, normalizer, eval_key))["return"])
    return {"final_sampled_return": mean_std(returns.mean(axis=1).tolist()), "sampled_eval_episodes": episodes}


def train_compiled(cfg: DictConfig, run_dir: pathlib.Path) -> dict[str, Any]:
    """diffrl's own algorithms: seeds vmapped, iterations scanned into compiled chunks."""
    configure_jax(cfg.hardware)
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it for `diffrl train`; library callers may not
    exp = build_experiment(cfg)
    algo, num_seeds = exp.algo, int(cfg.num_seeds)
    mesh, sharding = place_on_devices(cfg, exp)
    log.info(
        "%s on %s (%s backend, %s policy): %d iterations x %d seeds%s, %d env steps per iteration per seed",
        cfg.algo.name,
        cfg.env.name,
        cfg.env.backend,
        exp.policy.name,
        exp.iterations,
        num_seeds,
        sharding,
        algo.env_steps_per_iteration,
    )

    states = shard_seeds(jax.jit(jax.vmap(algo.init))(seed_keys(int(cfg.seed), num_seeds)), mesh)
    checkpointer = (
        Checkpointer(run_dir / "checkpoints", int(cfg.checkpoint.max_to_keep)) if cfg.checkpoint.enabled else None
    )
    host = {"iteration": 0, "chunk": 0, "wall_clock_s": 0.0, "compile_time_s": 0.0, "wandb_id": None}
    if cfg.resume:
        if checkpointer is None or checkpointer.latest_step() is None:
            raise ConfigError(f"resume={cfg.resume}: no checkpoint under {run_dir / 'checkpoints'} to resume from")
        states, host = checkpointer.restore(states)
        log.info("resumed from iteration %d (%s)", host["iteration"], checkpointer.directory)

    resume_step = host["iteration"] if cfg.resume else None
    logger, wandb_sink = make_logger(cfg, run_dir, resume_step, host["wandb_id"], exp.effective)
    if wandb_sink is not None:
        host["wandb_id"] = wandb_sink.run_id
    episode_stats = make_episode_stats(exp.env, exp.policy, exp.episode_length, int(cfg.eval.episodes))
    eval_key = evaluation_key(int(cfg.seed))
    policy_of = jax.jit(jax.vmap(algo.policy_params))
    run_chunk = make_chunk_runner(algo, mesh)
    compiled: dict[int, Any] = {}
    lengths = chunk_lengths(exp.iterations, cfg.chunk_iterations)
    steps_per_iteration = algo.env_steps_per_iteration
    progress = ProgressDisplay(
        cfg.logger.console, exp.iterations, host["iteration"], enabled=cfg.logger.console.enabled
    )
    last_train_return: list[float] | None = None
    segment_start = time.perf_counter() - host["wall_clock_s"]
    if host["iteration"] == 0 and hasattr(algo, "warmup"):  # e.g. ILD's behaviour cloning; a resumed run has had it
        states = run_warmup(algo, states, logger)
        host["wall_clock_s"] = time.perf_counter() - segment_start

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
                    stats = jax.device_get(episode_stats(params, normalizer, eval_key))
                    row["eval_return"] = np.mean(stats["return"], axis=1).tolist()
                logger.log(row, step=host["iteration"])
                progress.update(row)
                if "nonfinite_stalled" in metrics and np.any(metrics["nonfinite_stalled"][-1]):
                    stalled = np.flatnonzero(metrics["nonfinite_stalled"][-1]).tolist()
                    raise TrainingDiverged(divergence_message(cfg, stalled, host["iteration"]))
                if checkpointer and (
                    host["chunk"] % int(cfg.checkpoint.every_chunks) == 0 or host["chunk"] == len(lengths)
                ):
                    checkpointer.save(host["iteration"], states, host)
                    hold_if_asked(host["iteration"])

        params, normalizer = policy_of(states)
        final_stats = jax.device_get(episode_stats(params, normalizer, eval_key))
        sampled = sampled_evaluation(exp, params, normalizer, eval_key)
        host["wall_clock_s"] = time.perf_counter() - segment_start
        summary = build_summary(
            cfg,
            run_dir,
            eval_stats=final_stats,
            train_returns=last_train_return,
            iterations=host["iteration"],
            env_steps_per_seed=host["iteration"] * steps_per_iteration,
            wall_clock_s=host["wall_clock_s"],
            compile_time_s=host["compile_time_s"],
            effective=exp.effective,
        )
        summary.update(sampled)
        write_summary(run_dir, summary, wandb_sink)
        return summary
    finally:
        logger.close()
        if checkpointer:
            checkpointer.close()
