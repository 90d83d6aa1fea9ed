"""Speed and sanity of the swing-up envs on each Brax physics pipeline.

    python -m benchmarks.bench_envs [--quick] [--out FILE] [--tasks ...] [--backends ...]

For every task x backend, in one run:
- accuracy: max deviation of (q, qd) over 1 s of zero control from a lively start, against MuJoCo's C
  engine (float64) and against the generalized backend; "sane" = finite and |qd| < 1e3 throughout;
- env: forward env steps/s of ``jit(vmap(env.step))`` scanned over the horizon, random actions;
- policy: forward steps/s of ``vmap(diffrl.rollout.unroll)`` with the GRU policy, and of the same
  rollout written inline without diffrl's wrappers; the ratio is the wrappers' overhead;
- grad: (forward + backward) steps/s of ``jax.grad`` of the mean ``episode_return`` over start states
  w.r.t. the policy parameters (``--checkpoint`` adds a row with ``jax.checkpoint`` around env.step).

Compile time (the first call) is reported apart from run time (best of N calls after it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import re
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax.envs.base import State, Wrapper

from diffrl.envs import TASKS, make_env, wrap_angle
from diffrl.gradients import policy_return
from diffrl.networks import make_gru_policy
from diffrl.rollout import start_from, unroll

PIPELINE_BACKENDS = ("generalized", "mjx", "spring", "positional")
DEFAULT_OUT = pathlib.Path(__file__).parent / "results" / "envs.md"
BLOW_UP_SPEED = 1e3  # |qd| beyond this (rad/s or m/s) is not a swing-up any more, it is a blow-up


@dataclasses.dataclass(frozen=True)
class Sizes:
    env_batches: tuple[int, ...]
    horizon: int
    policy_batch: int
    grad_batch: int
    repeats: int
    speed_backends: tuple[str, ...]  # the others get the accuracy check only


FULL = Sizes((64, 512), horizon=500, policy_batch=64, grad_batch=16, repeats=3, speed_backends=PIPELINE_BACKENDS)
# Compiling one backend's programs (the gradient above all) takes ~1 min on 2 cores: quick times only the
# generalized backend and checks the accuracy of all four.
QUICK = Sizes((64,), horizon=100, policy_batch=16, grad_batch=4, repeats=3, speed_backends=("generalized",))


def enable_compilation_cache() -> None:
    """The same persistent cache as the tests and `diffrl train`: recompiles cost ~1 s, not ~15 s."""
    cache = os.environ.get("DIFFRL_JAX_CACHE", str(pathlib.Path.home() / ".cache" / "diffrl" / "jax"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


# --- timing ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    compile_s: float  # the first call: trace + compile (or cache load) + one run
    run_s: float  # best of the timed calls after it
    steps: int  # env steps (control steps, all batch elements) per call

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.run_s


def time_call(fn: Callable, args: tuple, steps: int, repeats: int) -> Timing:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - start)
    return Timing(compile_s, min(runs), steps)


# --- accuracy --------------------------------------------------------------------------------------


def lively_start(task) -> tuple[np.ndarray, np.ndarray]:
    """Hinges 0.3 rad off hanging, at rest: moves at once, and is the same state on every backend."""
    q = np.asarray(task.hanging_q) + 0.3 * np.asarray(task.angle_mask, dtype=float)
    return q, np.zeros_like(q)


def env_trajectory(env, q0, qd0, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(q, qd) after each of ``steps`` zero-control steps from (q0, qd0)."""

    @jax.jit
    def run(q0, qd0):
        pipeline_state = env.pipeline_init(q0, qd0)
        start = State(pipeline_state, env.task.observe(q0, qd0), jnp.zeros(()), jnp.zeros(()), {})

        def step(state, action):
            state = env.step(state, action)
            return state, (state.pipeline_state.q, state.pipeline_state.qd)

        return jax.lax.scan(step, start, jnp.zeros((steps, env.action_size)))[1]

    q, qd = run(jnp.asarray(q0), jnp.asarray(qd0))
    return np.asarray(q, dtype=np.float64), np.asarray(qd, dtype=np.float64)


def mujoco_trajectory(task, q0, qd0, steps: int) -> tuple[np.ndarray, np.ndarray]:
    model = mujoco.MjModel.from_xml_path(str(task.xml_path))
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = q0, qd0
    qs, qds = [], []
    for _ in range(steps):
        for _ in range(task.substeps):
            mujoco.mj_step(model, data)
        qs.append(data.qpos.copy())
        qds.append(data.qvel.copy())
    return np.array(qs), np.array(qds)


def max_deviation(task, traj, ref) -> float:
    """Max over time and joints of |q - q_ref| (hinges wrapped: maximal-coordinate pipelines report
    angles in (-pi, pi]) and |qd - qd_ref|."""
    (q, qd), (q_ref, qd_ref) = traj, ref
    dq = np.where(task.angle_mask, np.asarray(wrap_angle(jnp.asarray(q - q_ref))), q - q_ref)
    return float(np.max(np.abs(np.concatenate([dq, qd - qd_ref], axis=-1))))


# --- throughput ------------------------------------------------------------------------------------


