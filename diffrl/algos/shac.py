"""SHAC (Xu et al., ICLR 2022) and BPTT: short-horizon actor-critic through the simulator.

Per iteration, on ``num_envs`` continuing envs (the batch persists across iterations and auto-resets):
1. roll out ``horizon`` steps of the stochastic policy (reparameterised, so the return is
   differentiable through the policy and the physics); observations are normalised by a copy of the
   running statistics frozen for the window;
2. actor objective: each episode segment's discounted rewards plus the discounted target-critic value
   where the segment ends (0 after a termination, V(pre-reset observation) after a time-out, V at the
   window's end), summed and divided by horizon x num_envs (``diffrl.algos.returns``); one Adam step
   (betas 0.7, 0.95; gradient-norm clip; learning rate decaying linearly to ``min_learning_rate``) on
   its negative. The gradient stops at the window's start: the carry is the previous window's end;
3. critic: TD(lambda) targets of the window, ``critic_iterations`` passes over ``critic_minibatches``
   contiguous minibatches (the authors' order; ``critic_shuffle`` shuffles) of mean-squared error; then the
   target critic moves by Polyak averaging (target = alpha * target + (1 - alpha) * critic);
4. the normaliser folds in the window's (finite) observations.

The learning rates decay over ``schedule_iterations`` (the paper's iteration count), not over the run, so a
shorter run is the beginning of the paper's run. BPTT is the same machinery with one window over the whole
episode and no critic (``critic: false``). A non-finite actor or critic update is skipped
(``optax.apply_if_finite``), counted and reported; an env whose state turns non-finite ends its episode
there (the SHAC tasks end it: ``diffrl/envs/shac_locomotion.py``), is restarted, and is counted.

``algo.grad``: ``truncation``, ``step_clip``, ``checkpoint`` shape the window's rollout; ``clip_value``
clips each gradient entry before the norm clip ``grad_clip``; ``max_consecutive_nonfinite`` stops the run;
``clip_norm`` is refused (``grad_clip`` is SHAC's norm clip).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env
from flax import struct

from diffrl.algos.apg import GradientConfig
from diffrl.algos.returns import short_horizon_objective, td_lambda_targets
from diffrl.networks import make_value_network
from diffrl.networks.base import NormalizerState, Params, Policy
from diffrl.rollout import RolloutCarry, diverged, start, terminations, unroll

_NEVER_APPLY_NONFINITE = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class SHACConfig:
    num_envs: int = 64
    horizon: int = 32  # steps per window (BPTT: the episode length)
    gamma: float = 0.99
    lam: float = 0.95  # TD(lambda)
    actor_learning_rate: float = 2e-3
    critic_learning_rate: float = 2e-3
    min_learning_rate: float = 1e-5  # both decay linearly to this over schedule_iterations
    schedule_iterations: int | None = None  # the schedule's length (None: the run's iterations)
    betas: tuple[float, float] = (0.7, 0.95)
    grad_clip: float = 1.0  # global norm, actor and critic
    critic: bool = True  # false: BPTT (no critic, no bootstrap)
    critic_iterations: int = 16
    critic_minibatches: int = 4
    target_alpha: float = 0.2  # target = alpha * target + (1 - alpha) * critic
    critic_hidden_sizes: tuple[int, ...] = (64, 64)
    critic_activation: str = "elu"
    critic_layer_norm: bool = True
    critic_initializer: str = "orthogonal"  # the authors' critic: orthogonal, gain sqrt(2), zero bias
    critic_shuffle: bool = False  # the authors' minibatches are contiguous slices of the window
    episode_length: int = 1000  # the time limit of the envs' episodes
    iterations: int = 500  # the run's length (set by the runner)
    grad: GradientConfig = GradientConfig()

    def __post_init__(self):
        if self.grad.clip_norm is not None:
            raise ValueError("SHAC clips the gradient norm with algo.grad_clip; algo.grad.clip_norm must be null")
        if self.horizon > self.episode_length:
            raise ValueError(f"horizon {self.horizon} exceeds the episode length {self.episode_length}")
        if (self.num_envs * self.horizon) % self.critic_minibatches:
            raise ValueError(
                f"critic_minibatches={self.critic_minibatches} must divide num_envs x horizon = "
                f"{self.num_envs * self.horizon}"
            )


@struct.dataclass
class SHACState:
    actor: Params
    critic: Params
    target_critic: Params
    actor_opt: Any
    critic_opt: Any
    normalizer: NormalizerState
    envs: RolloutCarry  # [num_envs]: the continuing env batch
    episode_return: jax.Array  # [num_envs] return so far of each env's current episode
    episode_length: jax.Array  # [num_envs] its steps so far
    last_return: jax.Array  # mean return of the latest episodes to finish (NaN before any did)
    key: jax.Array
    iteration: jax.Array


def linear_decay(iteration: jax.Array, iterations: int, start: float, end: float) -> jax.Array:
    """``start`` at iteration 0, ``end`` reached at ``iterations`` (the authors' linear schedule)."""
    return start + (end - start) * jnp.minimum(iteration / max(iterations, 1), 1.0)


def contiguous_or_shuffled(key: jax.Array, size: int, minibatches: int, shuffle: bool) -> jax.Array:
    """Row indices of each minibatch [minibatches, size / minibatches]: consecutive slices (the authors'
    ``CriticDataset``), or a random permutation."""
    order = jax.random.permutation(key, size) if shuffle else jnp.arange(size)
    return order.reshape(minibatches, size // minibatches)


def finished_episodes(running, rewards: jax.Array, done: jax.Array):
    """Carries each env's running (return, length) through a window's rewards and ends ([T, num_envs]);
    returns the running values after it and the sum / count / length sum of the episodes that ended with a
    finite return (a diverged env's last reward is NaN: its episode is not counted, as in APG's metrics)."""

    def step(carry, x):
        total, length = carry
        reward, end = x
        total, length, end = total + reward, length + 1.0, end > 0
        counted = end & jnp.isfinite(total)
        out = (jnp.sum(jnp.where(counted, total, 0.0)), jnp.sum(jnp.where(counted, length, 0.0)), jnp.sum(counted))
        return (jnp.where(end, 0.0, total), jnp.where(end, 0.0, length)), out

    running, (sums, lengths, counts) = jax.lax.scan(step, running, (rewards, done))
    return running, {"sum": jnp.sum(sums), "length_sum": jnp.sum(lengths), "count": jnp.sum(counts)}


def nonfinite_streak(opt_state) -> jax.Array:
    """Actor updates skipped in a row (``optax.apply_if_finite``'s counter; 0 for an optimiser without one)."""
    return getattr(opt_state, "notfinite_count", jnp.zeros((), jnp.int32))


def polyak(target: Params, online: Params, alpha: float) -> Params:
    return jax.tree.map(lambda t, o: alpha * t + (1.0 - alpha) * o, target, online)


class SHAC:
    name = "shac"

    def __init__(self, env: Env, policy: Policy, config: SHACConfig):
        self.env, self.policy, self.config = env, policy, config
        self.critic_net = make_value_network(
            config.critic_hidden_sizes, config.critic_activation, config.critic_layer_norm, config.critic_initializer
        )
        b1, b2 = config.betas
        value_clip = [optax.clip(config.grad.clip_value)] if config.grad.clip_value is not None else []
        guarded = lambda: optax.apply_if_finite(
            optax.chain(*value_clip, optax.clip_by_global_norm(config.grad_clip), optax.scale_by_adam(b1=b1, b2=b2)),
            max_consecutive_errors=_NEVER_APPLY_NONFINITE,
        )
        self.actor_optimizer, self.critic_optimizer = guarded(), guarded()

    @property
    def env_steps_per_iteration(self) -> int:
        return self.config.num_envs * self.config.horizon

    def init(self, key: jax.Array) -> SHACState:
        c = self.config
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        actor = self.policy.init(actor_key)
        critic = self.critic_net.init(critic_key, jnp.zeros(self.policy.observation_size))
        envs = jax.vmap(lambda k: start(self.env, self.policy, k))(jax.random.split(env_key, c.num_envs))
        return SHACState(
            actor=actor,
            critic=critic,
            target_critic=critic,
            actor_opt=self.actor_optimizer.init(actor),
            critic_opt=self.critic_optimizer.init(critic),
            normalizer=self.policy.init_normalizer(),
            envs=envs,
            episode_return=jnp.zeros(c.num_envs),
            episode_length=jnp.zeros(c.num_envs),
            last_return=jnp.full((), jnp.nan),
            key=key,
            iteration=jnp.zeros((), jnp.int32),
        )

    def policy_params(self, state: SHACState) -> tuple[Params, NormalizerState]:
        return state.actor, state.normalizer

    # --- the actor ------------------------------------------------------------------------------
    def window(self, actor: Params, target_critic: Params, normalizer: NormalizerState, envs: RolloutCarry):
        """One window on every env: (objective, (envs after it, time-major trajectory, next values))."""
        c = self.config
        run = lambda carry: unroll(
            self.env,
            self.policy,
            actor,
            normalizer,
            carry,
            c.horizon,
            episode_length=c.episode_length,
            auto_reset=True,
            deterministic=False,
            gradients=c.grad.rollout_options,
        )
        envs, trajectory = jax.vmap(run)(envs)
        trajectory = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), trajectory)  # [T, num_envs, ...]
        next_values = self.next_values(target_critic, normalizer, trajectory)
        objective = short_horizon_objective(trajectory.reward, next_values, trajectory.done, c.gamma)
        return objective, (envs, trajectory, next_values)

    def next_values(self, target_critic: Params, normalizer: NormalizerState, trajectory) -> jax.Array:
        """V(state reached by each step): 0 after a termination (a diverged, non-finite env's end is one: nothing
        follows), the critic's value of the pre-reset observation after a time-out, and of the next one otherwise."""
        if not self.config.critic:
            return jnp.zeros_like(trajectory.reward)
        observed = self.policy.normalize(trajectory.next_observation, normalizer)
        values = self.critic_net.apply(target_critic, observed)
        return jnp.where(terminations(trajectory), 0.0, values)

    # --- the critic -----------------------------------------------------------------------------
    def fit_critic(self, critic: Params, opt_state, observations: jax.Array, targets: jax.Array, lr, key):
        """``critic_iterations`` passes over the minibatches (time-major rows); returns (critic, optimizer, mean loss
        of the last pass, non-finite updates skipped)."""
        c = self.config
        size = observations.shape[0]

        def loss_fn(params, obs, target):
            # rows of an env that broke (non-finite target or observation) are left out, as the authors
            # zero a NaN's gradient; the rest of the minibatch still trains
            finite = jnp.isfinite(target) & jnp.all(jnp.isfinite(obs), axis=-1)
            error = self.critic_net.apply(params, jnp.where(finite[:, None], obs, 0.0)) - jnp.where(finite, target, 0.0)
            return jnp.sum(jnp.where(finite, error**2, 0.0)) / jnp.maximum(jnp.sum(finite), 1)

        def minibatch(carry, index):
            params, opt = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, observations[index], targets[index])
            updates, opt = self.critic_optimizer.update(grads, opt, params)
            params = optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))
            skipped = (~jnp.isfinite(optax.global_norm(grads))).astype(jnp.int32)
            return (params, opt), (loss, skipped)

        def one_pass(carry, pass_key):
            order = contiguous_or_shuffled(pass_key, size, c.critic_minibatches, c.critic_shuffle)
            return jax.lax.scan(minibatch, carry, order)

        (critic, opt_state), (losses, skipped) = jax.lax.scan(
            one_pass, (critic, opt_state), jax.random.split(key, c.critic_iterations)
        )
        return critic, opt_state, jnp.mean(losses[-1]), jnp.sum(skipped)

    # --- one iteration --------------------------------------------------------------------------
    def train_step(self, state: SHACState) -> tuple[SHACState, dict[str, jax.Array]]:
        c = self.config
        key, critic_key = jax.random.split(state.key)
        normalizer = state.normalizer  # frozen for the window
        schedule = c.schedule_iterations or c.iterations
        actor_lr = linear_decay(state.iteration, schedule, c.actor_learning_rate, c.min_learning_rate)
        critic_lr = linear_decay(state.iteration, schedule, c.critic_learning_rate, c.min_learning_rate)

        objective_and_aux = lambda actor: self.window(actor, state.target_critic, normalizer, state.envs)
        (objective, (envs, trajectory, next_values)), grads = jax.value_and_grad(objective_and_aux, has_aux=True)(
            state.actor
        )
        grads = jax.tree.map(jnp.negative, grads)  # Adam descends the negative objective
        grad_norm = optax.global_norm(grads)
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(objective), g, jnp.nan), grads)
        updates, actor_opt = self.actor_optimizer.update(grads, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, jax.tree.map(lambda u: -actor_lr * u, updates))
        actor_skipped = (~jnp.isfinite(optax.global_norm(grads))).astype(jnp.int32)

        trajectory, next_values = jax.lax.stop_gradient((trajectory, next_values))
        envs = jax.lax.stop_gradient(envs)  # the next window starts here; no gradient crosses windows
        critic, target_critic, critic_opt = state.critic, state.target_critic, state.critic_opt
        critic_loss, critic_skipped = jnp.zeros(()), jnp.zeros((), jnp.int32)
        observations = self.policy.normalize(trajectory.observation, normalizer)
        if c.critic:
            targets = td_lambda_targets(trajectory.reward, next_values, trajectory.done, c.gamma, c.lam)
            flat = lambda x: x.reshape(-1, *x.shape[2:])
            critic, critic_opt, critic_loss, critic_skipped = self.fit_critic(
                critic, critic_opt, flat(observations), flat(targets), critic_lr, critic_key
            )
            target_critic = polyak(state.target_critic, critic, c.target_alpha)
        normalizer = self.policy.update_normalizer(state.normalizer, trajectory.observation)

        (episode_return, episode_length), finished = finished_episodes(
            (state.episode_return, state.episode_length), trajectory.reward, trajectory.done
        )
        new_state = SHACState(
            actor=actor,
            critic=critic,
            target_critic=target_critic,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            normalizer=normalizer,
            envs=envs,
            episode_return=episode_return,
            episode_length=episode_length,
            last_return=jnp.where(
                finished["count"] > 0, finished["sum"] / jnp.maximum(finished["count"], 1), state.last_return
            ),
            key=key,
            iteration=state.iteration + 1,
        )
        values = self.critic_net.apply(critic, observations) if c.critic else jnp.zeros(())
        metrics = {
            "return": new_state.last_return,
            "actor_objective": objective,
            "critic_loss": critic_loss,
            "value_mean": jnp.mean(values),
            "grad_norm": grad_norm,
            "actor_learning_rate": actor_lr,
            "nonfinite_grads": actor_skipped,
            "nonfinite_critic_updates": critic_skipped,
            "nonfinite_envs": jnp.sum(diverged(trajectory.next_observation)),
            "nonfinite_stalled": (nonfinite_streak(actor_opt) >= c.grad.max_consecutive_nonfinite).astype(jnp.int32),
            "train_episode_return_sum": finished["sum"],
            "train_episode_return_count": finished["count"],
            "train_episode_length_sum": finished["length_sum"],
            "train_episode_length_count": finished["count"],
        }
        return new_state, metrics
