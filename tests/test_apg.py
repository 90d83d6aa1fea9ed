"""APG core, PAPG and CE-APG: gradients, update formulas, best-of-N, and the NaN guard."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from brax.envs.base import Env, State
from jax.flatten_util import ravel_pytree

from diffrl.algos.apg import APGCore, APGTrace, GradientConfig
from diffrl.algos.ce_apg import CEAPGState, log_linear_learning_rate
from diffrl.envs import make_env
from diffrl.networks import Policy, make_gru_policy
from diffrl.networks.base import count_as_float
from diffrl.rollout import NO_GRADIENT_OPTIONS, GradientOptions, episode_return
from diffrl.run import TrainingDiverged, build_experiment, train

from conftest import compose_train


def _return_fn(env, policy, normalizer, start, horizon, options=NO_GRADIENT_OPTIONS):
    def f(flat, unravel):
        return episode_return(env, policy, unravel(flat), normalizer, start, horizon, options)

    return f


def test_rollout_gradient_matches_central_finite_differences_float64():
    with jax.enable_x64(True):
        env = make_env("acrobot", "generalized")
        policy = make_gru_policy(env.observation_size, env.action_size)
        params = jax.tree.map(lambda x: x.astype(jnp.float64), policy.init(jax.random.PRNGKey(0)))
        flat, unravel = ravel_pytree(params)
        normalizer = policy.init_normalizer()
        start = env.reset(jax.random.PRNGKey(1))
        ret = jax.jit(lambda p: _return_fn(env, policy, normalizer, start, 20)(p, unravel))
        grad = jax.grad(ret)(flat)
        direction = jax.random.normal(jax.random.PRNGKey(2), flat.shape, jnp.float64)
        direction = direction / jnp.linalg.norm(direction)
        eps = 1e-6
        finite_diff = (ret(flat + eps * direction) - ret(flat - eps * direction)) / (2 * eps)
        analytic = jnp.dot(grad, direction)
        assert abs(analytic) > 1e-3  # the check is not vacuous
        np.testing.assert_allclose(analytic, finite_diff, rtol=1e-5)


@pytest.fixture(scope="module")
def acrobot_setup():
    # The closed-form backend training uses (the gradient through Brax's pipeline is checked above).
    env = make_env("acrobot", "analytic")
    policy = make_gru_policy(env.observation_size, env.action_size)
    flat, unravel = ravel_pytree(policy.init(jax.random.PRNGKey(0)))
    start = env.reset(jax.random.PRNGKey(1))
    return env, policy, flat, unravel, policy.init_normalizer(), start


def test_gradient_options_keep_forward_values_and_checkpoint_keeps_gradients(acrobot_setup):
    env, policy, flat, unravel, normalizer, start = acrobot_setup
    value_and_grad = lambda options: jax.jit(
        jax.value_and_grad(lambda p: _return_fn(env, policy, normalizer, start, 30, options)(p, unravel))
    )(flat)
    value, grad = value_and_grad(GradientOptions())
    value_ckpt, grad_ckpt = value_and_grad(GradientOptions(checkpoint=True))
    value_trunc, grad_trunc = value_and_grad(GradientOptions(truncation=5))
    value_clip, grad_clip = value_and_grad(GradientOptions(step_clip=1e-3))
    np.testing.assert_allclose([value_ckpt, value_trunc, value_clip], value, rtol=1e-6)
    np.testing.assert_allclose(grad_ckpt, grad, rtol=1e-4, atol=1e-6)
    # Truncation and per-step clipping cut gradient paths, so they shrink the gradient.
    assert jnp.linalg.norm(grad_trunc) < jnp.linalg.norm(grad)
    assert jnp.linalg.norm(grad_clip) < jnp.linalg.norm(grad)


def test_log_linear_learning_rate_spans_its_schedule_and_holds_its_end_after_it():
    lrs = [float(log_linear_learning_rate(i, 4, 1e-3, 1e-6)) for i in range(6)]
    np.testing.assert_allclose(lrs, [1e-3, 1e-4, 1e-5, 1e-6, 1e-6, 1e-6], rtol=1e-5)


class QuadraticCore:
    """Stands in for APGCore: 'refining' x is exact gradient ascent on f(x) = -|x - target|^2."""

    def __init__(self, policy, target, step_size):
        self.policy, self.target, self.step_size = policy, target, step_size

    def optimizer(self, learning_rate):
        return optax.apply_if_finite(optax.sgd(learning_rate), 10)

    def refine(self, flat, opt_state, normalizer, key, steps, learning_rate):
        def body(x, _):
            x = x + self.step_size * (-2.0 * (x - self.target))
            return x, -jnp.sum((x - self.target) ** 2)

        flat, returns = jax.lax.scan(body, flat, None, length=steps)
        zeros = jnp.zeros(steps)
        return flat, opt_state, APGTrace(returns, zeros + 50, zeros, zeros, zeros.astype(jnp.int32))


def test_a_shortened_paper_run_of_ce_apg_follows_the_paper_runs_learning_rates(fast_cfg):
    """``budget=paper iterations=3``: the schedule still spans the paper's 200 iterations (the run is the paper
    run's beginning), so iteration 2 refines at the paper run's rate there, not at its own last rate 1e-6."""
    exp = build_experiment(fast_cfg("algo=ce_apg", "budget=paper", "iterations=3", "algo.population=4",
                                    "algo.elites=2", "algo.apg_steps=3", "algo.score_window=1",
                                    "algo.update_normalizer=false"))  # fmt: skip
    algo = exp.algo
    assert (algo.config.iterations, algo.config.schedule_iterations) == (3, 200)
    algo.core = QuadraticCore(exp.policy, jnp.zeros(algo.core.num_params), step_size=0.25)
    dim = algo.core.target.shape[0]
    at_iteration_2 = CEAPGState(
        jnp.zeros(dim), jnp.full(dim, 0.5), jnp.zeros(dim), exp.policy.init_normalizer(), jax.random.PRNGKey(3),
        jnp.full((), 2, jnp.int32),
    )  # fmt: skip
    _, metrics = jax.jit(algo.train_step)(at_iteration_2)
    np.testing.assert_allclose(metrics["learning_rate"], 1e-3 * (1e-3) ** (2 / 199), rtol=1e-5)


def test_ce_apg_outer_update_matches_the_formulas_on_a_quadratic(fast_cfg):
    exp = build_experiment(
        fast_cfg(
            "algo=ce_apg",
            "algo.population=6",
            "algo.elites=2",
            "algo.apg_steps=3",
            "algo.score_window=1",
            "algo.update_normalizer=false",
        )
    )
    algo = exp.algo
    dim = algo.core.num_params
    target = jnp.linspace(-1.0, 1.0, dim)
    algo.core = QuadraticCore(exp.policy, target, step_size=0.25)  # x <- x + 0.5 (target - x): halves the gap
    state = CEAPGState(
        jnp.zeros(dim),
        jnp.full(dim, 0.5),
        jnp.zeros(dim),
        exp.policy.init_normalizer(),
        jax.random.PRNGKey(3),
        jnp.zeros((), jnp.int32),
    )
    new_state, metrics = jax.jit(algo.train_step)(state)

    # Recompute by hand: same candidates, three halvings of the gap to the target, elites by score.
    _, _, sample_key, _ = jax.random.split(state.key, 4)
    candidates = state.mean + state.std * jax.random.normal(sample_key, (6, dim))
    refined = target + (candidates - target) * 0.5**3
    scores = -jnp.sum((refined - target) ** 2, axis=1)
    elite = refined[jnp.argsort(-scores)[:2]]
    np.testing.assert_allclose(new_state.mean, elite.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state.std, jnp.sqrt(jnp.mean((elite - state.mean) ** 2, axis=0)), rtol=1e-5)
    np.testing.assert_allclose(metrics["return"], scores.max(), rtol=1e-5)
    np.testing.assert_allclose(
        new_state.best, refined[jnp.argmax(scores)], rtol=1e-5, atol=1e-6
    )  # what `deploy: best` delivers
    assert int(new_state.iteration) == 1


def test_papg_keeps_the_best_of_its_runs(fast_cfg):
    exp = build_experiment(fast_cfg("algo=papg", "algo.runs=4", "algo.steps_per_iteration=3", "algo.starts_per_step=1"))
    algo = exp.algo
    state, metrics = jax.jit(algo.train_step)(algo.init(jax.random.PRNGKey(0)))
    best = int(jnp.argmax(state.scores))
    params, _ = algo.policy_params(state)
    np.testing.assert_array_equal(ravel_pytree(params)[0], state.params[best])
    assert float(metrics["return"]) == float(state.scores.max())
    assert len(set(np.asarray(state.scores).tolist())) == 4  # the runs really are independent


def test_nonfinite_gradients_are_skipped_counted_and_never_applied(fast_cfg):
    exp = build_experiment(
        fast_cfg(
            "algo=papg",
            "algo.runs=3",
            "algo.steps_per_iteration=4",
            "algo.starts_per_step=1",
            "env.inject_nan_after=5",
            "algo.update_normalizer=never",
        )
    )
    algo = exp.algo
    state = algo.init(jax.random.PRNGKey(0))
    new_state, metrics = jax.jit(algo.train_step)(state)
    np.testing.assert_array_equal(new_state.params, state.params)
    assert int(metrics["nonfinite_grads"]) == 3 * 4
    assert int(metrics["nonfinite_streak_min"]) == 4


def test_run_stops_with_a_clear_message_after_the_limit(fast_cfg, tmp_path):
    cfg = fast_cfg(
        "algo=papg",
        "algo.runs=2",
        "algo.steps_per_iteration=2",
        "algo.starts_per_step=1",
        "env.inject_nan_after=5",
        "algo.grad.max_consecutive_nonfinite=3",
        "iterations=4",
        "chunk_iterations=1",
    )
    with pytest.raises(TrainingDiverged, match=r"iteration 2: .*hardware.enable_x64=true.*algo.grad.truncation"):
        train(cfg, tmp_path)
    rows = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and '"nonfinite_grads": 8' in rows[-1]  # 2 seeds x 2 runs x 2 steps


@pytest.mark.slow
def test_ce_apg_beats_cem_at_equal_env_steps_on_the_acrobot(fast_cfg, tmp_path):
    """~720k env steps per seed, 2 seeds, analytic backend (~2 min on 2 cores). Measured on the authors'
    acrobot: CE-APG [1085, 1377] vs CEM [317, 702] (CEM's 58 iterations include one episode of its mean each).
    On the cart-pole at this budget CE-APG does not win ([-1315, -3294] vs [-2106, -2003])."""
    common = ("env=acrobot", "env.episode_length=500", "eval.episodes=8", "checkpoint.enabled=false")
    ce_apg = train(
        fast_cfg(
            *common,
            "algo=ce_apg",
            "iterations=6",
            "chunk_iterations=6",
            "algo.population=6",
            "algo.elites=2",
            "algo.apg_steps=40",
            "algo.starts_per_step=1",
        ),
        tmp_path / "ce_apg",
    )
    cem = train(fast_cfg(*common, "algo=cem", "iterations=58", "chunk_iterations=58"), tmp_path / "cem")
    assert abs(ce_apg["env_steps_per_seed"] - cem["env_steps_per_seed"]) / cem["env_steps_per_seed"] < 0.01
    ce_apg_seeds, cem_seeds = ce_apg["final_return"]["per_seed"], cem["final_return"]["per_seed"]
    assert min(ce_apg_seeds) > max(cem_seeds), (ce_apg_seeds, cem_seeds)  # every CE-APG seed beats every CEM seed


# --- gradients against hand-built references, and a learning test a flipped loss sign fails ---


class LinearScalar(Env):
    """x' = a x + u, reward x' (paid after the step): every gradient has a closed form."""

    def __init__(self, a: float):
        self.a = a

    def reset(self, rng):
        x = jnp.ones(())
        return State(pipeline_state=x, obs=x[None], reward=jnp.zeros(()), done=jnp.zeros(()), info={})

    def step(self, state, action):
        x = self.a * state.pipeline_state + action[0]
        return state.replace(pipeline_state=x, obs=x[None], reward=x)

    observation_size = property(lambda self: 1)
    action_size = property(lambda self: 1)
    backend = property(lambda self: "test")


class ConstantAction(nn.Module):
    """u = w1 + 2 w2, whatever the observation: dR/dw2 = 2 dR/dw1."""

    @nn.compact
    def __call__(self, carry, obs):
        w = self.param("w", nn.initializers.zeros, (2,))
        return carry, (w[0] + 2.0 * w[1])[None]


CONSTANT = Policy("constant", ConstantAction(), observation_size=1, action_size=1)
A, T = 1.1, 12


def hand_gradient(truncation=None, step_clip=None) -> float:
    """dR/du for a constant action u, by the chain rule written out step by step.

    Backward from the last reward: mu_t, the cotangent of x_t, is 1 (x_t is the reward of step t-1) plus
    what flows back from step t: a * mu_{t+1}, which per-step clipping scales to norm <= step_clip, and
    truncation cuts to 0 at every step t with t % truncation == 0. The action of step t-1 moves x_t by 1,
    so dR/du = sum_t mu_t."""
    mu, total = 1.0, 1.0  # mu_T
    for t in range(T - 1, 0, -1):
        back = A * mu
        if step_clip is not None:
            back *= min(1.0, step_clip / abs(back))
        if truncation is not None and t % truncation == 0:
            back = 0.0
        mu = 1.0 + back
        total += mu
    return total


@pytest.mark.parametrize("truncation,step_clip", [(None, None), (4, None), (None, 2.5), (5, 3.0)])
def test_truncation_and_per_step_clipping_match_the_chain_rule_by_hand(truncation, step_clip):
    env = LinearScalar(A)
    params, normalizer = CONSTANT.init(jax.random.PRNGKey(0)), CONSTANT.init_normalizer()
    options = GradientOptions(truncation=truncation, step_clip=step_clip)
    grad = jax.grad(lambda p: episode_return(env, CONSTANT, p, normalizer, env.reset(None), T, options))(params)
    expected = hand_gradient(truncation, step_clip)
    np.testing.assert_allclose(grad["params"]["w"], [expected, 2.0 * expected], rtol=1e-5)
    if truncation or step_clip:
        assert expected < hand_gradient() - 1.0  # the reference itself is not the untouched gradient


@pytest.mark.parametrize("clip_value,clip_norm", [(None, None), (None, 10.0), (20.0, None), (20.0, 25.0)])
def test_clip_value_then_clip_norm_match_a_hand_computation(clip_value, clip_norm):
    env = LinearScalar(A)
    grad_config = GradientConfig(clip_value=clip_value, clip_norm=clip_norm)
    core = APGCore(env, CONSTANT, grad_config, starts_per_step=1, episode_length=T)
    flat = jnp.zeros(core.num_params)
    _, _, trace = core.gradient_step(
        flat, core.optimizer(1e-3).init(flat), CONSTANT.init_normalizer(), jax.random.PRNGKey(0), 1e-3
    )
    grad = -hand_gradient() * np.array([1.0, 2.0])  # of the loss, -return
    clipped = np.clip(grad, -clip_value, clip_value) if clip_value else grad
    if clip_norm:
        clipped = clipped * min(1.0, clip_norm / np.linalg.norm(clipped))
    np.testing.assert_allclose(trace.grad_norm, np.linalg.norm(grad), rtol=1e-5)
    np.testing.assert_allclose(trace.clipped_grad_norm, np.linalg.norm(clipped), rtol=1e-5)
    assert np.linalg.norm(grad) > 40.0  # every clip above is active


# Measured on the acrobot: 56.1 -> 65.2 after 15 steps; with the loss sign flipped in
# APGCore.gradient_step, 56.1 -> 16.6.
HORIZON, GAIN = 100, 4.0


def test_a_few_apg_steps_raise_the_return_on_the_acrobot(acrobot_setup):
    """15 Adam steps on minus the mean return over 4 random starts raise the return of 8 held-out starts.
    A flipped loss sign (ascending the loss) lowers it instead and fails this test."""
    env, policy, flat, unravel, normalizer, _ = acrobot_setup
    core = APGCore(env, policy, GradientConfig(), starts_per_step=4, episode_length=HORIZON)
    held_out = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(7), 8))
    mean_return = jax.jit(lambda p: core.rollouts(p, normalizer, held_out)[0])
    learning_rate = 3e-3
    refine = jax.jit(
        lambda p, k: core.refine(p, core.optimizer(learning_rate).init(p), normalizer, k, 15, learning_rate)
    )
    refined, _, trace = refine(flat, jax.random.PRNGKey(8))
    before, after = float(mean_return(flat)), float(mean_return(refined))
    assert int(jnp.sum(trace.nonfinite)) == 0
    assert after > before + GAIN, (before, after)


# --- the authors' protocols (sgillen/apg), the defaults, beside diffrl's stronger variants ---


def _count(normalizer) -> float:
    return float(count_as_float(normalizer.count))


def test_papg_runs_share_one_init_and_its_normaliser_is_frozen_after_one_rollout(fast_cfg):
    """The authors' PAPG: every run is one default init + N(0, 0.01^2); the normaliser folds in one episode
    (50 steps here) of that init at the start and never changes. diffrl's variant: independent inits, a
    normaliser fed by every run's rollouts each iteration."""
    overrides = ("algo=papg", "algo.runs=8", "algo.steps_per_iteration=2", "algo.starts_per_step=1")
    algo = build_experiment(fast_cfg(*overrides)).algo
    state = algo.init(jax.random.PRNGKey(0))
    spread = np.asarray(state.params[1:] - state.params[0])  # differences of two N(0, 0.01^2) draws
    np.testing.assert_allclose(spread.std(), 0.01 * np.sqrt(2), rtol=0.05)
    assert _count(state.normalizer) == 50
    new_state, _ = jax.jit(algo.train_step)(state)
    for new, old in zip(jax.tree.leaves(new_state.normalizer), jax.tree.leaves(state.normalizer), strict=True):
        np.testing.assert_array_equal(new, old)

    variant = build_experiment(fast_cfg(*overrides, "algo.init=independent", "algo.update_normalizer=every_iteration"))
    state = variant.algo.init(jax.random.PRNGKey(0))
    assert np.asarray(state.params[1:] - state.params[0]).std() > 0.1 and _count(state.normalizer) == 0
    new_state, _ = jax.jit(variant.algo.train_step)(state)
    assert _count(new_state.normalizer) == 8 * 50  # one episode of each run


def test_ce_apg_folds_one_rollout_of_the_mean_into_the_normaliser_each_iteration(fast_cfg):
    overrides = ("algo=ce_apg", "algo.population=4", "algo.elites=2", "algo.apg_steps=2", "algo.score_window=1")
    algo = build_experiment(fast_cfg(*overrides)).algo
    state = algo.init(jax.random.PRNGKey(0))
    step = jax.jit(algo.train_step)
    for iteration in (1, 2):
        state, _ = step(state)
        assert _count(state.normalizer) == iteration * 50  # one 50-step episode per iteration


def test_the_swingup_algorithms_default_to_the_authors_normaliser():
    """Variance prior 1 and inputs clipped to +-5 (Brax 0.0.10's normalization.py) for CE-APG, PAPG and CEM."""
    for algo in ("ce_apg", "papg", "cem"):
        exp = build_experiment(compose_train(f"algo={algo}", "debug=smoke"))
        assert (exp.policy.normalizer.variance_prior, exp.policy.normalizer.clip) == (1.0, 5.0), algo
