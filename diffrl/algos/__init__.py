"""Algorithms, by the name used in ``conf/algo/<name>.yaml``."""

from __future__ import annotations

from typing import Any, Callable

from brax.envs.base import Env

from diffrl.algos.base import Algorithm
from diffrl.algos.cem import CEM, CEMConfig
from diffrl.networks.policy import RecurrentPolicy


def _make_cem(env: Env, policy: RecurrentPolicy, options: dict[str, Any]) -> Algorithm:
    return CEM(env, policy, CEMConfig(**options))


ALGORITHMS: dict[str, Callable[[Env, RecurrentPolicy, dict[str, Any]], Algorithm]] = {"cem": _make_cem}


def make_algorithm(name: str, env: Env, policy: RecurrentPolicy, options: dict[str, Any]) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo {name!r}; valid choices: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name](env, policy, options)


__all__ = ["ALGORITHMS", "Algorithm", "make_algorithm"]
