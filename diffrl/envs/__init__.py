"""Environments: the CE-APG swing-up tasks on Brax's physics pipelines or on their closed-form dynamics.

``make_env(name, backend)`` is the one way in; an unknown name or backend raises a ``ValueError``
that lists the valid choices.
"""

from __future__ import annotations

from brax.envs.base import Env

from diffrl.envs.analytic import AnalyticSwingUpEnv
from diffrl.envs.swingup import SwingUpEnv
from diffrl.envs.tasks import TASKS, SwingUpTask, wrap_angle

BACKENDS = ("generalized", "mjx", "spring", "positional", "analytic")


def make_env(name: str, backend: str = "generalized") -> Env:
    if name not in TASKS:
        raise ValueError(f"unknown env {name!r}; valid choices: {', '.join(sorted(TASKS))}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for env {name!r}; valid choices: {', '.join(BACKENDS)}")
    if backend == "analytic":
        return AnalyticSwingUpEnv(TASKS[name])
    return SwingUpEnv(TASKS[name], backend=backend)


__all__ = ["BACKENDS", "TASKS", "AnalyticSwingUpEnv", "SwingUpEnv", "SwingUpTask", "make_env", "wrap_angle"]
