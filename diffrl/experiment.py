"""What every training loop shares, whichever runs the algorithm (diffrl's compiled chunks or an
external trainer's own loop): JAX set-up, checks of the composed config, the effective options a budget
gives, env and policy construction, seeds and keys, the logger, and ``summary.json``.

Nothing here imports a training loop; ``diffrl.run`` chooses the loop.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env
from omegaconf import DictConfig, OmegaConf

from diffrl.algos import DETERMINISTIC_POLICY_ALGOS, IMITATION_ALGOS, POPULATION_OPTIONS, check_policy
from diffrl.baselines import EXTERNAL_TRAINERS, TORCH_TRAINERS
from diffrl.devices import check_divides, request_host_devices, requested_devices
from diffrl.envs import check_backend, make_env
from diffrl.envs.wrappers import InjectNaN
from diffrl.errors import ConfigError
from diffrl.loggers import JsonlSink, MetricLogger, WandbSink, to_jsonable
from diffrl.networks import POLICIES, STOCHASTIC_POLICIES, Policy, make_policy

log = logging.getLogger("diffrl")

# Keys of an algo config that describe the run rather than the algorithm's own options.
_RUNNER_KEYS = ("name", "budgets", "normalizer")  # normalizer: the policy's (build_policy), not the algorithm's
_EVAL_KEY_OFFSET = 1_000_003  # evaluation start states never coincide with a training key


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a config builds: the env, the policy, the algorithm and the run's length."""

    env: Env
    policy: Policy
    algo: Any  # None for an external trainer's policy rebuilt for evaluation
    iterations: int
    episode_length: int
    effective: dict[str, Any]


def evaluation_key(seed: int) -> jax.Array:
    """The start states of every final evaluation of seed family ``seed``, whatever the algorithm."""
    return jax.random.PRNGKey(seed + _EVAL_KEY_OFFSET)


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """One PRNG key per vmapped seed; seed i of family ``seed`` is the same in every run."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num_seeds))


def configure_jax(hardware: DictConfig) -> None:
    """Platform, precision, XLA flags and the persistent compilation cache, before any computation."""
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    request_host_devices(hardware)
    if hardware.xla_flags and hardware.xla_flags not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {hardware.xla_flags}".strip()
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true" if hardware.preallocate_memory else "false"
    jax.config.update("jax_platforms", hardware.platform)
    jax.config.update("jax_enable_x64", bool(hardware.enable_x64))
    if hardware.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(hardware.compilation_cache_dir).expanduser()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


class RunDirInUse(ConfigError):
    """The run directory already holds another run's results, and this run is not resuming it."""


def check_run_dir_is_free(cfg: DictConfig, run_dir: pathlib.Path) -> None:
    """A new run never overwrites another run's metrics, summary or checkpoints (e.g. a sweep rerun into
    the same directories): it stops before any work and says how to continue or move the old run."""
    if cfg.get("resume"):
        return
    names = ("summary.json", cfg.logger.jsonl.filename, "checkpoints")
    taken = [name for name in names if (pathlib.Path(run_dir) / name).exists()]
    if taken:
        raise RunDirInUse(
            f"{run_dir} already holds a run ({', '.join(taken)}); a new run never overwrites another's files: "
            f"continue it with `diffrl train resume={run_dir}`, or move it away and run again"
        )


def has_checkpoint(run_dir: pathlib.Path) -> bool:
    """Whether a run directory holds something to resume: an orbax step (diffrl's algorithms) or the
    external trainers' run record."""
    checkpoints = pathlib.Path(run_dir) / "checkpoints"
    return checkpoints.is_dir() and any(p.name.isdigit() or p.name == "run.json" for p in checkpoints.iterdir())


