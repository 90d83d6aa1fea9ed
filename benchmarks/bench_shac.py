"""SHAC's speed on SHAC's tasks: one training iteration (a 32-step window on every env, forward and backward
through the physics, plus the critic's 16 x 4 minibatch updates), and the projected time of the paper's budget.

    python -m benchmarks.bench_shac [--quick] [--tasks ...] [--out FILE]

Each task runs with its own configuration exactly as ``diffrl train algo=shac env=<task> num_seeds=1`` builds
it (``conf/tuned/<task>_shac.yaml``: the paper's env count, network sizes and learning rates) on the task's
default backend, in float32. Reported per task:

- **iteration s**: one jitted ``train_step``, best of ``--repeats`` calls after a warm-up call;
- **steps/s**: env steps of one iteration (envs x 32) per second;
- **compile s**: lowering + XLA compile of the iteration (a load from the persistent cache when warm);
- **paper budget**: the paper's epochs x iteration s, for one seed (compile excluded). The paper: 4.1M
  steps on Ant in ~40 min on a GPU.

``--quick`` measures shac_cartpole and shac_hopper (~4 min cold on 2 cores); the default measures all five.

``--breakdown`` says where one iteration's time goes instead (each part jitted on its own, best of ``--repeats``):
the actor's window forward, the same window forward and backward, the critic's fit, the whole iteration; and,
for an MJX task, one physics substep of every env split into MuJoCo's phases (kinematics and mass matrix,
collision, constraint rows, velocity/actuation/smooth acceleration, the constraint solver, the Euler step), each
forward and forward + backward, each phase on its own from the data the phases before it made (each row
includes reading and summing the data: the first row, with no phase, is that alone).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from mujoco import mjx  # noqa: E402
from mujoco.mjx._src import sensor, smooth  # noqa: E402  (the phases mjx.step runs, for --breakdown)

from benchmarks.timing import time_compiled  # noqa: E402
from diffrl.algos.returns import td_lambda_targets  # noqa: E402
from diffrl.experiment import configure_jax, machine_description  # noqa: E402
from diffrl.paper_results import SHAC_TASKS  # noqa: E402
from diffrl.run import build_experiment  # noqa: E402
from diffrl.tables import format_duration  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "shac.md"
QUICK_TASKS = ("shac_cartpole", "shac_hopper")


def compose_config(task: str, budget: str, extra: tuple[str, ...] = ()):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                f"env={task}",
                "algo=shac",
                f"budget={budget}",
                "num_seeds=1",
                "logger.wandb.mode=disabled",
                *extra,
            ],
        )


def measure(task: str, repeats: int, extra: tuple[str, ...] = ()) -> dict:
    cfg = compose_config(task, "paper", extra)
    configure_jax(cfg.hardware)
    exp = build_experiment(cfg)
    state = jax.jit(exp.algo.init)(jax.random.PRNGKey(0))
    step = jax.jit(exp.algo.train_step)
    start = time.perf_counter()
    compiled = step.lower(state).compile()
    compile_s = time.perf_counter() - start
    state, _ = jax.block_until_ready(compiled(state))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(compiled(state))
        times.append(time.perf_counter() - start)
    iteration_s = min(times)
    steps = exp.algo.env_steps_per_iteration
    return {
        "task": task,
        "backend": cfg.env.backend,
        "envs": int(cfg.algo.num_envs),
        "iteration_s": iteration_s,
        "steps_per_s": steps / iteration_s,
        "compile_s": compile_s,
        "paper_iterations": exp.iterations,
        "paper_s": exp.iterations * iteration_s,
        "finite": bool(jax.numpy.isfinite(metrics["grad_norm"])),
    }


def best_time(fn, args, repeats: int) -> float:
    """Seconds of one call of the jitted ``fn``, best of ``repeats`` after a first (warm-up) call."""
    return time_compiled(lambda: jax.jit(fn).lower(*args), args, repeats + 1)[1]


def float_sum(tree) -> jax.Array:
    """A scalar that every floating-point output of ``tree`` feeds (the backward pass's seed)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return sum(jnp.sum(jnp.where(jnp.isfinite(x), x, 0.0)) for x in leaves)


def mjx_phases():
    """``mjx.step``'s phases in its order (``mujoco/mjx/_src/forward.py``), each a function of (model, data)."""

    def position(m, d):
        for f in (smooth.kinematics, smooth.com_pos, smooth.camlight, smooth.tendon, smooth.crb):
            d = f(m, d)
        return smooth.factor_m(m, smooth.tendon_armature(m, d))

    def velocity_actuation(m, d):
        d = mjx.transmission(m, d)
        d = sensor.sensor_vel(m, mjx.fwd_velocity(m, sensor.sensor_pos(m, d)))
        return mjx.fwd_acceleration(m, mjx.fwd_actuation(m, d))

    return (
        ("kinematics, mass matrix", position),
        ("collision", mjx.collision),
        ("constraint rows", mjx.make_constraint),
        ("velocity, actuation, smooth acceleration", velocity_actuation),
        ("constraint solver", lambda m, d: sensor.sensor_acc(m, mjx.solve(m, d))),
        ("Euler step", mjx.euler),
    )


def physics_breakdown(env, data, repeats: int) -> list[dict]:
    """Each phase of one substep of every env (``data`` [envs]), run on its own from the data the phases before
    it made: forward seconds and forward + backward seconds (the gradient of the sum of all its floating-point
    outputs with respect to all its inputs), then the whole ``mjx.step`` the same way. The first row is the
    same with no phase: the cost of reading and summing the data, which every row includes. A substep takes
    milliseconds: each timing is the best of at least 30 calls."""
    repeats = max(repeats, 30)

    def seconds(phase, d) -> dict:
        apply = jax.vmap(lambda d: phase(env.sys, d))
        loss = lambda d: float_sum(apply(d))
        return {
            "forward_s": best_time(loss, (d,), repeats),
            "backward_s": best_time(jax.grad(loss, allow_int=True), (d,), repeats),
        }

    rows, d = [{"phase": "(no phase: reading and summing the data)", **seconds(lambda m, d: d, data)}], data
    for name, phase in mjx_phases():
        rows.append({"phase": name, **seconds(phase, d)})
        d = jax.jit(jax.vmap(lambda d, phase=phase: phase(env.sys, d)))(d)
    rows.append({"phase": "mjx.step (all phases)", **seconds(mjx.step, data)})
    return rows


def breakdown(task: str, repeats: int, extra: tuple[str, ...] = ()) -> dict:
    """Where one paper-settings iteration's time goes on ``task`` (1 seed, float32)."""
    cfg = compose_config(task, "paper", extra)
    configure_jax(cfg.hardware)
    exp = build_experiment(cfg)
    algo, c = exp.algo, exp.algo.config
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    window = lambda actor: algo.window(actor, state.target_critic, state.normalizer, state.envs)
    _, (_, trajectory, next_values) = jax.jit(window)(state.actor)
    observations = algo.policy.normalize(trajectory.observation, state.normalizer)
    flat = lambda x: x.reshape(-1, *x.shape[2:])

    def critic_fit(critic, opt, key):
        targets = td_lambda_targets(trajectory.reward, next_values, trajectory.done, c.gamma, c.lam)
        return algo.fit_critic(critic, opt, flat(observations), flat(targets), c.critic_learning_rate, key)

    parts = {
        "iteration (train_step)": best_time(algo.train_step, (state,), repeats),
        "actor window, forward": best_time(lambda a: window(a)[0], (state.actor,), repeats),
        "actor window, forward + backward": best_time(jax.grad(lambda a: window(a)[0]), (state.actor,), repeats),
    }
    if c.critic:
        parts["critic fit (TD(lambda) targets, 16 x 4 minibatches)"] = best_time(
            critic_fit, (state.critic, state.critic_opt, jax.random.PRNGKey(1)), repeats
        )
    physics = []
    if cfg.env.backend == "mjx":
        physics = physics_breakdown(algo.env, state.envs.state.pipeline_state, repeats)
    substeps = int(getattr(algo.env, "_n_frames", 1))
    return {
        "task": task,
        "overrides": list(extra),
        "envs": c.num_envs,
        "horizon": c.horizon,
        "substeps": substeps,
        "parts": parts,
        "physics": physics,
    }


def breakdown_markdown(result: dict) -> str:
    parts, physics = result["parts"], result["physics"]
    total = parts["iteration (train_step)"]
    n = result["horizon"] * result["substeps"]
    lines = [
        f"Where one SHAC iteration goes on {result['task']} ({machine_description()}; paper settings, 1 seed, "
        f"float32: {result['envs']} envs x {result['horizon']} steps x {result['substeps']} substeps; "
        f"`python -m benchmarks.bench_shac --breakdown --tasks {result['task']}"
        + (f" --override {' '.join(result['overrides'])}" if result["overrides"] else "")
        + "`).",
        "",
        "| part | s | share of the iteration |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {s:.3f} | {s / total:.0%} |" for name, s in parts.items()]
    if physics:
        lines += [
            "",
            f"One physics substep of all {result['envs']} envs, by phase, each run on its own and including the "
            f"first row's reading and summing of the data (a window runs {n} substeps; the last columns: the "
            f"row's forward + backward x {n}, and its share of the iteration):",
            "",
            "| phase | forward ms | forward + backward ms | x substeps per window, s | share of the iteration |",
            "|---|---|---|---|---|",
        ]
        for r in physics:
            window_s = r["backward_s"] * n
            lines.append(
                f"| {r['phase']} | {1e3 * r['forward_s']:.2f} | {1e3 * r['backward_s']:.2f} | {window_s:.2f} | "
                f"{window_s / total:.0%} |"
            )
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    lines = [
        f"SHAC iteration speed ({machine_description()}; float32, 1 seed, `python -m benchmarks.bench_shac`).",
        "",
        "| task | backend | envs | iteration s | steps/s | compile s | paper budget (1 seed) | finite grad |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        budget = f"{r['paper_iterations']} it = {format_duration(r['paper_s'])}"
        lines.append(
            f"| {r['task']} | {r['backend']} | {r['envs']} | {r['iteration_s']:.3f} | {r['steps_per_s']:,.0f} | "
            f"{r['compile_s']:.0f} | {budget} | {r['finite']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_TASKS)}")
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--breakdown", action="store_true", help="where one iteration's time goes (see above)")
    parser.add_argument(
        "--override", nargs="*", default=[], help="more `diffrl train` overrides, e.g. algo.num_envs=128"
    )
    args = parser.parse_args(argv)
    tasks = args.tasks or (QUICK_TASKS if args.quick else SHAC_TASKS)
    if args.breakdown:
        text = "\n".join(breakdown_markdown(breakdown(task, args.repeats, tuple(args.override))) for task in tasks)
        out = args.out or DEFAULT_OUT.with_name("shac_breakdown.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(text)
        print(f"written: {out}")
        return
    args.out = args.out or DEFAULT_OUT
    rows = []
    for task in tasks:
        rows.append(measure(task, args.repeats, tuple(args.override)))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows))
    print(markdown(rows))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
