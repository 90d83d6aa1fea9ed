"""Where a policy's return comes from, and whether SHAC's critic knows it.

For each trained run (SHAC, PPO or any run ``diffrl eval`` reads) and, with ``--zero-action``, the policy that
never moves, over the same deterministic-evaluation start states as ``diffrl eval`` (same seed, same starts):
- the return split into the task's reward terms (the env's ``reward_terms``; shac_ant: forward velocity,
  0.1 up_z, heading, height - 0.27; shac_humanoid: the same with its shaped height term, and the action
  cost), summed over each episode, deterministic (mean action) and, for a stochastic policy, sampled;
- for a SHAC run, its critic's and target critic's value V(s_t) against the Monte-Carlo discounted return
  G_t = sum_k gamma^k r_(t+k) of the same episode, at the window ends t = 0, H, 2H, ... up to
  ``--value-steps`` (far enough from the 1000-step time limit that the truncated tail is negligible:
  gamma^500 < 0.007): a critic biased there biases every window's bootstrap.

    python -m benchmarks.reward_terms RUN_DIR [RUN_DIR ...] [--zero-action] [--step N] [--episodes 16]
        [--out FILE]

``--step`` picks a SHAC checkpoint other than the latest. Writes JSON (``--out``) and prints one line each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from diffrl.checkpoint import Checkpointer  # noqa: E402
from diffrl.eval_run import load_run_config  # noqa: E402
from diffrl.experiment import configure_jax, mean_std, seed_keys  # noqa: E402
from diffrl.loggers import to_jsonable  # noqa: E402
from diffrl.rollout import episode  # noqa: E402
from diffrl.run import build_experiment, is_external, load_policy  # noqa: E402

EVAL_SEED = 12345  # diffrl eval's default: the same start states as its evaluation


@dataclasses.dataclass(frozen=True)
class ZeroAction:
    """The trivial baseline: action 0 on every joint (what the body does with no effort)."""

    action_size: int
    stochastic: bool = False

    def initial_carry(self) -> jax.Array:
        return jnp.zeros(1)

    def act(self, params, normalizer, carry, obs, key=None):
        return carry, jnp.zeros(self.action_size, obs.dtype)

    def normalize(self, obs, normalizer):
        return obs


def discounted_to_go(rewards: jax.Array, gamma: float) -> jax.Array:
    """G_t = r_t + gamma G_(t+1) over one episode's rewards [T] (0 after its end), G_T = 0."""

    def back(after, reward):
        here = reward + gamma * after
        return here, here

    return jax.lax.scan(back, jnp.zeros((), rewards.dtype), rewards, reverse=True)[1]


def terms_of(env) -> Any:
    terms = getattr(env, "reward_terms", None)
    if terms is None:
        raise ValueError(f"{type(env).__name__} has no reward_terms(obs, action): its reward cannot be split")
    return terms


def make_measure(env, policy, episode_length: int, episodes: int, sample: bool, value_fn=None, value_at=()):
    """Jitted ``measure(params, normalizer, critics, key) -> {name: [seeds, episodes, ...]}``: the return, length
    and each reward term summed over an episode; with ``value_fn(critic, normalised obs [T, obs]) -> [T]``, the
    value of each critic in ``critics`` (a dict, each with a seed axis) and G_t at the steps ``value_at``."""
    reward_terms = terms_of(env)
    value_at = jnp.asarray(value_at, jnp.int32)

    def one_episode(params, normalizer, critics, start_state, action_key):
        trajectory = episode(
            env, policy, params, normalizer, start_state, episode_length, action_key=action_key if sample else None
        )
        alive = trajectory.alive
        terms = jax.vmap(reward_terms)(trajectory.next_observation, trajectory.action)
        out = {"return": jnp.sum(trajectory.reward), "length": jnp.sum(alive)}
        out.update({name: jnp.sum(jnp.where(alive, value, 0.0)) for name, value in terms.items()})
        if value_fn is not None:
            out["alive_at"] = alive[value_at]
            out["return_to_go"] = discounted_to_go(trajectory.reward, value_fn.gamma)[value_at]
            observed = policy.normalize(trajectory.observation[value_at], normalizer)
            for name, critic in critics.items():
                out[f"value_{name}"] = value_fn(critic, observed)
        return out

    @jax.jit
    def measure(params, normalizer, critics, key):
        starts = jax.vmap(env.reset)(jax.random.split(key, episodes))  # as diffrl.evaluation: the same starts
        action_keys = jax.random.split(jax.random.fold_in(key, 1), episodes)
        per_seed = lambda p, n, c: jax.vmap(lambda s, k: one_episode(p, n, c, s, k))(starts, action_keys)
        return jax.vmap(per_seed)(params, normalizer, critics)

    return measure