def bench_env_steps(env, batch: int, horizon: int, repeats: int) -> Timing:
    starts = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), batch))
    actions = jax.random.uniform(jax.random.PRNGKey(1), (horizon, batch, env.action_size), minval=-1, maxval=1)
    batched_step = jax.vmap(env.step)

    @jax.jit
    def run(states, actions):
        final, _ = jax.lax.scan(lambda s, a: (batched_step(s, a), None), states, actions)
        return final.obs

    return time_call(run, (starts, actions), batch * horizon, repeats)


def diffrl_rollout(env, policy, params, normalizer, start: State, length: int):
    """(rewards, observations seen) of ``diffrl.rollout.unroll`` from ``start``: one deterministic episode."""
    carry = start_from(start, policy, jax.random.PRNGKey(0))
    _, trajectory = unroll(env, policy, params, normalizer, carry, length)
    return trajectory.reward, trajectory.observation


def inline_rollout(env, policy, params, normalizer, start: State, length: int):
    """The same computation as ``diffrl_rollout`` (steps after a termination masked), written with no
    diffrl wrapper at all."""

    def step(carry, _):
        state, hidden, alive = carry
        obs = (state.obs - normalizer.mean) / normalizer.std
        hidden, action = policy.module.apply(params, hidden, obs)
        next_state = env.step(state, action)
        reward = jnp.where(alive, next_state.reward, 0.0)
        return (next_state, hidden, jnp.logical_and(alive, ~(next_state.done > 0))), (reward, state.obs)

    hidden = jnp.zeros(policy.carry_size)
    _, (rewards, observations) = jax.lax.scan(step, (start, hidden, jnp.ones((), bool)), None, length=length)
    return rewards, observations


def policy_setup(env, batch: int):
    policy = make_gru_policy(env.observation_size, env.action_size)
    params = policy.init(jax.random.PRNGKey(2))
    normalizer = policy.init_normalizer()
    starts = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), batch))
    return policy, params, normalizer, starts


def compiled_ops(compiled) -> list[str]:
    """The instructions of a compiled XLA program, without source-location metadata."""
    text = re.sub(r",? ?metadata=\{[^}]*\}", "", compiled.as_text())
    return [line.strip() for line in text.splitlines() if " = " in line]


def bench_policy_rollouts(env, batch: int, horizon: int, repeats: int) -> tuple[Timing, Timing, bool]:
    """(diffrl's rollout, the inline one, whether XLA compiled both to the same program).

    Same policy, same starts, same outputs; timed calls alternate between the two so that load from
    other processes on a shared machine hits both alike.
    """
    policy, params, normalizer, starts = policy_setup(env, batch)
    args = (params, normalizer, starts)

    def compile_batched(rollout_fn):
        batched = jax.vmap(lambda p, n, s: rollout_fn(env, policy, p, n, s, horizon), in_axes=(None, None, 0))
        start = time.perf_counter()
        compiled = jax.jit(batched).lower(*args).compile()
        return compiled, time.perf_counter() - start

    (ours, ours_compile), (inline, inline_compile) = compile_batched(diffrl_rollout), compile_batched(inline_rollout)
    runs = {ours: [], inline: []}
    for _ in range(repeats + 1):  # the first round warms up
        for fn in runs:
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            runs[fn].append(time.perf_counter() - start)
    steps = batch * horizon
    return (
        Timing(ours_compile, min(runs[ours][1:]), steps),
        Timing(inline_compile, min(runs[inline][1:]), steps),
        compiled_ops(ours) == compiled_ops(inline),
    )


class CheckpointedStep(Wrapper):
    """Recomputes each env step's internals on the backward pass instead of storing them."""

    def step(self, state: State, action: jax.Array) -> State:
        return jax.checkpoint(self.env.step)(state, action)


def bench_gradient(env, batch: int, horizon: int, repeats: int) -> Timing:
    policy, params, normalizer, starts = policy_setup(env, batch)

    def mean_return(params):
        returns = jax.vmap(lambda s: policy_return(env, policy, params, normalizer, s, horizon))(starts)
        return jnp.mean(returns)

    return time_call(jax.jit(jax.grad(mean_return)), (params,), batch * horizon, repeats)


# --- one task x backend ------------------------------------------------------------------------------


@dataclasses.dataclass
class Speed:
    """Throughput of one task x backend; left out of ``--quick`` runs for the slow-compiling backends."""

    env: dict[int, Timing]
    policy: Timing
    inline: Timing
    same_program: bool  # XLA compiled diffrl's rollout and the inline one to identical instructions
    grad: Timing
    grad_checkpoint: Timing | None

    @property
    def wrapper_overhead(self) -> float:
        """Extra run time of diffrl's rollout over the inline one (negative: timing noise)."""
        return self.policy.run_s / self.inline.run_s - 1.0


@dataclasses.dataclass
class Row:
    task: str
    backend: str
    dev_mujoco: float
    dev_generalized: float
    max_speed: float
    speed: Speed | None

    @property
    def sane(self) -> bool:
        return bool(np.isfinite(self.max_speed) and self.max_speed < BLOW_UP_SPEED)


