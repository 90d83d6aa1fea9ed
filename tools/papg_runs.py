#!/usr/bin/env python
"""Every APG run of one PAPG seed, iteration by iteration: why a seed ends where it does.

    python tools/papg_runs.py --seed-index 5 experiment=ceapg_table2 budget=quick env=double_pendulum_swingup

The trailing arguments are `diffrl train` overrides (``algo=papg`` is added). It trains seed ``--seed-index`` of
seed family ``seed`` alone (the same PRNG key as in the vmapped sweep job) and prints, for every run, the return
before training (a deterministic episode from each of 4 fixed starts, averaged), the largest cart excursion |x|
(observation 0), its score after each iteration (mean return of its last ``score_window`` Adam steps, the number
PAPG ranks runs by) and the same diagnostics at the end. A seed trained alone is not bit-for-bit the seed of the
vmapped job (vmapped rollouts sum in another order; a chaotic swing-up amplifies it), so compare the pattern, not
the digits.
"""

from __future__ import annotations

import argparse
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from diffrl.experiment import seed_keys  # noqa: E402
from diffrl.rollout import episode  # noqa: E402
from diffrl.run import build_experiment  # noqa: E402

CONF_DIR = pathlib.Path(__file__).resolve().parents[1] / "conf"
DIAGNOSTIC_STARTS = 4


def run_diagnostics(exp, starts):
    """Per run: mean return over ``starts`` and mean over them of the largest |observation 0| (the cart's x)."""
    core = exp.algo.core

    def one_run(flat, normalizer):
        play = lambda start: episode(exp.env, exp.policy, core.unravel(flat), normalizer, start, core.episode_length)
        trajectory = jax.vmap(play)(starts)
        excursion = jnp.max(jnp.abs(trajectory.observation[..., 0]), axis=-1)
        return jnp.mean(jnp.sum(trajectory.reward, axis=-1)), jnp.mean(excursion)

    return jax.jit(jax.vmap(one_run, in_axes=(0, None)))


def rounded(values, digits: int = 0) -> list:
    return np.round(np.asarray(values), digits).tolist()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-index", type=int, required=True, help="which of the job's num_seeds seeds")
    parser.add_argument("overrides", nargs="*", help="diffrl train overrides")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["algo=papg", *args.overrides])
    if not 0 <= args.seed_index < int(cfg.num_seeds):
        parser.error(f"--seed-index must be in [0, {int(cfg.num_seeds)}) (num_seeds={int(cfg.num_seeds)})")
    exp = build_experiment(cfg)
    algo = exp.algo
    state = jax.jit(algo.init)(seed_keys(int(cfg.seed), int(cfg.num_seeds))[args.seed_index])
    diagnose = run_diagnostics(exp, algo.core.starts(jax.random.PRNGKey(0), DIAGNOSTIC_STARTS))
    returns, excursions = diagnose(state.params, state.normalizer)
    print("before training, return per run:", rounded(returns))
    print("before training, max |obs[0]| (cart x) per run:", rounded(excursions, 1))
    train_step = jax.jit(algo.train_step)
    for iteration in range(1, exp.iterations + 1):
        state, metrics = train_step(state)
        print(f"iteration {iteration}: best {float(metrics['return']):.0f}, scores per run:", rounded(state.scores))
    returns, excursions = diagnose(state.params, state.normalizer)
    print("after training, return per run:", rounded(returns))
    print("after training, max |obs[0]| (cart x) per run:", rounded(excursions, 1))
    print("skipped non-finite updates in a row, per run:", np.asarray(state.opt_state.notfinite_count).tolist())


if __name__ == "__main__":
    main()