def write_failed_summary(cfg: DictConfig, run_dir: pathlib.Path, error: str, details: str | None = None) -> None:
    """A sweep job that raised, or that its launcher saw die (Slurm: cancelled, out of time, node lost),
    leaves a ``summary.json`` saying so, so that ``diffrl table`` shows the cell as failed and why."""
    summary = {
        "status": "failed",
        "error": error,
        "traceback": details,
        "env": cfg.env.name,
        "algo": cfg.algo.name,
        "budget": cfg.budget,
        "seed": int(cfg.seed),
        "num_seeds": int(cfg.num_seeds),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def is_external(cfg: DictConfig) -> bool:
    """PPO, SAC, Brax APG, SB3: agents with their own training loop and their own networks."""
    return cfg.algo.name in EXTERNAL_TRAINERS


def check_config(cfg: DictConfig) -> None:
    """Combinations that cannot work, each refused with one line that says why (before any compile)."""
    check_backend(cfg.env.name, cfg.env.backend)
    devices = requested_devices(cfg.hardware.get("devices", 1))
    if isinstance(devices, int) and not is_external(cfg):
        check_divides(devices, int(cfg.num_seeds), population=population_size(cfg.algo.name, algorithm_options(cfg)[0]))
    policy = cfg.get("policy")
    if is_external(cfg):
        if cfg.algo.name in TORCH_TRAINERS and devices != 1:
            raise ConfigError(
                f"algo={cfg.algo.name} trains one PyTorch process per seed; hardware.devices={devices} shards the "
                "seeds of diffrl's JAX algorithms and the envs of Brax's agents (algo=ppo|sac|brax_apg)"
            )
        if policy is not None:
            raise ConfigError(
                f"algo={cfg.algo.name} trains Brax's or SB3's own networks (set them under algo.network / "
                f"algo.policy_kwargs); policy={policy.name} applies to {', '.join(DETERMINISTIC_POLICY_ALGOS)}"
            )
        if cfg.env.get("inject_nan_after") is not None:
            raise ConfigError(
                f"env.inject_nan_after works with diffrl's own algorithms, not algo={cfg.algo.name} "
                "(its trainer would never see the NaN guard it tests)"
            )
        if cfg.algo.name in TORCH_TRAINERS and cfg.hardware.platform != "cpu":
            raise ConfigError(
                f"algo={cfg.algo.name} trains with PyTorch's CPU build (the one torch diffrl installs), not on "
                f"platform {cfg.hardware.platform!r}: use hardware=cpu, or Brax's JAX agents algo=ppo|sac"
            )
        return
    if policy is None:
        raise ConfigError(f"algo={cfg.algo.name} needs a policy: add policy=<{' | '.join(POLICIES)}>")
    if policy.name not in POLICIES:
        raise ConfigError(f"unknown policy {policy.name!r}; valid choices: {', '.join(POLICIES)}")
    try:
        check_policy(cfg.algo.name, policy.name, policy.name in STOCHASTIC_POLICIES)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cfg.algo.name in IMITATION_ALGOS:
        from diffrl.demos import load_demos

        load_demos(demo_path(cfg), cfg.env.name, cfg.env.backend)  # a missing or mismatched file: one line


def population_size(algo: str, options: dict[str, Any]) -> int | None:
    """Candidates (CE-APG, CEM) or parallel runs (PAPG) each iteration: what ``hardware.devices`` shards when
    it does not divide the seeds. ``None`` for algorithms without a population."""
    key = POPULATION_OPTIONS.get(algo)
    return int(options[key]) if key else None


def algorithm_options(cfg: DictConfig) -> tuple[dict[str, Any], int]:
    """The algorithm's options and outer iterations for the chosen budget.

    A budget (``algo.budgets.<budget>``) fills the options left ``null`` in the algo config, and
    ``iterations`` when the top-level ``iterations`` is null: anything set explicitly wins.
    """
    algo_cfg = OmegaConf.to_container(cfg.algo, resolve=True)
    budgets = algo_cfg.get("budgets") or {}
    if cfg.budget not in budgets:
        raise ConfigError(
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
        raise ConfigError(f"algo {cfg.algo.name!r}: budget {cfg.budget!r} sets no value for {missing}")
    options["episode_length"] = training_horizon(cfg)
    if cfg.algo.name in IMITATION_ALGOS:  # the demos must be of this task, recorded on this backend
        options["demo"] = str(demo_path(cfg))
        options["task"], options["backend"] = cfg.env.name, cfg.env.backend
    if iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {iterations}")
    return options, iterations


def demo_path(cfg: DictConfig) -> pathlib.Path:
    """The demo file of an imitation run: ``algo.demo``, or the committed demo of the task."""
    from diffrl.demos import default_demo_path

    given = cfg.algo.get("demo")
    return pathlib.Path(given).expanduser().absolute() if given else default_demo_path(cfg.env.name)


def training_horizon(cfg: DictConfig) -> int:
    """Steps of the episodes an algorithm trains on: ``env.training_horizon`` for the algorithms that roll
    out episodes from a start state (CEM, PAPG, CE-APG; null: the whole episode); ``algo.episode_length`` for
    imitation (the demos' horizon, ILD's 128 steps); every other algorithm trains on whole episodes."""
    if cfg.algo.name in IMITATION_ALGOS:
        return min(int(cfg.algo.episode_length), int(cfg.env.episode_length))
    if cfg.algo.name not in DETERMINISTIC_POLICY_ALGOS:  # e.g. SHAC: continuing envs, whole episodes
        return int(cfg.env.episode_length)
    return min(int(cfg.env.get("training_horizon") or cfg.env.episode_length), int(cfg.env.episode_length))


def evaluation_length(cfg: DictConfig) -> int:
    """Steps of the final evaluation's episodes: the task's whole episode, except for imitation, which is
    judged over the horizon it imitates (ILD's 128 steps, train and eval)."""
    return training_horizon(cfg) if cfg.algo.name in IMITATION_ALGOS else int(cfg.env.episode_length)


def mjx_solver(env_cfg: DictConfig) -> dict[str, int]:
    """The MJX solver options the env config asks for (null keeps the MJCF's)."""
    options = {"opt.iterations": env_cfg.get("mjx_iterations"), "opt.ls_iterations": env_cfg.get("mjx_ls_iterations")}
    return {k: int(v) for k, v in options.items() if v is not None}


def build_env(cfg: DictConfig):
    """The task on its backend, with the debugging NaN injection when asked for."""
    env = make_env(cfg.env.name, cfg.env.backend, mjx_solver(cfg.env), inertia=cfg.env.get("inertia"))
    if cfg.env.get("inject_nan_after") is not None:
        env = InjectNaN(env, int(cfg.env.inject_nan_after))
    return env


def build_policy(cfg: DictConfig, env) -> Policy:
    """The policy of ``cfg.policy``, normalising its inputs as the algorithm says (``algo.normalizer``)."""
    options = OmegaConf.to_container(cfg.policy, resolve=True)
    algo = cfg.get("algo")  # `diffrl gradients` composes no algorithm: the policy keeps its default options
    if algo is not None and algo.get("normalizer") is not None:
        options["normalizer"] = OmegaConf.to_container(algo.normalizer, resolve=True)
    return make_policy(options, env.observation_size, env.action_size)


def policy_description(policy: Policy) -> dict[str, Any]:
    """The policy as built (defaults resolved, e.g. the GRU's width) and its parameter count."""
    module = {k: v for k, v in vars(policy.module).items() if not k.startswith("_") and k not in ("parent", "name")}
    params = policy.init(jax.random.PRNGKey(0))
    return {
        "name": policy.name,
        "stochastic": policy.stochastic,
        "module": type(policy.module).__name__,
        **to_jsonable({k: list(v) if isinstance(v, tuple) else v for k, v in module.items()}),
        "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
    }


def effective_settings(
    cfg: DictConfig, env, options: dict[str, Any], iterations: int, policy: Policy | None = None
) -> dict[str, Any]:
    """What the run actually used, after budgets filled the options left null: enough to read a run
    back without the code (recorded in ``summary.json`` and the wandb config)."""
    return to_jsonable(
        {
            "algo": {"name": cfg.algo.name, "iterations": iterations, **options},
            "policy": policy_description(policy) if policy is not None else "the trainer's own networks",
            "env": {
                "name": cfg.env.name,
                "backend": cfg.env.backend,
                "episode_length": int(cfg.env.episode_length),
                "training_horizon": training_horizon(cfg),
                "observation_size": int(env.observation_size),
                "action_size": int(env.action_size),
                "control_dt": float(env.dt),
                **({"mjx_solver": mjx_solver(cfg.env)} if cfg.env.backend == "mjx" else {}),
            },
            "budget": cfg.budget,
            "num_seeds": int(cfg.num_seeds),
            "devices": cfg.hardware.get("devices", 1),
            "enable_x64": bool(cfg.hardware.enable_x64),
        }
    )


def mean_std(values: list[float]) -> dict[str, Any]:
    """Per-seed values with their mean and population std (as the papers report)."""
    arr = np.asarray(values, dtype=float)
    return {"per_seed": arr.tolist(), "mean": float(arr.mean()), "std": float(arr.std())}


def package_versions() -> dict[str, str]:
    names = ["diffrl", "jax", "jaxlib", "brax", "mujoco", "mujoco-mjx", "flax", "optax", "orbax-checkpoint"]
    versions = {"python": sys.version.split()[0]}
    for name in [*names, "hydra-core", "wandb"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_description() -> str:
    """The CPU model, the cores visible and JAX's platform: what a measured number was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = jax.devices()[0]
    accelerator = f" ({device.device_kind})" if device.platform != "cpu" else ""
    return f"{cpu}, {os.cpu_count()} cores visible; jax {jax.__version__} on {device.platform}{accelerator}"


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
    eval_stats: dict[str, np.ndarray],
    train_returns: list[float] | None,
    iterations: int,
    env_steps_per_seed: int,
    wall_clock_s: float,
    compile_time_s: float | None,
    effective: dict[str, Any],
) -> dict[str, Any]:
    """What ``summary.json`` holds for any algorithm. ``eval_stats`` are the final evaluation's per-episode
    values, [seeds, episodes]: ``return``, ``length`` and the task's own metrics (e.g. the swing-ups'
    ``upright_fraction``, the share of each episode's last 100 steps spent balanced)."""
    eval_returns = np.asarray(eval_stats["return"])
    per_seed = lambda key: mean_std(np.asarray(eval_stats[key], dtype=float).mean(axis=1).tolist())
    task_metrics = {f"final_{key}": per_seed(key) for key in eval_stats if key not in ("return", "length")}
    return {
        "status": "completed",
        "env": cfg.env.name,
        "algo": cfg.algo.name,
        "policy": cfg.policy.name if cfg.get("policy") is not None else None,
        "backend": cfg.env.backend,
        "budget": cfg.budget,
        "seed": int(cfg.seed),
        "num_seeds": int(eval_returns.shape[0]),
        "iterations": iterations,
        "env_steps_per_seed": env_steps_per_seed,
        "final_return": mean_std(eval_returns.mean(axis=1).tolist()),
        "final_episode_length": per_seed("length"),
        "final_train_return": mean_std(train_returns) if train_returns else None,
        **task_metrics,
        "eval_episodes": int(eval_returns.shape[1]),
        "wall_clock_s": wall_clock_s,
        "compile_time_s": compile_time_s,
        "effective": effective,
        "versions": package_versions(),
        "machine": machine_description(),  # what the wall clock was measured on (CPU model or GPU, cores)
        "git_commit": git_commit(),
        "run_dir": str(run_dir.absolute()),
    }


def write_summary(run_dir: pathlib.Path, summary: dict[str, Any], wandb_sink: WandbSink | None) -> None:
    (run_dir / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2) + "\n")
    final = summary["final_return"]
    if wandb_sink is not None:
        wandb_sink.summary({"final_return_mean": final["mean"], "final_return_std": final["std"]})
    log.info(
        "final return %.2f +- %.2f over %d seeds (%d episodes each, mean length %.0f steps); summary: %s",
        final["mean"],
        final["std"],
        summary["num_seeds"],
        summary["eval_episodes"],
        summary["final_episode_length"]["mean"],
        run_dir / "summary.json",
    )


def make_logger(
    cfg: DictConfig, run_dir: pathlib.Path, resume_step: int | None, wandb_id: str | None, effective: dict[str, Any]
):
    """The run's logger (JSONL, wandb) and its wandb sink, whose config holds the effective settings."""
    sinks: list = []
    wandb_sink = None
    if cfg.logger.jsonl.enabled:
        sinks.append(JsonlSink(run_dir / cfg.logger.jsonl.filename, resume_step))
    if cfg.logger.wandb.enabled:
        config = {**OmegaConf.to_container(cfg, resolve=True), "effective": effective}
        name = f"{cfg.env.name}_{cfg.algo.name}_seed{cfg.seed}"
        wandb_sink = WandbSink(run_dir, config, OmegaConf.to_container(cfg.logger.wandb, resolve=True), name, wandb_id)
        sinks.append(wandb_sink)
    return MetricLogger(sinks), wandb_sink
