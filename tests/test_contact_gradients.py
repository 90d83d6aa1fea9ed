"""Gradients through contact: ``jax.grad`` of a short return of MJX's hopper standing on its foot, against
central differences in float64, with the same contacts active at every step of every perturbed rollout
(a difference across a contact switch measures the switch, not the gradient). The step is MJX's with the
solver diffrl gives it for differentiation (one iteration, 4 line-search steps: ``MJX_GRADIENT_SOLVER``).

The hopper is set down from Brax's start pose onto the floor (its foot 1 mm in the ground, at rest), so
its foot touches the floor from the first step; a linear policy (one Dense layer, tanh-squashed
as every diffrl policy) drives it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from diffrl.envs import make_env
from diffrl.gradients import precision, unit_directions
from diffrl.networks import make_mlp_policy
from diffrl.rollout import episode

PENETRATION = 1e-3  # how deep the foot starts in the floor (m)


def standing_start(env, key: jax.Array):
    """MJX's hopper lowered from a reset pose until its foot is ``PENETRATION`` deep, at rest (traceable)."""
    brax_env = env.env  # the Brax task inside diffrl's wrapper
    reset = env.reset(key)
    height = jnp.min(reset.pipeline_state.contact.dist)  # foot above the floor
    qpos = reset.pipeline_state.qpos.at[1].add(-(height + PENETRATION))  # rootz
    pipeline_state = brax_env.pipeline_init(qpos, jnp.zeros_like(reset.pipeline_state.qvel))
    return reset.replace(pipeline_state=pipeline_state, obs=brax_env._get_obs(pipeline_state))


def return_and_contacts(env, policy, unravel, steps: int):
    """(flat parameters, start key) -> (the ``steps``-step return from the standing start, which contacts are
    active (penetrating) at each step). The start is built inside, so one program compiles."""
    normalizer = policy.init_normalizer()

    def run(flat, key):
        start = standing_start(env, key)
        trajectory = episode(
            env, policy, unravel(flat), normalizer, start, steps, record_pipeline_state=lambda s: s.contact.dist < 0
        )
        return jnp.sum(trajectory.reward), trajectory.pipeline_state

    return run


def linear_policy(env, key: jax.Array, scale: float):
    policy = make_mlp_policy(env.observation_size, env.action_size, hidden_sizes=())
    params = jax.tree.map(lambda x: scale * jax.random.normal(key, x.shape, x.dtype), policy.init(key))
    flat, unravel = ravel_pytree(params)
    return policy, flat, unravel


def test_the_two_step_gradient_through_the_hoppers_foot_contact_is_finite_and_nonzero():
    env = make_env("hopper", "mjx")
    policy, flat, unravel = linear_policy(env, jax.random.PRNGKey(1), 0.1)
    run = return_and_contacts(env, policy, unravel, 2)
    (value, active), grad = jax.jit(jax.value_and_grad(run, has_aux=True))(flat, jax.random.PRNGKey(0))
    assert np.all(np.any(active, axis=-1)), active  # the foot touches the floor at both steps
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad)) and np.linalg.norm(grad) > 1e-3, (value, grad)


@pytest.mark.slow
def test_gradients_through_contact_match_central_differences_in_float64():
    """12 steps, 3 random unit directions, epsilon 1e-6: relative error <= 1e-3. Measured: return 7.2607,
    directional derivatives -2.22344562, 6.9716736, 7.31747139 by both (agreeing to all 9 printed digits),
    a foot contact active at every step and the same at +-epsilon (20 min with the fast test, loaded 2 cores)."""
    steps, directions, epsilon = 12, 3, 1e-6
    with precision("float64"):
        env = make_env("hopper", "mjx")
        policy, flat, unravel = linear_policy(env, jax.random.PRNGKey(1), 0.1)
        flat, key = flat.astype(jnp.float64), jax.random.PRNGKey(0)
        run = return_and_contacts(env, policy, unravel, steps)
        (value, active), grad = jax.jit(jax.value_and_grad(run, has_aux=True))(flat, key)
        u = unit_directions(jax.random.PRNGKey(2), directions, flat.shape[0], flat.dtype)
        perturbed = jnp.concatenate([flat + epsilon * u, flat - epsilon * u])
        values, perturbed_active = jax.jit(jax.vmap(run, in_axes=(0, None)))(perturbed, key)
    assert np.asarray(grad).dtype == np.float64
    active = np.asarray(active)
    assert np.all(np.any(active, axis=-1)), active  # the foot touches the floor at every step
    assert np.all(np.asarray(perturbed_active) == active[None])  # through the same contacts at +-epsilon
    values = np.asarray(values)
    fd = (values[:directions] - values[directions:]) / (2 * epsilon)
    analytic = np.asarray(u) @ np.asarray(grad)
    print(f"return {float(value):.6f}; analytic {analytic}; central differences {fd}")
    np.testing.assert_allclose(analytic, fd, rtol=1e-3)
    assert np.all(np.abs(analytic) > 1e-6 * np.linalg.norm(grad))  # directions the return does depend on