def summarise_terms(stats: dict[str, np.ndarray], names: list[str]) -> dict[str, Any]:
    """Per-seed means (over episodes) of the return, length and each term, and per step of episode."""
    out = {name: mean_std(stats[name].mean(axis=1).tolist()) for name in ["return", "length", *names]}
    steps = stats["length"].sum()
    out["per_step"] = {name: float(stats[name].sum() / steps) for name in ["return", *names]}
    out["terms_sum_minus_return"] = float(np.max(np.abs(sum(stats[n] for n in names) - stats["return"])))
    return out


def summarise_values(stats: dict[str, np.ndarray], critics: list[str], value_at: list[int]) -> dict[str, Any]:
    """The critics' value against G_t where the episode still runs: per seed, all window ends and t = 0."""
    alive = stats["alive_at"]  # [seeds, episodes, points]
    out: dict[str, Any] = {"window_ends": value_at, "points_alive": int(alive.sum())}

    def per_seed(x, mask):
        return [float(x[s][mask[s]].mean()) if mask[s].any() else float("nan") for s in range(len(x))]

    first = np.zeros_like(alive)
    first[..., 0] = alive[..., 0]
    for label, mask in (("all_window_ends", alive), ("t0", first)):
        row = {"return_to_go": mean_std(per_seed(stats["return_to_go"], mask))}
        for name in critics:
            value = stats[f"value_{name}"]
            row[f"value_{name}"] = mean_std(per_seed(value, mask))
            row[f"bias_{name}"] = mean_std(per_seed(value - stats["return_to_go"], mask))
        out[label] = row
    return out


class ValueFn:
    """The SHAC critic's forward pass with the discount it was trained for (a hashable closure for jit)."""

    def __init__(self, critic_net, gamma: float):
        self.critic_net, self.gamma = critic_net, gamma

    def __call__(self, critic, observed):
        return self.critic_net.apply(critic, observed)


def load_shac_states(run_dir: pathlib.Path, cfg, step: int | None):
    """(experiment, the train states [seeds], iteration) of a compiled run's checkpoint ``step`` (latest: None)."""
    exp = build_experiment(cfg)
    like = jax.jit(jax.vmap(exp.algo.init))(seed_keys(int(cfg.seed), int(cfg.num_seeds)))
    checkpointer = Checkpointer(run_dir / "checkpoints")
    try:
        states, host = checkpointer.restore(like, step)
    finally:
        checkpointer.close()
    return exp, states, host["iteration"]


