"""`diffrl gradients`: the finite-difference check passes in float64 on a smooth task and fails on a gradient
1 % wrong, one program gives the exact gradient at every horizon, and the command writes its report with the
horizons asked for."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from diffrl.envs import make_env
from diffrl.gradients import (
    finite_difference_check,
    gradient_curve,
    horizons_up_to,
    policy_return,
    precision,
    reset_batch,
)
from diffrl.networks import make_mlp_policy

from conftest import run_diffrl

# The CLI run below: acrobot on its closed form (compiles in seconds), a small MLP, short horizons.
TINY = (
    "env=acrobot",
    "policy.hidden_sizes=[8]",
    "num_envs=4",
    "horizon=4",
    "repeats=1",
    "num_starts=4",
    "curve.horizons=[1,2,4,8]",
    "finite_differences.horizon=8",
    "variance.horizon=8",
)


def test_horizons_are_powers_of_two_up_to_the_episode_length():
    assert horizons_up_to(1) == [1]
    assert horizons_up_to(8) == [1, 2, 4, 8]
    assert horizons_up_to(1000) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]


def test_finite_differences_pass_in_float64_and_the_curve_is_exact_at_each_horizon():
    with precision("float64"):
        env = make_env("acrobot", "analytic")
        policy = make_mlp_policy(env.observation_size, env.action_size, hidden_sizes=(8,))
        params = jax.tree.map(lambda x: x.astype(jnp.float64), policy.init(jax.random.PRNGKey(0)))
        normalizer = policy.init_normalizer()
        flat, unravel = ravel_pytree(params)
        starts = reset_batch(env, jax.random.PRNGKey(1), 3)
        horizons = [1, 4, 8]
        curve, _ = gradient_curve(env, policy, flat, unravel, normalizer, starts, horizons)
        assert curve["grads"].dtype == np.float64 and curve["grads"].shape == (3, 3, flat.shape[0])

        # The horizon-h entry of the one program is the gradient of the plain h-step return.
        def mean_return(flat, h):
            returns = jax.vmap(lambda s: policy_return(env, policy, unravel(flat), normalizer, s, h))(starts)
            return jnp.mean(returns)

        value, reference = jax.jit(jax.value_and_grad(mean_return), static_argnums=1)(flat, 4)
        np.testing.assert_allclose(curve["grads"][1].mean(axis=0), reference, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(curve["returns"][1].mean(), value, rtol=1e-12)

        gradient = curve["grads"][2].mean(axis=0)
        check = lambda gradient: finite_difference_check(
            env,
            policy,
            flat,
            unravel,
            normalizer,
            starts,
            gradient,
            horizon=8,
            directions=3,
            epsilon=1e-6,
            tolerance=1e-5,
            key=jax.random.PRNGKey(2),
        )
        right = check(gradient)
        # A gradient 1 % wrong, in its length or in its direction (1 % of its norm added to one entry), fails.
        too_long = check(1.01 * gradient)
        bent_gradient = gradient.copy()
        bent_gradient[np.argmax(np.abs(gradient))] += 0.01 * np.linalg.norm(gradient)
        bent = check(bent_gradient)
    # Measured 1e-10..3e-8 on the swing-ups (docs/gradients.md); the tolerance is 1e-5.
    assert right["passed"], right
    assert right["max_relative_error"] < 1e-6
    assert not too_long["passed"] and 0.009 < too_long["max_relative_error"] < 0.011, too_long
    assert not bent["passed"] and bent["max_relative_error"] > 1e-3, bent


def test_cli_writes_the_report_with_the_requested_horizons(tmp_path):
    proc = run_diffrl("gradients", *TINY, cwd=tmp_path, timeout=240)
    assert "run directory:" in proc.stdout
    (run_dir,) = (tmp_path / "outputs" / "gradients").glob("*/*_acrobot_analytic")
    for name in ("report.md", "gradients.png", "gradients.json"):
        assert (run_dir / name).stat().st_size > 0, name
    report = json.loads((run_dir / "gradients.json").read_text())
    results = report["results"]
    assert results["requested_horizons"] == [1, 2, 4, 8]
    for name in ("float32", "float64"):
        curve = results["curve"][name]
        assert set(curve["horizons"]) >= {1, 2, 4, 8}
        assert all(curve["finite"])
    assert results["finite_differences"]["passed"]
    assert results["speed"]["grad_finite"]
    assert report["command"].startswith("diffrl gradients env=acrobot") and report["versions"]["jax"]
    text = (run_dir / "report.md").read_text()
    assert "**PASS**" in text and "| 8 |" in text


@pytest.mark.parametrize(
    "override,expected",
    [
        (("env=ant", "env.backend=analytic"), "valid backends for ant: generalized, mjx, spring, positional"),
        (("env=nope",), "unknown env 'nope'; valid choices:"),
    ],
)
def test_bad_env_or_backend_is_one_line(tmp_path, override, expected):
    proc = run_diffrl("gradients", *override, cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
