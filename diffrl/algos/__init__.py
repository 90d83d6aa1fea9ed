"""Algorithms, by the name used in ``conf/algo/<name>.yaml``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from brax.envs.base import Env

from diffrl.algos.apg import PAPG, GradientConfig, PAPGConfig
from diffrl.algos.base import Algorithm
from diffrl.algos.ce_apg import CEAPG, CEAPGConfig
from diffrl.algos.cem import CEM, CEMConfig
from diffrl.algos.ild import BC, ILD, BCConfig, ILDConfig
from diffrl.algos.shac import SHAC, SHACConfig
from diffrl.baselines import EXTERNAL_TRAINERS
from diffrl.networks.base import Policy


def _with_gradient_config(options: dict[str, Any], batch_clip: bool = False) -> dict[str, Any]:
    """``options`` with ``grad`` as a ``GradientConfig``. ``batch_clip``: the algorithm vmaps its rollouts over
    ``diffrl.rollout.ROLLOUT_AXIS``, so ``grad.step_clip_scope=batch`` can work (ILD's); elsewhere it is refused."""
    grad = GradientConfig(**options.get("grad", {}))
    if grad.step_clip_scope == "batch" and not batch_clip:
        raise ValueError(
            f"algo.grad.step_clip_scope=batch is ILD's (one per-step clip over its batch of rollouts); "
            f"algo={options.get('name', '?')} clips each rollout on its own: use algo.grad.step_clip_scope=rollout"
        )
    return {**options, "grad": grad}


def _make_cem(env: Env, policy: Policy, options: dict[str, Any], iterations: int) -> Algorithm:
    return CEM(env, policy, CEMConfig(**options))


def _make_papg(env: Env, policy: Policy, options: dict[str, Any], iterations: int) -> Algorithm:
    return PAPG(env, policy, PAPGConfig(**_with_gradient_config(options)))


def _make_ce_apg(env: Env, policy: Policy, options: dict[str, Any], iterations: int) -> Algorithm:
    # The run's length: the learning-rate schedule's too when the budget sets no algo.schedule_iterations.
    return CEAPG(env, policy, CEAPGConfig(**_with_gradient_config(options), iterations=iterations))


def _shac_config(options: dict[str, Any], iterations: int) -> SHACConfig:
    options = _with_gradient_config(options)
    tuples = {k: tuple(options[k]) for k in ("betas", "critic_hidden_sizes") if k in options}
    if options.get("horizon") is None:  # BPTT: one window over the whole episode
        options["horizon"] = options["episode_length"]
    # The run's length: the learning-rate schedules' too when the budget sets no algo.schedule_iterations.
    return SHACConfig(**{**options, **tuples}, iterations=iterations)


def _make_shac(env: Env, policy: Policy, options: dict[str, Any], iterations: int) -> Algorithm:
    return SHAC(env, policy, _shac_config(options, iterations))


# SHAC's options that only its critic reads: BPTT has none, so setting one is a mistake worth a line.
CRITIC_OPTIONS = (
    "lam",
    "critic_learning_rate",
    "critic_iterations",
    "critic_minibatches",
    "target_alpha",
    "critic_hidden_sizes",
    "critic_activation",
    "critic_layer_norm",
    "critic_initializer",
    "critic_shuffle",
)


def _make_bptt(env: Env, policy: Policy, options: dict[str, Any], iterations: int) -> Algorithm:
    given = [f"algo.{name}" for name in CRITIC_OPTIONS if name in options]
    if options.get("critic", False) or given:
        what = ", ".join(given) if given else "algo.critic=true"
        raise ValueError(f"algo=bptt has no critic, so {what} would do nothing: use algo=shac for a critic")
    algo = SHAC(env, policy, _shac_config({**options, "critic": False}, iterations))
    algo.name = "bptt"
    return algo


def _make_ild(env: Env, policy: Policy, options: dict[str, Any], iterations: int) -> Algorithm:
    return ILD(env, policy, ILDConfig(**_with_gradient_config(options, batch_clip=True)))


TIME_ALIGNED_LOSSES = ("l2", "l2_rms")


def _make_ild_l2(env: Env, policy: Policy, options: dict[str, Any], iterations: int) -> Algorithm:
    # ILD-L2 is ILD with a time-aligned distance; algo.loss picks which (the authors' Euclidean l2, or l2_rms).
    if options.get("loss") not in TIME_ALIGNED_LOSSES:
        raise ValueError(
            f"algo=ild_l2 compares time-aligned states: algo.loss must be one of {', '.join(TIME_ALIGNED_LOSSES)}, "
            f"not {options.get('loss')!r} (algo=ild is the Chamfer one)"
        )
    algo = ILD(env, policy, ILDConfig(**_with_gradient_config(options, batch_clip=True)))
    algo.name = "ild_l2"
    return algo


def _make_bc(env: Env, policy: Policy, options: dict[str, Any], iterations: int) -> Algorithm:
    return BC(env, policy, BCConfig(**_with_gradient_config(options)))


Factory = Callable[[Env, Policy, dict[str, Any], int], Algorithm]
ALGORITHMS: dict[str, Factory] = {
    "cem": _make_cem,
    "papg": _make_papg,
    "ce_apg": _make_ce_apg,
    "shac": _make_shac,
    "bptt": _make_bptt,
    "ild": _make_ild,
    "ild_l2": _make_ild_l2,
    "bc": _make_bc,
}


def make_algorithm(name: str, env: Env, policy: Policy, options: dict[str, Any], iterations: int) -> Algorithm:
    """``options``: the algo config for the chosen budget; ``iterations``: the run's outer iterations."""
    if name in EXTERNAL_TRAINERS:
        raise ValueError(f"algo {name!r} runs its own training loop (diffrl.baselines), not as compiled chunks")
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo {name!r}; valid choices: {', '.join(sorted(ALGORITHMS))}")
    check_policy(name, policy.name, policy.stochastic)
    return ALGORITHMS[name](env, policy, options, iterations)


# The option holding each population algorithm's population: what ``hardware.devices`` shards when it does
# not divide the seeds (diffrl/devices.py).
POPULATION_OPTIONS = {"ce_apg": "population", "cem": "population", "papg": "runs"}

# Algorithms that learn from expert demonstrations (diffrl.demos): they need a demo file of the task, and
# roll out (and are evaluated over) the demos' short episodes.
IMITATION_ALGOS = ("ild", "ild_l2", "bc")

# Algorithms that search over, or differentiate through, a deterministic policy's actions.
DETERMINISTIC_POLICY_ALGOS = ("cem", "papg", "ce_apg")


def check_policy(algo: str, policy: str, stochastic: bool) -> None:
    """One line when an algorithm cannot use the chosen kind of policy."""
    if algo in DETERMINISTIC_POLICY_ALGOS and stochastic:
        raise ValueError(
            f"algo {algo!r} optimises a deterministic policy; policy={policy} is stochastic. "
            "Use policy=gru or policy=mlp."
        )


__all__ = [
    "ALGORITHMS",
    "DETERMINISTIC_POLICY_ALGOS",
    "IMITATION_ALGOS",
    "POPULATION_OPTIONS",
    "Algorithm",
    "check_policy",
    "make_algorithm",
]
