"""Expert demonstrations for imitation (ILD, BC): what a demo file holds, how it is made, how it is checked.

A demo file is one compressed ``.npz`` of float32 arrays, episodes first, sorted best first:

- ``observation`` [E, T, obs], ``action`` [E, T, act], ``reward`` [E, T]: what the expert saw, did and got;
- ``state`` [E, T, F]: the physics state after each step, as ``state_features`` flattens it (every body's
  position, orientation, linear and angular velocity on Brax's pipelines: ILD's "full state"; joint
  positions and velocities on the closed-form swing-ups);
- ``start_state`` [E, F] and ``reset_key`` [E, 2]: where each episode began, and the ``env.reset`` key that
  rebuilds that start state exactly (an imitator rolls out from it);
- ``return`` [E]; and ``task``, ``backend``: what it was recorded on.

Beside it, ``<name>.json`` records how it was made: the command, the expert's config, training time and
return, package versions. ``diffrl demos env=<task>`` makes both (``make_demos``); the committed demos of
ILD's tasks live in ``diffrl/data/demos/``.

A file that cannot serve a run (missing, another task or backend, other sizes, too short) is refused
with one line that says what is wrong and the command that makes a right one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shlex
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffrl.errors import ConfigError

log = logging.getLogger("diffrl")

DEMO_DIR = pathlib.Path(__file__).parent / "data" / "demos"  # the committed demos (package data)
_ARRAYS = ("observation", "action", "reward", "state", "start_state", "reset_key", "return")


class DemoError(ConfigError):
    """A demo file that cannot serve this run; the message says why and how to make one that can."""


def default_demo_path(task: str) -> pathlib.Path:
    return DEMO_DIR / f"{task}.npz"


def make_command(task: str, backend: str | None = None) -> str:
    backend_arg = f" env.backend={backend}" if backend else ""
    return f"diffrl demos env={task}{backend_arg}"


# --- states ------------------------------------------------------------------------------------------
def state_features(pipeline_state: Any) -> jax.Array:
    """A physics state as one flat vector (works under vmap: leading axes are kept).

    Brax's pipelines: every body's world position (3), quaternion (4), linear (3) and angular (3)
    velocity, body-major (13 per body). A state without bodies (the closed-form swing-ups' joint-space
    ``PlanarState``): its joint positions and velocities.
    """
    if hasattr(pipeline_state, "x") and hasattr(pipeline_state, "xd"):
        x, xd = pipeline_state.x, pipeline_state.xd
        per_body = jnp.concatenate((x.pos, x.rot, xd.vel, xd.ang), axis=-1)  # [..., bodies, 13]
        return per_body.reshape(*per_body.shape[:-2], -1)
    return jnp.concatenate((pipeline_state.q, pipeline_state.qd), axis=-1)


def state_size(env) -> int:
    """Length of ``state_features`` for ``env`` (traced, not run)."""
    shape = jax.eval_shape(lambda key: state_features(env.reset(key).pipeline_state), jax.random.PRNGKey(0))
    return int(shape.shape[-1])


# --- the file -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Demos:
    """A demo file's contents (numpy, episodes first, best first)."""

    task: str
    backend: str
    observation: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    state: np.ndarray
    start_state: np.ndarray
    reset_key: np.ndarray
    returns: np.ndarray

    @property
    def episodes(self) -> int:
        return int(self.observation.shape[0])

    @property
    def length(self) -> int:
        return int(self.observation.shape[1])

    def first(self, count: int) -> Demos:
        """The ``count`` best episodes."""
        pick = lambda x: x[:count]
        arrays = {
            f.name: pick(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in ("task", "backend")
        }
        return Demos(self.task, self.backend, **arrays)


def save_demos(path: pathlib.Path, demos: Demos, provenance: dict[str, Any]) -> None:
    """``path`` (.npz, float32, compressed) and ``path`` with ``.json`` (provenance)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    floats = lambda x: np.asarray(x, np.float32)
    np.savez_compressed(
        path,
        task=np.asarray(demos.task),
        backend=np.asarray(demos.backend),
        observation=floats(demos.observation),
        action=floats(demos.action),
        reward=floats(demos.reward),
        state=floats(demos.state),
        start_state=floats(demos.start_state),
        reset_key=np.asarray(demos.reset_key, np.uint32),
        **{"return": floats(demos.returns)},
    )
    path.with_suffix(".json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")


def load_demos(path: str | pathlib.Path, task: str, backend: str) -> Demos:
    """The demos in ``path``, refused in one line unless they were recorded on ``task`` and ``backend``."""
    path = pathlib.Path(path).expanduser()
    make = make_command(task, backend)
    if not path.is_file():
        raise DemoError(f"no demo file {path} for env {task!r}; make one with `{make} demos.out={path}`")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in (*_ARRAYS, "task", "backend") if key not in data.files]
            if missing:
                raise DemoError(f"{path} is not a diffrl demo file (no {', '.join(missing)}); make one with `{make}`")
            arrays = {key: np.asarray(data[key]) for key in _ARRAYS}
            recorded_task, recorded_backend = str(data["task"]), str(data["backend"])
    except (OSError, ValueError) as err:
        if isinstance(err, DemoError):
            raise
        raise DemoError(f"cannot read demo file {path} ({err}); make one with `{make}`") from None
    if recorded_task != task:
        raise DemoError(f"{path} holds demos of env {recorded_task!r}, not {task!r}; make one with `{make}`")
    if recorded_backend != backend:
        raise DemoError(
            f"{path} was recorded on backend {recorded_backend!r}, and this run uses {backend!r} (their states "
            f"differ): use env.backend={recorded_backend}, or make demos on {backend} with `{make}`"
        )
    demos = Demos(recorded_task, recorded_backend, returns=arrays.pop("return"), **arrays)
    if demos.episodes == 0:
        raise DemoError(f"{path} holds no episodes; make one with `{make}`")
    return demos


def check_demos_fit(demos: Demos, path: pathlib.Path, env, episode_length: int) -> None:
    """One line when the demos do not fit ``env`` (observation, action or state size) or are shorter than
    the ``episode_length`` steps an imitator rolls out."""
    make = make_command(demos.task, demos.backend)
    sizes = (
        ("observation", demos.observation.shape[-1], env.observation_size),
        ("action", demos.action.shape[-1], env.action_size),
        ("state", demos.state.shape[-1], state_size(env)),
    )
    for what, recorded, expected in sizes:
        if recorded != expected:
            raise DemoError(
                f"{path}: {what} size {recorded}, but env {demos.task!r} on {demos.backend} has {expected} "
                f"(recorded with another version of the task?); make new demos with `{make}`"
            )
    if demos.length < episode_length:
        raise DemoError(
            f"{path}: episodes of {demos.length} steps, shorter than the {episode_length}-step rollouts of this run; "
            f"set algo.episode_length<={demos.length}, or make longer demos with "
            f"`{make} env.episode_length={episode_length}`"
        )


# --- making demos -----------------------------------------------------------------------------------------
def rollout_episodes(env, policy, params, normalizer, key: jax.Array, episodes: int, length: int, stochastic: bool):
    """``episodes`` episodes of ``length`` steps from fresh start states: (reset keys, start states'
    features, trajectory whose ``pipeline_state`` holds the states' features), all with a leading episode axis."""
    from diffrl.rollout import episode

    def one(episode_key):
        reset_key, action_key = jax.random.split(episode_key)
        state = env.reset(reset_key)
        sample_with = action_key if stochastic else None
        trajectory = episode(
            env, policy, params, normalizer, state, length, record_pipeline_state=state_features, action_key=sample_with
        )
        return reset_key, state_features(state.pipeline_state), trajectory

    return jax.jit(jax.vmap(one))(jax.random.split(key, episodes))


def terminated_early(trajectory) -> np.ndarray:
    """[E]: whether each episode of a rollout batch ended by a termination (a fall), not the time limit. A
    termination on the very last step counts too: the body fell."""
    ended = (np.asarray(trajectory.done) > 0) & (np.asarray(trajectory.truncation) == 0)
    return np.any(ended & np.asarray(trajectory.alive, bool), axis=1)


def best_full_length(returns: np.ndarray, terminated: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` highest-return episodes that never terminated, best first."""
    full = np.flatnonzero(~terminated)
    return full[np.argsort(-returns[full], kind="stable")][:keep]


def demos_from_rollouts(task: str, backend: str, reset_keys, start_states, trajectory, keep: int) -> Demos:
    """The best ``keep`` full-length episodes of a rollout batch, as ``Demos``."""
    trajectory = jax.device_get(trajectory)
    returns = np.sum(trajectory.reward, axis=1)
    chosen = best_full_length(returns, terminated_early(trajectory), keep)
    if chosen.size == 0:
        raise DemoError(
            f"every one of the expert's {len(returns)} episodes on {task!r} terminated early: no full-length "
            "demonstration; train the expert longer (budget=paper, or iterations=<more env steps>)"
        )
    states = np.asarray(trajectory.pipeline_state)  # already state_features
    return Demos(
        task=task,
        backend=backend,
        observation=trajectory.observation[chosen],
        action=trajectory.action[chosen],
        reward=trajectory.reward[chosen],
        state=states[chosen],
        start_state=np.asarray(start_states)[chosen],
        reset_key=np.asarray(reset_keys)[chosen],
        returns=returns[chosen],
    )


def demos_output_path(cfg, run_dir: pathlib.Path) -> pathlib.Path:
    out = cfg.demos.get("out")
    return pathlib.Path(out).expanduser() if out else pathlib.Path(run_dir) / f"{cfg.env.name}.npz"


def make_demos(cfg, run_dir: pathlib.Path) -> dict[str, Any]:
    """``diffrl demos``: train the expert (``algo``, e.g. Brax PPO) into ``run_dir`` with ``demos.length``-step
    episodes, roll it out ``demos.rollouts`` times (sampling its actions if it is stochastic), keep the best
    ``demos.keep`` full-length episodes; writes the demo file and its provenance; returns the provenance."""
    from omegaconf import OmegaConf

    from diffrl.baselines.common import FeedForwardPolicy
    from diffrl.experiment import git_commit, machine_description, package_versions
    from diffrl.run import load_policy, train

    run_dir = pathlib.Path(run_dir)
    t0 = time.perf_counter()
    summary = train(cfg, run_dir)
    train_seconds = time.perf_counter() - t0
    exp, params, normalizer, _ = load_policy(run_dir, cfg)
    first_seed = lambda tree: jax.tree.map(lambda x: x[0], tree)
    policy = exp.policy
    stochastic = bool(cfg.demos.stochastic)
    if stochastic and isinstance(policy, FeedForwardPolicy):  # Brax's networks sample when asked to
        policy = dataclasses.replace(policy, stochastic=True)
    length = int(cfg.demos.length)
    key = jax.random.PRNGKey(int(cfg.seed) + 7_919)
    reset_keys, start_states, trajectory = rollout_episodes(
        exp.env,
        policy,
        first_seed(params),
        first_seed(normalizer),
        key,
        int(cfg.demos.rollouts),
        length,
        stochastic=stochastic and policy.stochastic,
    )
    demos = demos_from_rollouts(
        cfg.env.name, cfg.env.backend, reset_keys, start_states, trajectory, int(cfg.demos.keep)
    )
    path = demos_output_path(cfg, run_dir)
    provenance = {
        "task": cfg.env.name,
        "backend": cfg.env.backend,
        "command": "diffrl demos " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "expert": cfg.algo.name,
        "expert_run_dir": str(run_dir.absolute()),
        "expert_training_s": round(train_seconds, 1),  # the whole expert run: compiles, training, its evaluation
        "expert_final_return": summary["final_return"],
        "episode_length": length,
        "rollouts": int(cfg.demos.rollouts),
        "stochastic_rollouts": stochastic and policy.stochastic,
        "full_length_rollouts": int(np.sum(~terminated_early(jax.device_get(trajectory)))),
        "kept": demos.episodes,
        "returns": [round(float(r), 3) for r in demos.returns],
        "state_size": int(demos.state.shape[-1]),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": package_versions(),
        "machine": machine_description(),
        "git_commit": git_commit(),
    }
    save_demos(path, demos, provenance)
    log.info(
        "%d demos of %s (%d steps), returns %.2f (best) .. %.2f; the expert trained for %.0f s -> %s",
        demos.episodes,
        cfg.env.name,
        length,
        demos.returns[0],
        demos.returns[-1],
        train_seconds,
        path,
    )
    return provenance
