"""The config tree composes for every choice, rejects typos, and resolves budgets."""

import itertools

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from cli.main import group_choices
from diffrl.experiment import algorithm_options
from diffrl.run import chunk_lengths

from conftest import compose_train


# every env x algo on the CPU, and every hardware choice on every algo (the groups do not interact)
@pytest.mark.parametrize(
    "env,algo,hardware",
    [(env, algo, "cpu") for env, algo in itertools.product(group_choices("env"), group_choices("algo"))]
    + [("acrobot", algo, hw) for algo in group_choices("algo") for hw in group_choices("hardware") if hw != "cpu"],
)
def test_every_env_algo_hardware_composes(env, algo, hardware):
    cfg = compose_train(f"env={env}", f"algo={algo}", f"hardware={hardware}")
    OmegaConf.resolve(cfg)
    assert cfg.env.name == env and cfg.algo.name == algo
    assert cfg.num_seeds == 8  # the papers' seed count is the default


def test_misspelled_key_is_an_error_not_ignored():
    with pytest.raises(ConfigCompositionException, match="populaton"):
        compose_train("algo.populaton=3")


def test_debug_smoke_overrides_top_level_defaults():
    cfg = compose_train("debug=smoke")
    assert (cfg.num_seeds, cfg.iterations, cfg.env.episode_length) == (2, 4, 50)


def test_default_run_is_ce_apg_on_the_acrobot_with_the_analytic_backend():
    cfg = compose_train()
    assert (cfg.algo.name, cfg.env.name, cfg.env.backend, cfg.budget) == ("ce_apg", "acrobot", "analytic", "quick")


def test_budget_sets_iterations_and_explicit_iterations_win():
    assert algorithm_options(compose_train("algo=cem"))[1] == 100
    assert algorithm_options(compose_train("algo=cem", "budget=paper"))[1] == 500
    options, iterations = algorithm_options(compose_train("algo=cem", "budget=paper", "iterations=7"))
    assert iterations == 7 and "iterations" not in options and options["episode_length"] == 500


def test_unknown_budget_lists_choices():
    with pytest.raises(ValueError, match="valid choices: quick, paper"):
        algorithm_options(compose_train("algo=cem", "budget=huge"))


def test_chunk_lengths_cover_the_run_exactly():
    assert chunk_lengths(25, 10) == [10, 10, 5]
    assert chunk_lengths(20, 10) == [10, 10]
    assert chunk_lengths(3, 10) == [3]
    assert chunk_lengths(12, None) == [1] * 12  # null: ~20 chunks, at least one iteration each
    assert chunk_lengths(200, None) == [10] * 20


def test_explicit_algo_options_win_over_the_budget():
    options, _ = algorithm_options(compose_train("algo=ce_apg", "algo.apg_steps=3"))
    assert options["apg_steps"] == 3 and options["population"] == 12  # the rest from the quick budget
    options, iterations = algorithm_options(compose_train("algo=ce_apg", "budget=paper"))
    assert (options["population"], options["apg_steps"], iterations) == (24, 100, 200)
