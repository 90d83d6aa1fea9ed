"""Are my gradients any good on this task? The computations behind ``diffrl gradients`` (no Hydra here).

For one task, one backend and one deterministic policy (``episode_return``: the undiscounted return of a
rollout from a start state, steps after a termination masked), this module measures

1. **speed**: forward and forward+backward steps/s of the mean return over ``num_envs`` start states and
   ``horizon`` steps, and the compile time of each program (``speed``);
2. **the norm of the gradient vs horizon**: ``||grad_theta mean_s J_h(theta; s)||`` for every horizon h
   of a list, in each precision (``gradient_curve``). One compiled program gives every horizon: the
   rollout always runs the longest horizon, but the env is wrapped so that steps past h are skipped
   (``lax.cond``, nearly free) and contribute neither reward nor gradient (``StopAfter``). The gradient of
   each start state is kept, so the spread across start states comes for free;
3. **central finite differences** on a short horizon in float64: directional derivatives along random
   unit directions, analytic (from 2.) vs ``(J(theta + eps u) - J(theta - eps u)) / 2 eps``
   (``finite_difference_check``);
4. **first- vs zeroth-order estimates** (Suh et al., ICML 2022, "Do Differentiable Simulators Give
   Better Policy Gradients?"): per start state s_i, the first-order sample ``grad J(theta; s_i)`` beside
   the Gaussian-smoothing sample ``(J(theta + sigma eps_i; s_i) - J(theta; s_i)) eps_i / sigma``, with as
   many samples of each; per estimator the norm of the mean, the total variance (trace of the sample
   covariance) and the cosine between the two means (``estimator_comparison``).

JAX's float64 mode is a trace-time switch: ``precision("float64")`` (``jax.enable_x64``) must be active
while the env, the parameters and the start states are built *and* while the programs run, so
``gradient_report`` builds everything through a ``make()`` callback inside it. Brax keeps a few of its
own constants in float32 (``Precision.float64_leaves`` says how many are float64).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env, State, Wrapper
from jax.flatten_util import ravel_pytree

from diffrl.networks.base import Policy
from diffrl.rollout import episode_return

PRECISIONS = {"float32": False, "float64": True}  # name -> jax_enable_x64
FLOATS = {"float32": jnp.float32, "float64": jnp.float64}
STEP_KEY = "gradients_step"  # the step counter StopAfter keeps in State.info


@contextlib.contextmanager
def precision(name: str) -> Iterator[None]:
    """Arrays created and programs traced inside are float32 or float64 (whatever the global setting)."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; valid choices: {', '.join(PRECISIONS)}")
    with jax.enable_x64(PRECISIONS[name]):
        yield


def policy_return(env: Env, policy: Policy, params, normalizer, start: State, length: int) -> jax.Array:
    """The undiscounted return of at most ``length`` steps (``diffrl.rollout.episode_return``)."""
    return episode_return(env, policy, params, normalizer, start, length)


def horizons_up_to(max_horizon: int) -> list[int]:
    """1, 2, 4, ... up to ``max_horizon``, and ``max_horizon`` itself."""
    out = [2**k for k in range(int(math.log2(max_horizon)) + 1)] if max_horizon >= 1 else []
    return out if out and out[-1] == max_horizon else [*out, max_horizon]


# --- speed -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    compile_s: float  # lowering + XLA compile (or a load from the persistent cache)
    run_s: float  # best of the timed calls after a warm-up call
    steps: int  # control steps per call, summed over the batch

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.run_s