def measure_run(run_dir: pathlib.Path, episodes: int, step: int | None, value_steps: int) -> tuple[dict, Any]:
    """The run's policy (and SHAC's critics) measured; returns (result, experiment)."""
    cfg = load_run_config(run_dir)
    critics, value_fn, value_at = {}, None, []
    if not is_external(cfg) and cfg.algo.name == "shac":
        exp, states, iteration = load_shac_states(run_dir, cfg, step)
        params, normalizer = jax.jit(jax.vmap(exp.algo.policy_params))(states)
        if exp.algo.config.critic:
            critics = {"critic": states.critic, "target_critic": states.target_critic}
            value_fn = ValueFn(exp.algo.critic_net, exp.algo.config.gamma)
            value_at = list(range(0, value_steps + 1, exp.algo.config.horizon))
    else:
        if step is not None and not is_external(cfg):
            raise ValueError("--step reads SHAC checkpoints only")
        exp, params, normalizer, iteration = load_policy(run_dir, cfg)
    result = {"run_dir": str(run_dir), "algo": cfg.algo.name, "iteration_or_env_steps": iteration}
    result.update(
        measure_policy(
            exp.env, exp.policy, exp.episode_length, episodes, params, normalizer, critics, value_fn, value_at
        )
    )
    return result, exp


def measure_policy(env, policy, length, episodes, params, normalizer, critics=None, value_fn=None, value_at=()):
    """Deterministic and (stochastic policies) sampled measures of one policy [seeds]."""
    names = list(jax.eval_shape(terms_of(env), jnp.zeros(env.observation_size), jnp.zeros(env.action_size)))
    key = jax.random.PRNGKey(EVAL_SEED)
    out = {}
    for mode in ("deterministic", "sampled") if policy.stochastic else ("deterministic",):
        measure = make_measure(env, policy, length, episodes, mode == "sampled", value_fn, value_at)
        stats = {k: np.asarray(v) for k, v in jax.device_get(measure(params, normalizer, critics or {}, key)).items()}
        out[mode] = summarise_terms(stats, names)
        if value_fn is not None:
            out[mode]["critic_vs_return"] = summarise_values(stats, list(critics), list(value_at))
    return out


def zero_action_result(exp, episodes: int) -> dict:
    env = exp.env
    dummy = jnp.zeros((1, 1))  # one "seed"; the zero policy reads no parameters
    result = measure_policy(env, ZeroAction(env.action_size), exp.episode_length, episodes, dummy, dummy)
    return {"run_dir": None, "algo": "zero_action", **result}


def line(result: dict) -> str:
    det = result["deterministic"]
    terms = ", ".join(
        f"{k} {v['mean']:.1f}"
        for k, v in det.items()
        if isinstance(v, dict) and "mean" in v and k not in ("return", "length")
    )
    return (
        f"{result['algo']} ({result['iteration_or_env_steps'] if 'iteration_or_env_steps' in result else '-'}): "
        f"return {det['return']['mean']:.1f} +- {det['return']['std']:.1f}, length {det['length']['mean']:.0f}; "
        f"{terms}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=pathlib.Path)
    parser.add_argument("--zero-action", action="store_true", help="also the zero-action policy (first run's task)")
    parser.add_argument("--step", type=int, default=None, help="SHAC checkpoint step (default: the latest)")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--value-steps", type=int, default=500, help="last window end where V is compared with G")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    args = parser.parse_args()
    if args.episodes < 1 or args.value_steps < 0:
        parser.error("--episodes must be >= 1 and --value-steps >= 0")
    runs = [run.expanduser().absolute() for run in args.runs]
    for run in runs:
        load_run_config(run)  # a missing or wrong directory fails here, before any compile
    configure_jax(OmegaConf.merge(load_run_config(runs[0]).hardware, {"platform": "cpu"}))
    results = []
    for index, run in enumerate(runs):
        result, exp = measure_run(run, args.episodes, args.step, args.value_steps)
        results.append(result)
        print(line(result), flush=True)
        if index == 0 and args.zero_action:
            results.append(zero_action_result(exp, args.episodes))
            print(line(results[-1]), flush=True)
    out = {"episodes_per_seed": args.episodes, "eval_seed": EVAL_SEED, "step": args.step, "results": results}
    if args.out:
        args.out.write_text(json.dumps(to_jsonable(out), indent=1) + "\n")


if __name__ == "__main__":
    main()
