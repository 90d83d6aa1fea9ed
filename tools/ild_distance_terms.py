"""What makes up ILD's logged distance: a diagnostic for issue 23.

For each checkpoint of a BC or ILD run, every seed's ``num_envs`` training rollouts are rolled out again from the
run's own start states (sampled actions, one fixed noise key for every checkpoint, so checkpoints compare), and
the fixed-scale Chamfer distance (the demos' statistics, clipped to +-5, valid states only: what the run logs as
``distance``) is taken apart:

- the rollouts' return and the share of their states that count (``valid``: before any fall);
- the two Chamfer terms: ``forward`` (each valid agent state to its nearest demo state) and ``backward`` (each
  demo state to its nearest valid agent state);
- ``complete``: the distance of the rollouts that never fell, beside ``fell``: of those that did;
- which features carry the forward term: each feature's share of the squared normalised deviation from the
  nearest demo state, averaged over the valid states (named by body and component on Brax's bodies).

    python tools/ild_distance_terms.py <run dir> [--steps 0,5,20] [--out terms.json]

Keep every checkpoint with ``checkpoint.max_to_keep=<iterations + 1> chunk_iterations=1`` when training.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from brax.training.acme import running_statistics

from diffrl.algos.ild import first_episode, valid_states
from diffrl.algos.trajectory_distance import masked_mean, pairwise_rms
from diffrl.checkpoint import Checkpointer
from diffrl.eval_run import load_run_config
from diffrl.experiment import configure_jax, seed_keys
from diffrl.run import build_experiment

COMPONENTS = ("pos.x", "pos.y", "pos.z", "quat.w", "quat.x", "quat.y", "quat.z")
COMPONENTS += ("vel.x", "vel.y", "vel.z", "angvel.x", "angvel.y", "angvel.z")


def feature_names(env, size: int) -> list[str]:
    """Body-major names of ``state_features`` (13 per body) where the env names its bodies, else f0, f1, ..."""
    bodies = list(getattr(getattr(env, "sys", None), "link_names", []) or [])
    if bodies and len(bodies) * len(COMPONENTS) == size:
        return [f"{body}.{part}" for body in bodies for part in COMPONENTS]
    return [f"f{i}" for i in range(size)]


def chamfer_terms(agent: jax.Array, demo: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
    """One rollout's normalised states [T, F] against one demo [S, F]: the two Chamfer terms and each feature's
    squared deviation from the nearest demo state, averaged over the valid states."""
    valid = jnp.where(jnp.any(valid), valid, True)  # as trajectory_distance: no valid state -> all count
    d = pairwise_rms(agent, demo)
    nearest = jnp.argmin(d, axis=1)
    squared = (agent - demo[nearest]) ** 2  # [T, F]
    per_feature = jnp.sum(jnp.where(valid[:, None], squared, 0.0), axis=0) / jnp.maximum(jnp.sum(valid), 1)
    return {
        "forward": masked_mean(jnp.min(d, axis=1), valid),
        "backward": jnp.mean(jnp.min(jnp.where(valid[:, None], d, jnp.inf), axis=0)),
        "per_feature": per_feature,
    }


def measure(algo, state, key: jax.Array) -> dict[str, jax.Array]:
    """Per rollout of one seed's state: return, valid share, fell, the two terms, per-feature deviations."""
    trajectory = algo.rollouts(state.params, state.normalizer, state.start_keys, key)
    valid = valid_states(trajectory)
    clip = algo.config.state_clip
    demo = running_statistics.normalize(algo.demos.state[0], algo.demo_statistics, max_abs_value=clip)
    states = jnp.nan_to_num(trajectory.pipeline_state)
    agent = running_statistics.normalize(states, algo.demo_statistics, max_abs_value=clip)
    terms = jax.vmap(lambda a, v: chamfer_terms(a, demo, v))(agent, valid)
    return {
        "return": jnp.sum(jnp.where(first_episode(trajectory), trajectory.reward, 0.0), axis=-1),
        "valid": jnp.mean(valid, axis=-1),
        "fell": ~jnp.all(valid, axis=-1),
        **terms,
    }


def summarise(rollouts: dict[str, np.ndarray], names: list[str], top: int = 4) -> dict:
    distance = rollouts["forward"] + rollouts["backward"]
    fell = rollouts["fell"]
    shares = rollouts["per_feature"].mean(axis=0)
    shares = shares / max(float(shares.sum()), 1e-12)
    order = np.argsort(shares)[::-1][:top]

    def mean_where(values, where):
        return float(values[where].mean()) if where.any() else None

    return {
        "return": float(rollouts["return"].mean()),
        "valid_fraction": float(rollouts["valid"].mean()),
        "fell_fraction": float(fell.mean()),
        "distance": float(distance.mean()),
        "forward": float(rollouts["forward"].mean()),
        "backward": float(rollouts["backward"].mean()),
        "distance_complete": mean_where(distance, ~fell),
        "distance_fell": mean_where(distance, fell),
        "top_features": {names[i]: round(float(shares[i]), 3) for i in order},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--steps", help="checkpoint steps, comma-separated (default: every one kept)")
    parser.add_argument("--out", type=pathlib.Path, help="write the table as JSON here too")
    args = parser.parse_args()
    run_dir = args.run_dir.expanduser().absolute()
    cfg = load_run_config(run_dir)
    configure_jax(cfg.hardware)
    exp = build_experiment(cfg)
    algo = exp.algo
    like = jax.jit(jax.vmap(algo.init))(seed_keys(int(cfg.seed), int(cfg.num_seeds)))
    checkpointer = Checkpointer(run_dir / "checkpoints")
    kept = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    steps = [int(s) for s in args.steps.split(",")] if args.steps else kept
    names = feature_names(exp.env, int(algo.demos.state.shape[-1]))
    measured = jax.jit(jax.vmap(lambda state: measure(algo, state, jax.random.PRNGKey(0))))
    table = []
    for step in steps:
        states = like if step == 0 else checkpointer.restore(like, step=step)[0]
        if step == 0 and hasattr(algo, "warmup"):
            states = jax.jit(jax.vmap(algo.warmup))(states)[0]  # ILD's iteration 0: after the BC warm-up
        rollouts = jax.device_get(measured(states))
        for seed in range(int(cfg.num_seeds)):
            row = {"step": step, "seed": seed, **summarise({k: v[seed] for k, v in rollouts.items()}, names)}
            table.append(row)
            complete = row["distance_complete"]
            print(
                f"step {step:4d} seed {seed}: return {row['return']:6.1f}  valid {row['valid_fraction']:.2f}  "
                f"fell {row['fell_fraction']:.2f}  distance {row['distance']:.3f} (forward {row['forward']:.3f}, "
                f"backward {row['backward']:.3f}; never fell: "
                f"{'-' if complete is None else f'{complete:.3f}'})  {row['top_features']}",
                flush=True,
            )
    checkpointer.close()
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
