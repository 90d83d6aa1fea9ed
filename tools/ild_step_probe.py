"""Does one ILD update lower ILD's own loss? A diagnostic for issue 23.

After the behaviour-cloning warm-up, ILD's gradient g (through the simulator, with the run's truncation and
per-step clip) is taken once; the loss is then measured again after steps along it, with common random
numbers (the same N start states and the same action noise), so a small change is a real one:
- Adam's first step, lr * g / |g| on every entry (a fresh Adam's first update), at several learning rates;
- the normalised gradient at small step lengths, beside the first-order prediction -|step| * |g|.
If the loss rises for every step, g is not a descent direction of the loss it was taken from.

    python tools/ild_step_probe.py env=walker2d [hardware.enable_x64=true] [any `diffrl train` override]
"""

from __future__ import annotations

import functools
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
from hydra import compose, initialize_config_dir

import diffrl.algos.ild as ild_module
from diffrl.algos.ild import fold_valid_states, load_imitation_demos, squash, valid_states
from diffrl.run import build_experiment

CONF_DIR = pathlib.Path(__file__).resolve().parents[1] / "conf"
ADAM_LEARNING_RATES = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
GRADIENT_STEPS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["algo=ild", "logger.wandb.enabled=false", *overrides])
    jax.config.update("jax_enable_x64", bool(cfg.hardware.enable_x64))  # before anything is traced
    if cfg.hardware.enable_x64:
        # float64 resets draw other random numbers than the float32 ones the demos were recorded with: their start
        # state cannot be rebuilt from its key, which the probe does not need (it starts from random resets).
        ild_module.load_imitation_demos = functools.partial(load_imitation_demos, check_start_state=False)
    exp = build_experiment(cfg)
    ild, config = exp.algo, exp.algo.config
    started = time.time()
    state, _ = jax.jit(ild.warmup)(ild.init(jax.random.PRNGKey(int(cfg.seed))))
    rollout_key = jax.random.split(state.key)[1]  # the key train_step would roll out with

    def batch(flat):
        trajectory = ild.rollouts(flat, state.normalizer, state.start_keys, rollout_key)
        return trajectory, trajectory.pipeline_state, valid_states(trajectory)

    _, states, valid = jax.jit(batch)(state.params)
    statistics = fold_valid_states(state.statistics, states, valid)  # as train_step's, then held fixed

    def loss(flat):
        trajectory, states, valid = batch(flat)
        value = squash(ild.distances(states, valid, statistics, config.loss), config.squash)
        measured = (jnp.mean(ild.fixed_scale_distance(trajectory)), jnp.mean(jnp.sum(trajectory.reward, -1)))
        return value, measured

    measure = jax.jit(loss)
    (at_grad, _), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(state.params)
    # The baseline comes from the same compiled function as every probe: two compilations of a 128-step rollout
    # through contact can differ by more than a small step's effect.
    loss0, (distance0, return0) = measure(state.params)
    norm = jnp.linalg.norm(grad)
    print(
        f"{cfg.env.name} ({'float64' if cfg.hardware.enable_x64 else 'float32'}), after {config.bc_steps} BC steps: "
        f"loss {float(loss0):.5f}, fixed-scale distance {float(distance0):.4f}, return {float(return0):.1f}; "
        f"|g| {float(norm):.4g}, |theta| {float(jnp.linalg.norm(state.params)):.3g} ({time.time() - started:.0f} s); "
        f"the loss as the gradient's program computed it differs by {float(at_grad - loss0):+.6f}"
    )

    def report(label: str, flat, predicted: float | None = None) -> None:
        value, (distance, ret) = measure(flat)
        prediction = "" if predicted is None else f" (first order: {predicted:+.6f})"
        print(
            f"  {label}: loss {float(value - loss0):+.6f}{prediction}, distance {float(distance - distance0):+.4f}, "
            f"return {float(ret - return0):+.1f}",
            flush=True,
        )

    sign_step = grad / (jnp.abs(grad) + 1e-8)
    for lr in ADAM_LEARNING_RATES:
        report(f"Adam's first step, lr {lr:.0e}", state.params - lr * sign_step)
    direction = grad / norm
    for length in GRADIENT_STEPS:
        report(f"gradient step of length {length:.0e}", state.params - length * direction, -length * float(norm))


if __name__ == "__main__":
    main(sys.argv[1:])
