"""CEM: the outer update matches its formulas, and a short run learns on the acrobot."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.algos.cem import cross_entropy_update, sample_candidates
from diffrl.evaluation import make_evaluator
from diffrl.experiment import evaluation_key, seed_keys
from diffrl.run import build_experiment, train

# Measured (seeds 0, 1): best of the first population [314, -94], after 20 iterations [387, 330].
MARGIN = 30.0


def test_cross_entropy_update_on_a_hand_computed_toy():
    old_mean = jnp.array([0.0, 1.0])
    candidates = jnp.array([[0.0, 1.0], [1.0, 1.0], [2.0, 3.0], [3.0, -1.0]])
    scores = jnp.array([0.0, 1.0, 2.0, 3.0])
    mean, std, elite_idx = cross_entropy_update(old_mean, candidates, scores, elites=2)
    assert sorted(elite_idx.tolist()) == [2, 3]
    np.testing.assert_allclose(mean, [2.5, 1.0])
    # RMS distance of the elites from the *old* mean: sqrt((2^2 + 3^2)/2), sqrt((2^2 + 2^2)/2)
    np.testing.assert_allclose(std, [np.sqrt(6.5), 2.0], rtol=1e-6)


def test_non_finite_candidates_never_become_elites():
    candidates = jnp.arange(4.0)[:, None]
    scores = jnp.array([jnp.nan, 1.0, jnp.inf, 0.5])
    mean, _, elite_idx = cross_entropy_update(jnp.zeros(1), candidates, scores, elites=2)
    assert sorted(elite_idx.tolist()) == [1, 3]
    np.testing.assert_allclose(mean, [2.0])


def test_min_std_floor():
    _, std, _ = cross_entropy_update(jnp.zeros(1), jnp.zeros((4, 1)), jnp.arange(4.0), elites=2, min_std=0.3)
    np.testing.assert_allclose(std, [0.3])


def test_elites_must_fit_the_population(fast_cfg):
    with pytest.raises(ValueError, match="elites"):
        build_experiment(fast_cfg("algo=cem", "algo.elites=30"))


def test_cem_learns_on_the_acrobot(fast_cfg, tmp_path):
    """20 iterations (24 candidates, 500-step episodes, 2 seeds) beat the best of CEM's own first
    population: the 24 policies it samples around its initial mean, evaluated like the final policy
    (same evaluator, same start states). A random GRU policy can already score ~300 here."""
    cfg = fast_cfg(
        "algo=cem",
        "iterations=20",
        "chunk_iterations=10",
        "env.episode_length=500",
        "eval.episodes=4",
        "checkpoint.enabled=false",
    )
    exp = build_experiment(cfg)
    initial = jax.jit(jax.vmap(exp.algo.init))(seed_keys(cfg.seed, cfg.num_seeds))
    evaluate = make_evaluator(exp.env, exp.policy, exp.episode_length, episodes=4)
    eval_key = evaluation_key(cfg.seed)
    first_sample = lambda s: sample_candidates(jax.random.split(s.key, 3)[1], s.mean, s.std, exp.algo.config.population)
    candidates = jax.vmap(first_sample)(initial)  # the keys of its first train_step
    unravel = jax.vmap(jax.vmap(exp.algo._unravel))
    normalizers = jax.tree.map(lambda x: jnp.repeat(x[:, None], candidates.shape[1], axis=1), initial.normalizer)
    scores = jax.vmap(lambda p, n: evaluate(p, n, eval_key).mean(axis=1))(unravel(candidates), normalizers)
    best_of_first_population = np.asarray(scores).max(axis=1)  # per seed

    summary = train(cfg, tmp_path)
    after = np.asarray(summary["final_return"]["per_seed"])
    assert np.all(after > best_of_first_population + MARGIN), (best_of_first_population, after)
