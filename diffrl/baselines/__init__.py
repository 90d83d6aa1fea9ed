"""External trainers: agents that run their own training loop instead of diffrl's compiled chunks.

Brax's jitted PPO, SAC and APG, and stable-baselines3's PyTorch PPO and SAC, on the same envs, with
the same metrics, run directory, checkpoints, summary and ``diffrl eval``. Seeds run one after
another inside the job (none of these agents can vmap over seeds). Modules are imported lazily, so
torch is only imported for the SB3 agents.
"""

from __future__ import annotations

import importlib

# algo name -> "module:class" of its trainer (see diffrl.baselines.common.ExternalTrainer)
EXTERNAL_TRAINERS: dict[str, str] = {
    "ppo": "diffrl.baselines.brax_agents:BraxPPO",
    "sac": "diffrl.baselines.brax_agents:BraxSAC",
    "brax_apg": "diffrl.baselines.brax_agents:BraxAPG",
    "sb3_ppo": "diffrl.baselines.sb3:SB3PPO",
    "sb3_sac": "diffrl.baselines.sb3:SB3SAC",
}
TORCH_TRAINERS = ("sb3_ppo", "sb3_sac")  # stable-baselines3's agents: PyTorch, pinned to its CPU build


def trainer_class(name: str):
    if name not in EXTERNAL_TRAINERS:
        raise ValueError(f"unknown external trainer {name!r}; valid choices: {', '.join(sorted(EXTERNAL_TRAINERS))}")
    module, _, cls = EXTERNAL_TRAINERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["EXTERNAL_TRAINERS", "TORCH_TRAINERS", "trainer_class"]
