"""What makes up ILD's logged distance: a diagnostic for issue 23.

For each checkpoint of a BC or ILD run, every seed's ``num_envs`` training rollouts are rolled out again from the
run's own start states (sampled actions, one fixed noise key for every checkpoint, so checkpoints compare), and
their fixed-scale Chamfer distance (the demo's statistics, clipped as the run clips, valid states only) is taken
apart:

- the rollouts' return, the share of their states that count (before any fall) and the share that fell;
- ``distance``, the same measure the run logs (``Imitation.fixed_scale_distance``), and its two Chamfer terms:
  ``forward`` (each valid rollout state to its nearest demo state) and ``backward`` (each demo state to its
  nearest valid rollout state), which add up to it;
- the distance of the rollouts that never fell, beside that of all of them;
- which features carry the forward term: each feature's share of the squared normalised deviation from the
  nearest demo state, averaged over the valid states. Features that are the same number in every demo state
  (on the inverted pendulum the pole hangs from the cart: ``cart.pos.x`` is ``pole.pos.x``) are reported
  once, with their shares added.

Checkpoint k holds the policy after k updates (ILD) or after 50·k Adam steps (BC). ILD logs an iteration's
``distance`` on the rollouts it makes *before* that iteration's update, so ILD's checkpoint k is what its logged
iteration k + 1 measured; BC measures after its steps, so BC's checkpoint k is its logged iteration k. Step 0 is
ILD's policy after the behaviour-cloning warm-up, and BC's untrained initial policy (no logged row).

    python tools/ild_distance_terms.py <run dir> [--steps 0,5,20] [--out terms.json]

Keep every checkpoint with ``checkpoint.max_to_keep=<iterations + 1> chunk_iterations=1`` when training. Runs
that imitate several demos (``algo.demos > 1``) are refused: the terms are taken against one demo.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from diffrl.algos.ild import falls, first_episode, normalise_states, valid_states
from diffrl.algos.trajectory_distance import chamfer_terms, masked_mean, pairwise_rms
from diffrl.checkpoint import Checkpointer
from diffrl.demo_file import state_feature_names
from diffrl.eval_run import load_run_config
from diffrl.experiment import configure_jax, seed_keys
from diffrl.run import build_experiment


def feature_deviations(agent: jax.Array, demo: jax.Array, valid: jax.Array) -> jax.Array:
    """[F]: each feature's squared deviation of the valid agent states [T, F] from their nearest demo state
    [S, F], averaged over those states (all of them where none is valid, as the distance does)."""
    valid = jnp.where(jnp.any(valid), valid, True)
    nearest = jnp.argmin(pairwise_rms(agent, demo), axis=1)
    return jax.vmap(lambda column: masked_mean(column, valid), in_axes=1)((agent - demo[nearest]) ** 2)


def measure(algo, state, key: jax.Array) -> dict[str, jax.Array]:
    """Per rollout of one seed's state: return, valid share, fell, the logged distance, its two terms, and the
    per-feature deviations."""
    trajectory = algo.rollouts(state.params, state.normalizer, state.start_keys, key)
    valid = valid_states(trajectory)
    clip = algo.config.state_clip
    demo = normalise_states(algo.demos.state[0], algo.demo_statistics, clip)
    agent = normalise_states(jnp.nan_to_num(trajectory.pipeline_state), algo.demo_statistics, clip)
    forward, backward = jax.vmap(lambda a, v: chamfer_terms(a, demo, v))(agent, valid)
    return {
        "return": jnp.sum(jnp.where(first_episode(trajectory), trajectory.reward, 0.0), axis=-1),
        "valid": jnp.mean(valid, axis=-1),
        "fell": jnp.any(falls(trajectory), axis=-1),
        "distance": algo.fixed_scale_distance(trajectory),
        "forward": forward,
        "backward": backward,
        "per_feature": jax.vmap(lambda a, v: feature_deviations(a, demo, v))(agent, valid),
    }


def feature_groups(demo_states: np.ndarray, names: list[str]) -> list[tuple[str, list[int]]]:
    """(name, feature indices): features equal in every demo state reported as one, ``a=b``."""
    groups: list[tuple[str, list[int]]] = []
    for index, column in enumerate(demo_states.T):
        same = next((g for g in groups if np.array_equal(demo_states[:, g[1][0]], column)), None)
        if same is None:
            groups.append((names[index], [index]))
        else:
            groups[groups.index(same)] = (f"{same[0]}={names[index]}", [*same[1], index])
    return groups


def summarise(rollouts: dict[str, np.ndarray], groups: list[tuple[str, list[int]]], top: int = 4) -> dict:
    distance, fell = rollouts["distance"], rollouts["fell"]
    deviations = rollouts["per_feature"].mean(axis=0)
    shares = np.array([deviations[indices].sum() for _, indices in groups]) / max(float(deviations.sum()), 1e-12)
    order = np.argsort(shares)[::-1][:top]
    return {
        "return": float(rollouts["return"].mean()),
        "valid_fraction": float(rollouts["valid"].mean()),
        "fell_fraction": float(fell.mean()),
        "distance": float(distance.mean()),
        "forward": float(rollouts["forward"].mean()),
        "backward": float(rollouts["backward"].mean()),
        "distance_never_fell": float(distance[~fell].mean()) if (~fell).any() else None,
        "top_features": {groups[i][0]: round(float(shares[i]), 3) for i in order},
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--steps", help="checkpoint steps, comma-separated (default: every one kept)")
    parser.add_argument("--out", type=pathlib.Path, help="write the rows as JSON here too")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.expanduser().absolute()
    cfg = load_run_config(run_dir)
    configure_jax(cfg.hardware)
    algo = build_experiment(cfg).algo
    if algo.demos.state.shape[0] != 1:
        parser.error(f"{run_dir} imitates {algo.demos.state.shape[0]} demos; the terms are taken against one")
    like = jax.jit(jax.vmap(algo.init))(seed_keys(int(cfg.seed), int(cfg.num_seeds)))
    checkpointer = Checkpointer(run_dir / "checkpoints")
    steps = [int(s) for s in args.steps.split(",")] if args.steps else checkpointer.steps()
    demo_states = np.asarray(algo.demos.state[0])
    groups = feature_groups(demo_states, state_feature_names(algo.env, demo_states.shape[-1]))
    measured = jax.jit(jax.vmap(lambda state: measure(algo, state, jax.random.PRNGKey(0))))
    table = []
    for step in steps:
        states = like if step == 0 else checkpointer.restore(like, step=step)[0]
        if step == 0 and hasattr(algo, "warmup"):
            states = jax.jit(jax.vmap(algo.warmup))(states)[0]  # ILD's step 0: after the BC warm-up, as trained
        rollouts = jax.device_get(measured(states))
        for seed in range(int(cfg.num_seeds)):
            row = {"step": step, "seed": seed, **summarise({k: v[seed] for k, v in rollouts.items()}, groups)}
            table.append(row)
            never_fell = row["distance_never_fell"]
            print(
                f"step {step:4d} seed {seed}: return {row['return']:6.1f}  valid {row['valid_fraction']:.2f}  "
                f"fell {row['fell_fraction']:.2f}  distance {row['distance']:.3f} (forward {row['forward']:.3f}, "
                f"backward {row['backward']:.3f}; never fell: {'-' if never_fell is None else f'{never_fell:.3f}'})"
                f"  {row['top_features']}",
                flush=True,
            )
    checkpointer.close()
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")
    return table


if __name__ == "__main__":
    main()
