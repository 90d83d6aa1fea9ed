"""Environments: every task diffrl knows, by name, with the physics backends it supports.

Three suites share one registry:
- ``swingup``: the CE-APG swing-up tasks and SHAC's cart-pole (MJCF under ``assets/``), on their exact
  closed-form dynamics (``analytic``) or on any of Brax's pipelines;
- ``brax``: Brax's built-in locomotion and control tasks (``brax.envs.get_environment``), with contacts,
  terminations and no closed form;
- ``shac``: SHAC's locomotion tasks (its observations, rewards, terminations and timing on the bodies its
  authors' dflex simulated, re-specified for MJX; ``shac_locomotion.py``, docs/shac_tasks.md).

``make_env(name, backend)`` is the one way in. An unknown name, or a backend the task does not support,
raises ``ValueError`` with one line naming the valid choices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from brax import envs as brax_envs
from brax.envs.base import Env

from diffrl.envs.analytic import AnalyticSwingUpEnv
from diffrl.envs.brax_suite import BraxSuiteEnv
from diffrl.envs.shac_locomotion import REBUILT_BACKENDS, SHAC_LOCOMOTION, ShacLocomotionEnv
from diffrl.envs.swingup import SwingUpEnv
from diffrl.envs.tasks import INERTIAS, TASKS, SwingUpTask, wrap_angle

BRAX_PIPELINES = ("generalized", "mjx", "spring", "positional")
BACKENDS = (*BRAX_PIPELINES, "analytic")  # every backend some task supports

# MJX's constraint solver loops (`while_loop`) until converged unless it runs exactly one iteration, and
# reverse-mode autodiff cannot go through a `while_loop`. Brax sets this only for ant and humanoid.
MJX_GRADIENT_SOLVER = {"opt.iterations": 1, "opt.ls_iterations": 4}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A task in the registry: its suite, the backends it runs on, and how to build it on one."""

    name: str
    suite: str  # "swingup" | "brax" | "shac"
    backends: tuple[str, ...]
    build: Callable[[str], Env]


def _swingup(task: SwingUpTask) -> TaskSpec:
    def build(backend: str) -> Env:
        return AnalyticSwingUpEnv(task) if backend == "analytic" else SwingUpEnv(task, backend=backend)

    return TaskSpec(task.name, "swingup", ("analytic", *BRAX_PIPELINES), build)


def _brax(name: str, backends: tuple[str, ...] = BRAX_PIPELINES) -> TaskSpec:
    return TaskSpec(name, "brax", backends, lambda backend: brax_envs.get_environment(name, backend=backend))


def _shac(env_class: type[ShacLocomotionEnv]) -> TaskSpec:
    # dflex's bodies, MJX only (the soft joint limits reach the physics through MJX's qfrc_applied)
    return TaskSpec(env_class.name, "shac", REBUILT_BACKENDS, lambda backend: env_class(backend=backend))


REGISTRY: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        *(_swingup(task) for task in TASKS.values()),
        _brax("ant"),
        _brax("halfcheetah"),
        _brax("hopper"),
        _brax("humanoid"),
        _brax("inverted_pendulum"),
        _brax("reacher"),
        _brax("swimmer", backends=("generalized",)),  # Brax's swimmer raises on any other pipeline
        _brax("walker2d"),
        *(_shac(env_class) for env_class in SHAC_LOCOMOTION.values()),
    )
}


def task_spec(name: str) -> TaskSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown env {name!r}; valid choices: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def check_backend(name: str, backend: str) -> None:
    """One line naming the backends ``name`` supports when ``backend`` is not one of them."""
    spec = task_spec(name)
    if backend not in spec.backends:
        why = " (no closed-form dynamics for this task)" if backend == "analytic" else ""
        raise ValueError(
            f"env {name!r} has no backend {backend!r}{why}; valid backends for {name}: {', '.join(spec.backends)}"
        )


def make_env(
    name: str, backend: str = "generalized", mjx_solver: dict | None = None, inertia: str | None = None
) -> Env:
    """The task ``name`` on ``backend``; on ``mjx``, the solver options ``mjx_solver`` (default: one
    iteration, so the step is reverse-differentiable) replace the MJCF's. ``inertia`` (a swing-up's
    ``env.inertia``, one of ``INERTIAS``; null: the task's own) picks where its links' inertia comes from."""
    check_backend(name, backend)
    spec = task_spec(name)
    if inertia is not None:
        if spec.suite != "swingup":
            raise ValueError(f"env {name!r} has no inertia option; it applies to the swing-up tasks")
        spec = _swingup(dataclasses.replace(TASKS[name], inertia=inertia))
    env = spec.build(backend)
    if backend == "mjx":
        env.sys = env.sys.tree_replace(MJX_GRADIENT_SOLVER if mjx_solver is None else mjx_solver)
    return BraxSuiteEnv(env) if spec.suite == "brax" else env


__all__ = [
    "BACKENDS",
    "BRAX_PIPELINES",
    "INERTIAS",
    "REGISTRY",
    "TASKS",
    "AnalyticSwingUpEnv",
    "BraxSuiteEnv",
    "SwingUpEnv",
    "SwingUpTask",
    "TaskSpec",
    "check_backend",
    "make_env",
    "task_spec",
    "wrap_angle",
]