def compile_program(fn: Callable, *args) -> tuple[Callable, float]:
    """``jit(fn)`` compiled for ``args``, and the seconds it took."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def time_program(fn: Callable, args: tuple, steps: int, repeats: int) -> tuple[Timing, Any]:
    """(compile time and best run time of ``jit(fn)(*args)``, its output)."""
    compiled, compile_s = compile_program(fn, *args)
    out = jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - start)
    return Timing(compile_s, min(runs), steps), out


def reset_batch(env: Env, key: jax.Array, n: int) -> State:
    return jax.jit(jax.vmap(env.reset))(jax.random.split(key, n))


def same_starts(native: State, reference: State | None) -> State:
    """``reference``'s values in ``native``'s dtypes: the same start states in every precision (a reset
    draws different noise in float32 and float64). ``native`` when there is no reference or it does not fit."""
    if reference is None or jax.tree.structure(native) != jax.tree.structure(reference):
        return native
    if any(np.shape(n) != np.shape(r) for n, r in zip(jax.tree.leaves(native), jax.tree.leaves(reference))):
        return native
    return jax.tree.map(lambda n, r: jnp.asarray(r, dtype=n.dtype), native, reference)


def speed(env: Env, policy: Policy, params, normalizer, starts: State, horizon: int, repeats: int) -> dict[str, Any]:
    """Forward and forward+backward of the mean ``horizon``-step return over the batch ``starts``.

    ``fwd`` / ``grad``: ``Timing``; ``return``: the mean return; ``grad_norm``: the global norm of its
    gradient w.r.t. the policy parameters; ``grad_finite``: every entry of the gradient is finite.
    """
    batch = int(jax.tree.leaves(starts)[0].shape[0])

    def mean_return(params):
        returns = jax.vmap(lambda s: policy_return(env, policy, params, normalizer, s, horizon))(starts)
        return jnp.mean(returns)

    fwd, value = time_program(mean_return, (params,), batch * horizon, repeats)
    grad, (_, gradient) = time_program(jax.value_and_grad(mean_return), (params,), batch * horizon, repeats)
    flat = np.asarray(ravel_pytree(gradient)[0], dtype=np.float64)
    return {
        "fwd": fwd,
        "grad": grad,
        "return": float(value),
        "grad_norm": float(np.linalg.norm(flat)),
        "grad_finite": bool(np.all(np.isfinite(flat))),
    }


# --- gradient vs horizon -----------------------------------------------------------------------------


class StopAfter(Wrapper):
    """Runs the env for ``horizon`` steps, then holds its state with zero reward.

    The held steps go through ``lax.cond`` on a step counter that is the same for every start state
    (``State.info[STEP_KEY]``, unbatched under ``vmap``), so they cost next to nothing forward and
    backward, and nothing computed after ``horizon`` (a blow-up, a NaN) can reach the gradient of the
    return up to ``horizon`` — unlike masking the rewards of one long rollout, where ``0 * NaN`` would.
    ``horizon`` may be traced: one compiled program serves every horizon.
    """

    def __init__(self, env: Env, horizon: jax.Array):
        super().__init__(env)
        self.horizon = horizon

    def step(self, state: State, action: jax.Array) -> State:
        t = state.info[STEP_KEY]

        def live(state: State) -> State:
            inner = self.env.step(state.replace(info=_without_counter(state.info)), action)
            return inner.replace(info={**inner.info, STEP_KEY: t + 1})

        def held(state: State) -> State:
            return state.replace(reward=jnp.zeros_like(state.reward), info={**state.info, STEP_KEY: t + 1})

        return jax.lax.cond(t < self.horizon, live, held, state)


def _without_counter(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != STEP_KEY}


def with_counter(starts: State) -> tuple[State, State]:
    """(``starts`` with a shared step counter, the ``vmap`` in_axes that keep the counter unbatched)."""
    counted = starts.replace(info={**starts.info, STEP_KEY: jnp.zeros((), jnp.int32)})
    axes = jax.tree.map(lambda _: 0, starts)
    return counted, axes.replace(info={**axes.info, STEP_KEY: None})


def gradient_curve(
    env: Env,
    policy: Policy,
    flat_params: jax.Array,
    unravel: Callable,
    normalizer,
    starts: State,
    horizons: Sequence[int],
) -> tuple[dict[str, np.ndarray], float]:
    """Per horizon and start state, the return and its gradient w.r.t. the (flattened) policy parameters.

    Returns ({"returns": [K, N], "grads": [K, N, P]} as numpy arrays, compile seconds).
    """
    counted, axes = with_counter(starts)
    longest = int(max(horizons))

    def per_start(flat, horizon):
        stopped = StopAfter(env, horizon)

        def ret(flat, start):
            return policy_return(stopped, policy, unravel(flat), normalizer, start, longest)

        return jax.vmap(jax.value_and_grad(ret), in_axes=(None, axes))(flat, counted)

    def program(flat, horizons):
        return jax.lax.map(lambda h: per_start(flat, h), horizons)

    horizon_array = jnp.asarray(horizons, jnp.int32)
    compiled, compile_s = compile_program(program, flat_params, horizon_array)
    returns, grads = jax.block_until_ready(compiled(flat_params, horizon_array))
    return {"returns": np.asarray(returns), "grads": np.asarray(grads)}, compile_s


def returns_of(
    env: Env, policy: Policy, unravel: Callable, normalizer, horizon: int, flat_params: jax.Array, starts: State
) -> tuple[np.ndarray, float]:
    """Return of each (parameter vector, start state) pair, ``flat_params`` [M, P] and ``starts`` [M];
    (returns [M], compile seconds)."""

    def program(flat_params, starts):
        ret = lambda flat, start: policy_return(env, policy, unravel(flat), normalizer, start, horizon)
        return jax.vmap(ret)(flat_params, starts)

    compiled, compile_s = compile_program(program, flat_params, starts)
    return np.asarray(compiled(flat_params, starts)), compile_s


# --- finite differences and estimator statistics -----------------------------------------------------------


def unit_directions(key: jax.Array, count: int, size: int, dtype) -> jax.Array:
    u = jax.random.normal(key, (count, size), dtype)
    return u / jnp.linalg.norm(u, axis=1, keepdims=True)


def finite_difference_check(
    env: Env,
    policy: Policy,
    flat_params: jax.Array,
    unravel: Callable,
    normalizer,
    starts: State,
    gradient: np.ndarray,
    *,
    horizon: int,
    directions: int,
    epsilon: float,
    tolerance: float,
    key: jax.Array,
) -> dict[str, Any]:
    """The analytic directional derivative ``gradient . u`` of the mean ``horizon``-step return over
    ``starts`` against its central difference, along ``directions`` random unit directions ``u``.

    Relative error per direction: ``|analytic - fd| / max(|analytic|, |fd|, 1e-8 ||gradient||)``; the
    check passes when the largest is below ``tolerance``.
    """
    n = int(jax.tree.leaves(starts)[0].shape[0])
    u = unit_directions(key, directions, flat_params.shape[0], flat_params.dtype)
    perturbed = jnp.concatenate([flat_params[None], flat_params + epsilon * u, flat_params - epsilon * u])
    m = perturbed.shape[0]
    pairs_params = jnp.repeat(perturbed, n, axis=0)  # [m * n, P]
    pairs_starts = jax.tree.map(lambda x: jnp.tile(x, (m,) + (1,) * (x.ndim - 1)), starts)
    returns, compile_s = returns_of(env, policy, unravel, normalizer, horizon, pairs_params, pairs_starts)
    means = returns.astype(np.float64).reshape(m, n).mean(axis=1)
    fd = (means[1 : 1 + directions] - means[1 + directions :]) / (2 * epsilon)
    analytic = np.asarray(u, dtype=np.float64) @ gradient.astype(np.float64)
    floor = 1e-8 * float(np.linalg.norm(gradient))
    rel = np.abs(analytic - fd) / np.maximum(np.maximum(np.abs(analytic), np.abs(fd)), max(floor, 1e-300))
    max_rel = float(np.max(rel)) if np.all(np.isfinite(rel)) else float("nan")
    return {
        "horizon": horizon,
        "epsilon": epsilon,
        "tolerance": tolerance,
        "return": float(means[0]),
        "analytic": analytic.tolist(),
        "finite_difference": fd.tolist(),
        "relative_error": rel.tolist(),
        "max_relative_error": max_rel,
        "passed": bool(np.isfinite(max_rel) and max_rel < tolerance),
        "compile_s": compile_s,
    }


def estimator_stats(samples: np.ndarray) -> dict[str, Any]:
    """Per-sample gradient estimates [N, P] -> norm of their mean, total variance (trace of the sample
    covariance, ddof=1), and the standard error of the mean relative to its norm."""
    samples = np.asarray(samples, dtype=np.float64)
    finite = np.all(np.isfinite(samples), axis=1)
    mean = samples.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    total_variance = float(samples.var(axis=0, ddof=1).sum()) if len(samples) > 1 else float("nan")
    return {
        "samples": int(len(samples)),
        "finite_samples": int(finite.sum()),
        "mean_norm": norm,
        "total_variance": total_variance,
        "relative_standard_error": math.sqrt(total_variance / len(samples)) / norm if norm > 0 else float("nan"),
        "mean": mean,
    }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 and np.isfinite(denom) else float("nan")


def estimator_comparison(
    env: Env,
    policy: Policy,
    flat_params: jax.Array,
    unravel: Callable,
    normalizer,
    starts: State,
    first_order: np.ndarray,
    *,
    horizon: int,
    sigma: float,
    key: jax.Array,
) -> dict[str, Any]:
    """First-order samples ``first_order`` [N, P] (one per start state) beside as many zeroth-order ones,
    ``(J(theta + sigma eps_i; s_i) - J(theta; s_i)) eps_i / sigma`` with ``eps_i ~ N(0, I)``."""
    n = first_order.shape[0]
    eps = jax.random.normal(key, (n, flat_params.shape[0]), flat_params.dtype)
    params = jnp.concatenate([jnp.broadcast_to(flat_params, eps.shape), flat_params + sigma * eps])
    both = jax.tree.map(lambda x: jnp.concatenate([x, x]), starts)
    returns, compile_s = returns_of(env, policy, unravel, normalizer, horizon, params, both)
    returns = returns.astype(np.float64)
    zeroth_order = ((returns[n:] - returns[:n]) / sigma)[:, None] * np.asarray(eps, dtype=np.float64)
    fo, zo = estimator_stats(first_order), estimator_stats(zeroth_order)
    return {
        "horizon": horizon,
        "sigma": sigma,
        "first_order": {k: v for k, v in fo.items() if k != "mean"},
        "zeroth_order": {k: v for k, v in zo.items() if k != "mean"},
        "cosine_of_means": cosine(fo["mean"], zo["mean"]),
        "compile_s": compile_s,
    }


# --- the whole report --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    """What ``gradient_report`` measures (``conf/gradients.yaml`` documents each)."""

    num_envs: int = 64
    horizon: int = 32
    repeats: int = 3
    precisions: tuple[str, ...] = ("float32", "float64")
    num_starts: int = 32
    horizons: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    fd_horizon: int = 16
    fd_directions: int = 4
    fd_epsilon: float = 1e-6
    fd_tolerance: float = 1e-5
    fd_precision: str = "float64"
    variance_horizon: int = 32
    variance_sigma: float = 1e-2
    variance_precision: str = "float32"
    seed: int = 0

    def __post_init__(self):
        for name in (*self.precisions, self.fd_precision, self.variance_precision):
            if name not in PRECISIONS:
                raise ValueError(f"unknown precision {name!r}; valid choices: {', '.join(PRECISIONS)}")
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"horizons must be >= 1, got {list(self.horizons)}")
        if min(self.num_envs, self.horizon, self.num_starts, self.fd_directions, self.fd_horizon) < 1:
            raise ValueError("num_envs, horizon, num_starts, fd_directions and fd_horizon must be >= 1")
        if self.num_starts < 2:
            raise ValueError("num_starts must be >= 2 (the variance needs two samples)")


def float64_leaves(env: Env) -> dict[str, int]:
    """How many of the env's floating-point constants (``env.sys``) are float64 and how many in all."""
    sys = getattr(env, "sys", None)
    leaves = [x for x in jax.tree.leaves(sys) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
    return {"float64": sum(x.dtype == jnp.float64 for x in leaves), "total": len(leaves)}


def gradient_report(
    make: Callable[[], tuple[Env, Policy]], settings: ReportSettings, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every number of the report, as plain Python/numpy values. ``make()`` builds the env and the policy;
    it is called once per precision, inside that precision's context."""
    s = settings
    key = jax.random.PRNGKey(s.seed)
    params_key, starts_key, timing_key, fd_key, zo_key = jax.random.split(key, 5)
    curve_horizons = sorted(set(s.horizons) | {s.fd_horizon, s.variance_horizon})
    out: dict[str, Any] = {"curve": {}, "dtypes": {}, "compile_s": {}}
    precisions = list(dict.fromkeys([*s.precisions, s.fd_precision, s.variance_precision]))
    reference_starts = None  # drawn in the first precision, reused (cast) in the others
    mean_grads_by_precision = {}
    for name in precisions:
        with precision(name):
            start = time.perf_counter()
            env, policy = make()
            # flax creates float32 parameters whatever the mode: cast them to this precision.
            params = jax.tree.map(lambda x, dtype=FLOATS[name]: jnp.asarray(x, dtype), policy.init(params_key))
            normalizer = policy.init_normalizer()
            flat, unravel = ravel_pytree(params)
            out["dtypes"][name] = {"params": str(flat.dtype), "env_constants": float64_leaves(env)}
            if "speed" not in out:  # in the first precision (the training one, float32 by default)
                log(f"[{name}] timing {s.num_envs} envs x {s.horizon} steps (compiles forward and forward+backward)")
                timed = speed(
                    env, policy, params, normalizer, reset_batch(env, timing_key, s.num_envs), s.horizon, s.repeats
                )
                out["speed"] = {
                    "precision": name,
                    "num_envs": s.num_envs,
                    "horizon": s.horizon,
                    **{
                        k: dataclasses.asdict(v) | {"steps_per_s": v.steps_per_s}
                        for k, v in timed.items()
                        if k in ("fwd", "grad")
                    },
                    **{k: v for k, v in timed.items() if k not in ("fwd", "grad")},
                }
                fwd, grad = timed["fwd"], timed["grad"]
                log(
                    f"[{name}] forward {fwd.steps_per_s:,.0f} steps/s (compile {fwd.compile_s:.1f} s), "
                    f"forward+backward {grad.steps_per_s:,.0f} steps/s (compile {grad.compile_s:.1f} s)"
                )
            starts = same_starts(reset_batch(env, starts_key, s.num_starts), reference_starts)
            if reference_starts is None:
                reference_starts = jax.tree.map(np.asarray, starts)
            log(f"[{name}] gradient at horizons {curve_horizons} over {s.num_starts} start states")
            curve, compile_s = gradient_curve(env, policy, flat, unravel, normalizer, starts, curve_horizons)
            out["compile_s"][f"curve_{name}"] = compile_s
            grads = curve["grads"].astype(np.float64)  # [K, N, P]
            mean_grads = grads.mean(axis=1)
            norms = np.linalg.norm(mean_grads, axis=1)
            out["curve"][name] = {
                "horizons": list(curve_horizons),
                "grad_norm": norms.tolist(),
                "finite": np.isfinite(norms).tolist(),
                "finite_starts": np.all(np.isfinite(grads), axis=2).sum(axis=1).tolist(),
                "mean_return": curve["returns"].astype(np.float64).mean(axis=1).tolist(),
                "first_order_total_variance": [estimator_stats(g)["total_variance"] for g in grads],
                "compile_s": compile_s,
                "wall_s": time.perf_counter() - start,
            }
            index = {h: i for i, h in enumerate(curve_horizons)}
            if name == s.fd_precision:
                log(f"[{name}] central differences at horizon {s.fd_horizon} along {s.fd_directions} directions")
                out["finite_differences"] = finite_difference_check(
                    env,
                    policy,
                    flat,
                    unravel,
                    normalizer,
                    starts,
                    mean_grads[index[s.fd_horizon]],
                    horizon=s.fd_horizon,
                    directions=s.fd_directions,
                    epsilon=s.fd_epsilon,
                    tolerance=s.fd_tolerance,
                    key=fd_key,
                ) | {"precision": name}
            if name == s.variance_precision:
                log(
                    f"[{name}] first- vs zeroth-order estimates at horizon {s.variance_horizon}, "
                    f"{s.num_starts} samples each"
                )
                out["variance"] = estimator_comparison(
                    env,
                    policy,
                    flat,
                    unravel,
                    normalizer,
                    starts,
                    grads[index[s.variance_horizon]],
                    horizon=s.variance_horizon,
                    sigma=s.variance_sigma,
                    key=zo_key,
                ) | {"precision": name}
            out["num_params"] = int(flat.shape[0])
            mean_grads_by_precision[name] = mean_grads
    if {"float32", "float64"} <= set(mean_grads_by_precision):
        g32, g64 = mean_grads_by_precision["float32"], mean_grads_by_precision["float64"]
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.linalg.norm(g32 - g64, axis=1) / np.linalg.norm(g64, axis=1)
        out["float32_vs_float64"] = {"horizons": list(curve_horizons), "relative_difference": gap.tolist()}
    out["requested_horizons"] = sorted(set(s.horizons))
    return out


def curve_table(results: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    """[(horizon, {precision: norm})] for the requested horizons."""
    rows = []
    for h in results["requested_horizons"]:
        norms = {}
        for name, curve in results["curve"].items():
            norms[name] = curve["grad_norm"][curve["horizons"].index(h)]
        rows.append((h, norms))
    return rows


# --- report files ------------------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:.3g}" if np.isfinite(x) else f"**{x}**"


def _at(results: dict[str, Any], name: str, key: str, h: int):
    curve = results["curve"][name]
    return curve[key][curve["horizons"].index(h)]


def markdown_report(results: dict[str, Any], meta: dict[str, Any]) -> str:
    """``report.md``: every section's numbers with one line on how to read them."""
    r, env = results, meta["env"]
    sp = r["speed"]
    fd, var = r.get("finite_differences"), r.get("variance")
    names = list(r["curve"])
    lines = [
        f"# Gradient report: {env['name']} on {env['backend']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Policy: {meta['policy']['name']} ({r['num_params']:,} parameters, freshly initialised, identity normaliser); "
        f"episode length {env['episode_length']}, control dt {env['control_dt']:.4g} s.  ",
        f"git {meta['git_commit']}; jax {meta['versions'].get('jax')}, brax {meta['versions'].get('brax')}, "
        f"mujoco {meta['versions'].get('mujoco')}; {meta['machine']}; wall clock {meta['wall_clock_s']:.0f} s.",
        "",
        f"## 1. Speed ({sp['num_envs']} envs x {sp['horizon']} steps, {sp['precision']})",
        "",
        "| program | steps/s | compile s |",
        "|---|---|---|",
        f"| forward (mean return) | {sp['fwd']['steps_per_s']:,.0f} | {sp['fwd']['compile_s']:.1f} |",
        f"| forward + backward (its gradient) | {sp['grad']['steps_per_s']:,.0f} | {sp['grad']['compile_s']:.1f} |",
        "",
        f"Mean return {sp['return']:.4g}; gradient norm {_num(sp['grad_norm'])}, "
        f"{'finite' if sp['grad_finite'] else '**not finite**'}; forward+backward takes "
        f"{sp['fwd']['steps_per_s'] / sp['grad']['steps_per_s']:.1f}x the time of forward.",
        "",
        "## 2. Gradient norm vs horizon",
        "",
        f"`||grad mean_s J_h||` over {meta['settings']['num_starts']} start states (the same states and parameters in "
        "every precision); `std/start` is the spread of the per-start gradients, sqrt(trace of their covariance).",
        "",
        "| horizon | "
        + " | ".join(f"norm {n} | std/start {n} | finite starts {n}" for n in names)
        + " | mean return |"
        + (" f32 vs f64 relative difference |" if "float32_vs_float64" in r else ""),
        "|---" * (2 + 3 * len(names) + ("float32_vs_float64" in r)) + "|",
    ]
    for h in r["requested_horizons"]:
        cells = []
        for n in names:
            tv = _at(r, n, "first_order_total_variance", h)
            cells += [
                _num(_at(r, n, "grad_norm", h)),
                _num(math.sqrt(tv) if tv >= 0 else tv),
                str(_at(r, n, "finite_starts", h)),
            ]
        row = f"| {h} | " + " | ".join(cells) + f" | {_at(r, names[0], 'mean_return', h):.4g} |"
        if "float32_vs_float64" in r:
            gap = r["float32_vs_float64"]
            row += f" {_num(gap['relative_difference'][gap['horizons'].index(h)])} |"
        lines.append(row)
    lines += [""]
    if fd is not None:
        verdict = "PASS" if fd["passed"] else "FAIL"
        lines += [
            f"## 3. Central finite differences ({fd['precision']}, horizon {fd['horizon']}, eps {fd['epsilon']:g}): "
            f"**{verdict}**",
            "",
            "Directional derivative of the mean return along random unit directions u: `grad . u` (section 2's "
            "gradient) vs `(J(theta + eps u) - J(theta - eps u)) / (2 eps)`.",
            "",
            "| direction | analytic | finite difference | relative error |",
            "|---|---|---|---|",
            *(
                f"| {i} | {a:.10g} | {f:.10g} | {_num(e)} |"
                for i, (a, f, e) in enumerate(zip(fd["analytic"], fd["finite_difference"], fd["relative_error"]))
            ),
            "",
            f"Max relative error {_num(fd['max_relative_error'])}; the check passes below {fd['tolerance']:g} "
            "(smooth tasks measure 1e-10..3e-8; contacts, terminations and chaos make it fail).",
            "",
        ]
    if var is not None:
        fo, zo = var["first_order"], var["zeroth_order"]
        ratio = zo["total_variance"] / fo["total_variance"] if fo["total_variance"] > 0 else float("nan")
        lines += [
            f"## 4. First- vs zeroth-order estimates ({var['precision']}, horizon {var['horizon']}, "
            f"{fo['samples']} samples each)",
            "",
            "First order: `grad J(theta; s_i)` per start state. Zeroth order (Gaussian smoothing, sigma "
            f"{var['sigma']:g}): `(J(theta + sigma eps_i; s_i) - J(theta; s_i)) eps_i / sigma`, eps_i ~ N(0, I).",
            "",
            "| estimator | norm of the mean | total variance (trace of covariance) | std error / norm "
            "| finite samples |",
            "|---|---|---|---|---|",
            *(
                f"| {label} | {_num(e['mean_norm'])} | {_num(e['total_variance'])} "
                f"| {_num(e['relative_standard_error'])} | {e['finite_samples']}/{e['samples']} |"
                for label, e in (("first order", fo), ("zeroth order", zo))
            ),
            "",
            f"Cosine between the two mean estimates: {_num(var['cosine_of_means'])}. Zeroth-order variance / "
            f"first-order variance: {_num(ratio)}.",
            "",
        ]
    lines += ["![gradients](gradients.png)", ""]
    return "\n".join(lines)


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few console lines."""
    r, sp = results, results["speed"]
    lines = [
        f"speed: forward {sp['fwd']['steps_per_s']:,.0f} steps/s, forward+backward {sp['grad']['steps_per_s']:,.0f} "
        f"steps/s (compile {sp['fwd']['compile_s']:.1f} s / {sp['grad']['compile_s']:.1f} s)"
    ]
    for name in r["curve"]:
        pts = [f"{h}: {_at(r, name, 'grad_norm', h):.3g}" for h in r["requested_horizons"]]
        lines.append(f"gradient norm vs horizon ({name}): " + ", ".join(pts))
    if "finite_differences" in r:
        fd = r["finite_differences"]
        lines.append(
            f"finite differences ({fd['precision']}, horizon {fd['horizon']}): max relative error "
            f"{fd['max_relative_error']:.2g} -> {'PASS' if fd['passed'] else 'FAIL'} (tolerance {fd['tolerance']:g})"
        )
    if "variance" in r:
        v = r["variance"]
        fo, zo = v["first_order"], v["zeroth_order"]
        lines.append(
            f"first vs zeroth order (horizon {v['horizon']}): total variance {fo['total_variance']:.3g} vs "
            f"{zo['total_variance']:.3g}, norm of mean {fo['mean_norm']:.3g} vs {zo['mean_norm']:.3g}, "
            f"cosine {v['cosine_of_means']:.2f}"
        )
    return lines


def plot_report(results: dict[str, Any], path, title: str) -> None:
    """``gradients.png``: norm vs horizon (log-log, each precision, non-finite points marked on the top
    edge) and the first- vs zeroth-order comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    finite_values, non_finite = [], []
    for name, curve in results["curve"].items():
        h = np.asarray(curve["horizons"], dtype=float)
        norm = np.asarray(curve["grad_norm"], dtype=float)
        std = np.sqrt(np.asarray(curve["first_order_total_variance"], dtype=float))
        ok = np.isfinite(norm) & (norm > 0)
        (line,) = left.plot(h[ok], norm[ok], "o-", label=f"||grad|| {name}")
        std_ok = np.isfinite(std) & (std > 0)
        left.plot(h[std_ok], std[std_ok], "--", color=line.get_color(), alpha=0.6, label=f"std/start {name}")
        finite_values += [*norm[ok], *std[std_ok]]
        non_finite.append((name, h[~np.isfinite(norm)], line.get_color()))
    top = max(finite_values) * 10 if finite_values else 1.0
    for name, bad_h, color in non_finite:
        if len(bad_h):
            left.plot(bad_h, np.full(len(bad_h), top), "x", color=color, markersize=10, label=f"non-finite {name}")
    left.set(xscale="log", yscale="log", xlabel="horizon (control steps)", ylabel="gradient norm", title=title)
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    var = results.get("variance")
    if var is not None:
        labels = ["norm of mean", "sqrt(total variance)"]
        x = np.arange(len(labels))
        for i, (label, key) in enumerate((("first order", "first_order"), ("zeroth order", "zeroth_order"))):
            e = var[key]
            vals = np.array([e["mean_norm"], math.sqrt(e["total_variance"]) if e["total_variance"] >= 0 else np.nan])
            vals = np.where(np.isfinite(vals) & (vals > 0), vals, np.nan)
            right.bar(x + (i - 0.5) * 0.38, vals, width=0.38, label=label)
        right.set_xticks(x, labels)
        right.set(
            yscale="log",
            title=f"horizon {var['horizon']}, {var['first_order']['samples']} samples; "
            f"cos(means) {var['cosine_of_means']:.2f}",
        )
        right.legend(fontsize=8)
        right.grid(True, axis="y", which="both", alpha=0.3)
    else:
        right.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
