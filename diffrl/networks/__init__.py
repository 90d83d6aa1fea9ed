"""Policies: the deterministic GRU policy of the CE-APG paper, with a running observation normaliser."""

from diffrl.networks.policy import GRUPolicy, RecurrentPolicy, make_recurrent_policy, paper_hidden_size

__all__ = ["GRUPolicy", "RecurrentPolicy", "make_recurrent_policy", "paper_hidden_size"]
