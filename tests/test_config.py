"""The config tree composes for every choice, rejects typos, and resolves budgets."""

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from cli.main import group_choices
from diffrl.experiment import algorithm_options
from diffrl.run import chunk_lengths

from conftest import CONF_DIR, compose_train

GROUPS = ("env", "algo", "policy", "hardware", "logger", "debug")  # launchers: test_experiments.py


def test_every_choice_of_every_group_composes_and_resolves():
    """One composition per file. The groups do not interact (an algo picks its policy through its own
    defaults; the tuned files, below, are the one env x algo coupling), so composing every env with every
    algo (221 tests, once) proved no more than this; which algo runs on which task is test_tasks.py's."""
    for group in GROUPS:
        for choice in group_choices(group):
            cfg = compose_train(f"{group}={choice}")
            OmegaConf.resolve(cfg)  # every interpolation in the file resolves
            if group in ("env", "algo", "policy"):
                assert cfg[group].name == choice, (group, choice)
            assert cfg.num_seeds == (2 if choice == "smoke" else 8), (group, choice)  # the papers' seed count


def leaves(tree: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a nested dict's leaves (lists are leaves)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_each_tuned_file_is_composed_for_its_env_and_algo():
    """conf/tuned/<env>_<algo>.yaml: loaded for that pair (and command-line overrides still win)."""
    pairs = {f"{env}_{algo}": (env, algo) for env in group_choices("env") for algo in group_choices("algo")}
    tuned_files = sorted((CONF_DIR / "tuned").glob("*.yaml"))
    assert tuned_files and all(path.stem in pairs for path in tuned_files), "a tuned file no pair loads"
    for path in tuned_files:
        env, algo = pairs[path.stem]
        tuned = leaves(yaml.safe_load(path.read_text())["algo"])
        composed = leaves(OmegaConf.to_container(compose_train(f"env={env}", f"algo={algo}").algo))
        assert {key: composed.get(key) for key in tuned} == tuned, path.name
    first = tuned_files[0].stem
    overridden = compose_train(f"env={pairs[first][0]}", f"algo={pairs[first][1]}", "algo.budgets.paper.iterations=3")
    assert overridden.algo.budgets.paper.iterations == 3


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
    assert options["apg_steps"] == 3 and options["starts_per_step"] == 2  # the rest from the quick budget
    options, iterations = algorithm_options(compose_train("algo=ce_apg", "budget=paper"))
    assert (options["population"], options["apg_steps"], iterations) == (24, 100, 200)
