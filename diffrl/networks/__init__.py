"""Policies (``policy=gru|mlp|gaussian_mlp|state_std_mlp``) behind one interface, and the value network for critics.

``make_policy(options, observation_size, action_size)`` builds a policy from its config group
(``conf/policy/<name>.yaml``); an unknown name lists the valid choices.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from diffrl.networks.base import Carry, NormalizerOptions, NormalizerState, Params, Policy
from diffrl.networks.gru import GRUPolicy, make_gru_policy, paper_hidden_size
from diffrl.networks.mlp import (
    MLP,
    ValueNetwork,
    make_gaussian_mlp_policy,
    make_mlp_policy,
    make_state_std_mlp_policy,
    make_value_network,
)

POLICIES = {
    "gru": make_gru_policy,
    "mlp": make_mlp_policy,
    "gaussian_mlp": make_gaussian_mlp_policy,
    "state_std_mlp": make_state_std_mlp_policy,
}
STOCHASTIC_POLICIES = ("gaussian_mlp", "state_std_mlp")


def make_policy(options: dict[str, Any], observation_size: int, action_size: int) -> Policy:
    """``options``: the policy config (``name``, ``normalizer`` options and that network's keyword arguments)."""
    options = dict(options)
    name = options.pop("name")
    normalizer = NormalizerOptions(**(options.pop("normalizer", None) or {}))
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; valid choices: {', '.join(POLICIES)}")
    return dataclasses.replace(POLICIES[name](observation_size, action_size, **options), normalizer=normalizer)


__all__ = [
    "MLP",
    "POLICIES",
    "STOCHASTIC_POLICIES",
    "Carry",
    "GRUPolicy",
    "NormalizerOptions",
    "NormalizerState",
    "Params",
    "Policy",
    "ValueNetwork",
    "make_gaussian_mlp_policy",
    "make_gru_policy",
    "make_mlp_policy",
    "make_policy",
    "make_state_std_mlp_policy",
    "make_value_network",
    "paper_hidden_size",
]
