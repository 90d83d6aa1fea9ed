"""Reading and writing expert demonstration files (ILD, BC): what a demo file holds and how it is checked.

What an imitation algorithm needs of a demo file lives here, apart from making demos (``diffrl.demos``,
which trains an expert through the runner): ``diffrl.algos.ild`` imports this module, never the runner.

A demo file is one compressed ``.npz`` of float32 arrays, episodes first, sorted best first:

- ``observation`` [E, T, obs], ``action`` [E, T, act], ``reward`` [E, T]: what the expert saw, did and got;
- ``state`` [E, T, F]: the physics state after each step, as ``state_features`` flattens it (every body's
  position, orientation, linear and angular velocity on Brax's pipelines: ILD's "full state"; joint
  positions and velocities on the closed-form swing-ups);
- ``start_state`` [E, F] and ``reset_key`` [E, 2]: where each episode began, and the ``env.reset`` key that
  rebuilds that start state exactly;
- ``return`` [E]; and ``task``, ``backend``: what it was recorded on.

Beside it, ``<name>.json`` records how it was made. A file that cannot serve a run (missing, another task or
backend, other sizes, too short) is refused with one line that says what is wrong and the command that makes
a right one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffrl.errors import ConfigError

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


STATE_COMPONENTS = ("pos.x", "pos.y", "pos.z", "quat.w", "quat.x", "quat.y", "quat.z")
STATE_COMPONENTS += ("vel.x", "vel.y", "vel.z", "angvel.x", "angvel.y", "angvel.z")


def state_feature_names(env, size: int) -> list[str]:
    """Names of ``state_features``' entries: body-major ``<body>.<component>`` where the env's system names its
    bodies (Brax's pipelines), ``f0``, ``f1``, ... otherwise (the swing-ups' joint coordinates)."""
    bodies = list(getattr(getattr(env, "sys", None), "link_names", None) or [])
    if bodies and len(bodies) * len(STATE_COMPONENTS) == size:
        return [f"{body}.{part}" for body in bodies for part in STATE_COMPONENTS]
    return [f"f{i}" for i in range(size)]


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