def bench_speed(env, sizes: Sizes, checkpoint: bool) -> Speed:
    policy, inline, same_program = bench_policy_rollouts(env, sizes.policy_batch, sizes.horizon, sizes.repeats)
    grad_checkpoint = None
    if checkpoint:
        grad_checkpoint = bench_gradient(CheckpointedStep(env), sizes.grad_batch, sizes.horizon, sizes.repeats)
    return Speed(
        env={b: bench_env_steps(env, b, sizes.horizon, sizes.repeats) for b in sizes.env_batches},
        policy=policy,
        inline=inline,
        same_program=same_program,
        grad=bench_gradient(env, sizes.grad_batch, sizes.horizon, sizes.repeats),
        grad_checkpoint=grad_checkpoint,
    )


def bench_one(name: str, backend: str, sizes: Sizes, checkpoint: bool, references: dict) -> Row:
    task = TASKS[name]
    env = make_env(name, backend)
    traj = env_trajectory(env, *lively_start(task), steps=round(1.0 / float(env.dt)))
    return Row(
        task=name,
        backend=backend,
        dev_mujoco=max_deviation(task, traj, references["mujoco"]),
        dev_generalized=max_deviation(task, traj, references["generalized"]),
        max_speed=float(np.max(np.abs(traj[1]))),
        speed=bench_speed(env, sizes, checkpoint) if backend in sizes.speed_backends else None,
    )


def reference_trajectories(name: str) -> dict:
    """1 s of zero control from the lively start, by MuJoCo's C engine and by the generalized backend."""
    task = TASKS[name]
    env = make_env(name, "generalized")
    steps = round(1.0 / float(env.dt))
    start = lively_start(task)
    return {
        "mujoco": mujoco_trajectory(task, *start, steps),
        "generalized": env_trajectory(env, *start, steps),
    }


# --- report ------------------------------------------------------------------------------------------------


def _rate(timing: Timing | None) -> str:
    return "—" if timing is None else f"{timing.steps_per_s:,.0f}"


def _speed_cells(speed: Speed | None, sizes: Sizes, checkpoint: bool) -> list[str]:
    n = len(sizes.env_batches) + 7 + checkpoint
    if speed is None:
        return ["—"] * n
    compile_s = (speed.env[sizes.env_batches[0]], speed.policy, speed.inline, speed.grad)
    return [
        *(_rate(speed.env[b]) for b in sizes.env_batches),
        _rate(speed.policy),
        _rate(speed.inline),
        f"{speed.wrapper_overhead:+.1%}",
        "yes" if speed.same_program else "no",
        _rate(speed.grad),
        *([_rate(speed.grad_checkpoint)] if checkpoint else []),
        " / ".join(f"{t.compile_s:.1f}" for t in compile_s),
    ]


def markdown_table(rows: list[Row], sizes: Sizes, checkpoint: bool) -> str:
    columns = [
        "task",
        "backend",
        "max dev vs MuJoCo (1 s)",
        "max dev vs generalized",
        "max abs(qd)",
        "sane",
        *(f"env steps/s (B={b})" for b in sizes.env_batches),
        f"policy rollout steps/s (B={sizes.policy_batch})",
        "inline steps/s",
        "wrapper overhead",
        "same XLA program",
        f"grad steps/s (B={sizes.grad_batch})",
        *(["grad steps/s, checkpointed"] if checkpoint else []),
        "compile s (env / policy / inline / grad)",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [
            row.task,
            row.backend,
            f"{row.dev_mujoco:.1e}",
            f"{row.dev_generalized:.1e}",
            f"{row.max_speed:.3g}",
            "yes" if row.sane else "**no**",
            *_speed_cells(row.speed, sizes, checkpoint),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(args, sizes: Sizes) -> str:
    device = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    return "\n".join(
        [
            f"Command: `{' '.join(['python -m benchmarks.bench_envs', *args.argv])}`",
            f"Device: {device.platform} ({device.device_kind}), {os.cpu_count()} CPU cores ({cpu}); "
            f"jax {jax.__version__}, mujoco {mujoco.__version__}",
            f"Horizon {sizes.horizon} control steps; run time = best of {sizes.repeats} calls after the "
            "first (compile) call; steps/s counts control steps summed over the batch.",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="horizon 100, small batches, speed of the generalized backend only (~3 min on 2 cores)",
    )
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="markdown file for the table")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    parser.add_argument("--backends", nargs="+", choices=PIPELINE_BACKENDS, default=list(PIPELINE_BACKENDS))
    parser.add_argument("--checkpoint", action="store_true", help="also time the gradient with jax.checkpoint")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    enable_compilation_cache()
    sizes = QUICK if args.quick else FULL
    rows = []
    for name in args.tasks:
        references = reference_trajectories(name)
        for backend in args.backends:
            start = time.perf_counter()
            rows.append(bench_one(name, backend, sizes, args.checkpoint, references))
            print(f"# {name} / {backend}: {time.perf_counter() - start:.0f} s", flush=True)
    report = header(args, sizes) + "\n\n" + markdown_table(rows, sizes, args.checkpoint) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
