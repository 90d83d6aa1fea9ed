"""ILD (Chen, Ma, Xu 2022): imitation through differentiable physics, and behaviour cloning (BC).

Both learn from expert demonstrations (``diffrl.demo_file``: states, observations and actions of a few
episodes of an expert, best first). The defaults are what the authors' code ran (``sail-sg/ILD``,
``policy/brax_task/train_on_policy.py``) but for the deviations ``docs/ild.md`` names with why ("How this
differs"); the four that change what ILD learns from: learning rate 1e-4, fallen states masked rather than
restarted, the observation normaliser fixed at the demos' statistics, the distance's statistics folded in as
constants.

ILD, per iteration:
1. roll ``num_envs`` episodes of ``episode_length`` steps out from ``num_envs`` start states, sampling the
   tanh-Normal policy with reparameterised noise, so each state is a differentiable function of the parameters
   through the simulator. ``start=resets`` (the authors'): N random resets drawn once per seed and kept;
   ``start=demo``: every rollout from the best demo's own start state;
2. the trajectory distance (``algo.loss``: two-way Chamfer, or time-aligned Euclidean L2;
   ``diffrl.algos.trajectory_distance``) between each rollout's physics states and the demos' (the nearest of
   ``algo.demos``), both normalised by running statistics of the states and clipped to +-``state_clip``. The
   state a termination leaves never enters it and passes no gradient; after it, ``after_termination=mask``
   drops the rest of the rollout, ``restart`` (the authors' auto-reset) restarts it from its start state;
3. loss (``algo.squash``): tanh of the batch-mean distance (the authors' Chamfer loss), no tanh (their L2
   loss), or the mean of per-rollout tanh (diffrl's earlier choice);
4. one Adam step, the gradient flowing back through time as the authors let it: each step's state cotangent
   clipped to norm ``grad.step_clip`` (1) over the whole batch (``grad.step_clip_scope``), cut every
   ``grad.truncation`` (10) steps, the update clipped to
   global norm ``grad.clip_norm`` (0.3); a step whose backward pass is not finite passes no gradient
   (``diffrl.rollout.finite_cotangent``; counted: ``nonfinite_cut_steps``), and an update still not finite is
   skipped and counted (``nonfinite_grads``);
5. the state statistics fold in the rollouts' states.
Before the first iteration, ``warmup`` runs ``bc_steps`` (1000) steps of behaviour cloning on the demos. The
policy's observation normaliser holds the demos' statistics and stays fixed (docs/ild.md: why).

BC (``bc_loss=sampled``, the authors'): the policy's *sampled* tanh-Normal action regressed onto the demo's
action at the demo's observations, squared error summed over action dims, full batch, Adam, global-norm clip
``bc_clip_norm`` (0.3): the std gets a gradient and falls. ``bc_loss=mean``: tanh(mean) regressed instead
(mean squared error), which leaves the std where it was. ``algo=bc`` is the warm-up on its own.

Both log ``distance``: the Chamfer distance of the iteration's sampled rollouts from the N fixed start states
to the demo, normalised by the demos' own statistics (a fixed scale: BC's and ILD's curves compare), and
``distance_demo_start``, the same of one deterministic rollout from the demo's start state.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env
from brax.training.acme import running_statistics, specs
from flax import struct

from diffrl.algos.apg import APGCore, GradientConfig, UpdateStats, guarded_step, guarded_update, nonfinite_streak
from diffrl.algos.trajectory_distance import DISTANCES, trajectory_distance
from diffrl.demo_file import DemoError, Demos, check_demos_fit, load_demos, state_features
from diffrl.networks.base import NormalizerState, Params, Policy
from diffrl.rollout import ROLLOUT_AXIS, Trajectory, episode, terminations

ILD_GRADIENTS = GradientConfig(truncation=10, step_clip=1.0, step_clip_scope="batch", clip_norm=0.3)  # the paper's
STARTS = ("resets", "demo")
AFTER_TERMINATION = ("mask", "restart")
BC_LOSSES = ("sampled", "mean")
SQUASHES = ("tanh_of_mean", "none", "mean_of_tanh")
AFTER_WARMUP = ("fresh", "continue")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown algo.{name} {value!r}; valid choices: {', '.join(choices)}")


@dataclasses.dataclass(frozen=True)
class ImitationConfig:
    """What BC and ILD share: the demos, the start states and how the policy is cloned."""

    demo: str  # the demo file (default: the committed demo of the task, diffrl/data/demos/<task>.npz)
    task: str  # what the demo file must hold (the run's env and backend)
    backend: str
    demos: int = 1  # how many of the file's best demos to imitate (ILD: the distance is to the nearest)
    episode_length: int = 128  # steps of each rollout (the demos must be at least this long)
    learning_rate: float = 1e-3  # Adam
    num_envs: int = 16  # rollouts per iteration (ILD: trained on; BC: measured), paper: 300
    start: str = "resets"  # resets: N random resets drawn once (the authors') | demo: the demo's start state
    # A rollout whose body falls: mask (the rest of its steps leave the distance) | restart (from its start state,
    # the remaining steps entering the distance: the authors' Brax 0.0.x auto-reset)
    after_termination: str = "mask"
    bc_loss: str = "sampled"  # sampled: sampled actions, summed over dims (the authors') | mean: tanh(mean), MSE
    bc_clip_norm: float | None = 0.3  # global-norm clip of BC's gradient (the authors')
    state_clip: float | None = 5.0  # clip normalised states to +-state_clip in the distance (the authors')
    sampled_evaluation_episodes: int = 128  # the final evaluation with sampled actions (the authors': 128)

    def __post_init__(self):
        check_choice("start", self.start, STARTS)
        check_choice("after_termination", self.after_termination, AFTER_TERMINATION)
        check_choice("bc_loss", self.bc_loss, BC_LOSSES)
        if self.num_envs < 1:
            raise ValueError(f"algo.num_envs must be >= 1, got {self.num_envs}")


@dataclasses.dataclass(frozen=True)
class BCConfig(ImitationConfig):
    steps_per_iteration: int = 50  # Adam steps of action regression per iteration
    grad: GradientConfig = GradientConfig()  # BC does not differentiate the simulator; here for uniformity


@dataclasses.dataclass(frozen=True)
class ILDConfig(ImitationConfig):
    loss: str = "chamfer"  # chamfer | l2 (Euclidean, time-aligned) | l2_rms
    squash: str = "tanh_of_mean"  # tanh_of_mean (the authors' chamfer) | none (their l2) | mean_of_tanh
    # ILD's Adam: 1e-4, a tenth of the authors' 1e-3, whose first steps overshoot on the MJX bodies
    # (docs/ild.md "Measured": the one-step probe and make ild at both rates)
    learning_rate: float = 1e-4
    bc_steps: int = 1000  # behaviour-cloning warm-up before the first iteration (0: none)
    bc_learning_rate: float = 1e-3
    # ILD's Adam after the warm-up: fresh (the authors': its own state, so its first step moves every parameter
    # by the learning rate) | continue (from the warm-up's moments, at ILD's learning rate)
    adam_after_warmup: str = "fresh"
    grad: GradientConfig = ILD_GRADIENTS

    def __post_init__(self):
        super().__post_init__()
        check_choice("loss", self.loss, DISTANCES)
        check_choice("squash", self.squash, SQUASHES)
        check_choice("adam_after_warmup", self.adam_after_warmup, AFTER_WARMUP)


@struct.dataclass
class DemoArrays:
    """The demos as device arrays (closed over by the compiled programs: they are constants)."""

    observation: jax.Array  # [D, T, obs]
    action: jax.Array  # [D, T, act]
    state: jax.Array  # [D, T, F]
    reset_key: jax.Array  # [2]: rebuilds the best demo's start state
    returns: jax.Array  # [D]


def load_imitation_demos(config: ImitationConfig, env: Env, check_start_state: bool = True) -> Demos:
    """The run's demos, checked against the env: one line if they cannot serve it (``DemoError``).
    ``check_start_state=False`` skips rebuilding the best demo's start state from its reset key (a diagnostic in
    float64, whose resets draw other numbers: ``tools/ild_step_probe.py``)."""
    path = pathlib.Path(config.demo)
    demos = load_demos(path, config.task, config.backend)
    check_demos_fit(demos, path, env, config.episode_length)
    if config.demos < 1:
        raise DemoError(f"algo.demos must be >= 1, got {config.demos}")
    demos = demos.first(config.demos)
    if not check_start_state:
        return demos
    if jnp.asarray(0.0).dtype == jnp.float64:
        # Under float64 a reset key draws other numbers than under the float32 run that recorded the demo: the
        # demo's start state cannot be rebuilt. Random resets (the default start) never need it; the logged
        # ``*_demo_start`` measures then start from the float64 reset of the demo's key, not the demo's state.
        if config.start == "demo":
            raise DemoError(
                f"{path}: algo.start=demo needs the demo's start state, which a float64 run cannot rebuild from "
                f"the recorded float32 reset key; use algo.start=resets or hardware.enable_x64=false"
            )
        return demos
    # The start state is rebuilt from its reset key: the same key must give the same state here.
    rebuilt = jax.jit(lambda key: state_features(env.reset(key).pipeline_state))(jnp.asarray(demos.reset_key[0]))
    scale = 1.0 + float(jnp.max(jnp.abs(rebuilt)))
    if float(jnp.max(jnp.abs(rebuilt - demos.start_state[0]))) > 1e-4 * scale:
        raise DemoError(
            f"{path}: the demo's start state is not what env {config.task!r} resets to with the recorded key "
            f"(the task's reset or physics changed since it was recorded); make new demos with "
            f"`diffrl demos env={config.task} env.backend={config.backend}`"
        )
    return demos


def demo_arrays(demos: Demos, length: int) -> DemoArrays:
    dtype = jnp.asarray(0.0).dtype
    cut = lambda x: jnp.asarray(x[:, :length], dtype)  # noqa: E731
    return DemoArrays(
        observation=cut(demos.observation),
        action=cut(demos.action),
        state=cut(demos.state),
        reset_key=jnp.asarray(demos.reset_key[0], jnp.uint32),
        returns=jnp.asarray(demos.returns, dtype),
    )


# Floor of the state statistics' std: a feature the demos hold constant (a hinge's unused axes, a body at
# rest) would otherwise turn a small deviation of the agent into a huge normalised one and saturate tanh.
STATE_STD_FLOOR = 1e-2


def fold_states(statistics: NormalizerState, states: jax.Array) -> NormalizerState:
    """Running mean/std of flat physics states, with ``states`` [..., F] folded in."""
    return running_statistics.update(statistics, states.reshape(-1, states.shape[-1]), std_min_value=STATE_STD_FLOOR)


def fold_valid_states(statistics: NormalizerState, states: jax.Array, valid: jax.Array) -> NormalizerState:
    """``fold_states`` of the valid states [..., F] alone (a fallen body's states would shift the scale)."""
    flat, weights = states.reshape(-1, states.shape[-1]), valid.reshape(-1).astype(states.dtype)
    safe = jnp.where(weights[:, None] > 0, flat, statistics.mean)
    return running_statistics.update(statistics, safe, weights=weights, std_min_value=STATE_STD_FLOOR)


def state_normalizer(states: jax.Array) -> NormalizerState:
    """Running mean/std of flat physics states, started from ``states`` [..., F]."""
    init = running_statistics.init_state(specs.Array((states.shape[-1],), jnp.asarray(0.0).dtype))
    return fold_states(init, states)


def normalise_states(states: jax.Array, statistics: NormalizerState, clip: float | None) -> jax.Array:
    """Flat physics states [..., F] on ``statistics``' scale, clipped to +-``clip`` (None: unclipped)."""
    return running_statistics.normalize(states, statistics, max_abs_value=clip)


def reference_distances(imitated: jax.Array, others: jax.Array, clip: float | None = 5.0) -> jax.Array:
    """[K]: the fixed-scale Chamfer distance of each of ``others`` [K, T, F] (whole episodes of the expert, from
    their own starts) to the nearest ``imitated`` demo [D, T, F], on the imitated demos' statistics clipped to
    +-``clip``: the logged ``distance``, measured on the expert itself (``tools/ild_distances.py``)."""
    statistics = state_normalizer(imitated)
    demos = normalise_states(imitated, statistics, clip)
    episodes = normalise_states(others, statistics, clip)
    return jax.vmap(lambda episode: trajectory_distance(episode, demos, "chamfer"))(episodes)


def valid_states(trajectory: Trajectory) -> jax.Array:
    """[..., T]: the recorded states (after each step) that belong to a running episode: not after a
    termination, nor the terminal state itself (the authors' auto-reset replaced it). A time-out is no end."""
    return trajectory.alive.astype(bool) & ~terminations(trajectory)


def first_episode(trajectory: Trajectory) -> jax.Array:
    """[..., T]: the steps of each rollout's first episode (a restarted rollout runs on after it)."""
    terminated = terminations(trajectory).astype(jnp.int32)
    return (jnp.cumsum(terminated, axis=-1) - terminated) == 0


def falls(trajectory: Trajectory) -> jax.Array:
    """[..., T]: the steps at which a running episode terminated. A masked rollout's fallen body keeps reporting
    ``done`` at every later step; only the first of them is a fall (a restarted rollout can fall again)."""
    return trajectory.alive.astype(bool) & terminations(trajectory)


def rollout_metrics(trajectory: Trajectory) -> dict[str, jax.Array]:
    """What the iteration's rollouts did: their first episode's return (an episode's return, whether or not the
    rollout restarts), their falls per rollout, and the share of their states in the distance."""
    return {
        "return": jnp.mean(jnp.sum(jnp.where(first_episode(trajectory), trajectory.reward, 0.0), axis=-1)),
        "falls": jnp.mean(jnp.sum(falls(trajectory), axis=-1)),
        "valid_fraction": jnp.mean(valid_states(trajectory)),
    }


def without_invalid_gradients(states: jax.Array, valid: jax.Array) -> jax.Array:
    """The states, those not ``valid`` replaced by finite constants: they pass no gradient (and a diverged
    body's NaN cannot poison the backward pass through the mask)."""
    frozen = jax.lax.stop_gradient(jnp.nan_to_num(states, posinf=0.0, neginf=0.0))
    return jnp.where(valid[..., None], states, frozen)


def policy_actions(
    policy: Policy, params: Params, normalizer: NormalizerState, observations: jax.Array, key: jax.Array | None = None
) -> jax.Array:
    """The policy's actions along demo episodes ([D, T, obs] -> [D, T, act]): deterministic, or sampled
    (reparameterised) when given a key; a recurrent policy carries its state along each episode."""
    episodes, steps = observations.shape[:2]
    keys = None if key is None else jax.random.split(key, episodes * steps).reshape(episodes, steps, -1)

    def along(episode_obs: jax.Array, episode_keys) -> jax.Array:
        def step(carry, inputs):
            obs, step_key = inputs
            return policy.act(params, normalizer, carry, obs, step_key)

        return jax.lax.scan(step, policy.initial_carry(), (episode_obs, episode_keys))[1]

    return jax.vmap(along)(observations, keys)


def action_error(policy: Policy, params: Params, normalizer: NormalizerState, demos: DemoArrays) -> jax.Array:
    """Mean squared error between the policy's deterministic and the expert's actions at the demo's observations."""
    return jnp.mean((policy_actions(policy, params, normalizer, demos.observation) - demos.action) ** 2)


def sampled_action_error(
    policy: Policy, params: Params, normalizer: NormalizerState, demos: DemoArrays, key: jax.Array
) -> jax.Array:
    """The authors' BC loss: (sampled tanh-Normal action - expert action)^2, summed over action dims, averaged
    over the demo's steps. The sample's spread adds to it, so its gradient drives the std down."""
    actions = policy_actions(policy, params, normalizer, demos.observation, key)
    return jnp.mean(jnp.sum((actions - demos.action) ** 2, axis=-1))


class Imitation:
    """What BC and ILD share: the demos, the flat parameters, the start states, cloning and the measured distance."""

    population_mesh = None

    def __init__(self, env: Env, policy: Policy, config: ImitationConfig):
        self.env, self.policy, self.config = env, policy, config
        self.demo_file = load_imitation_demos(config, env)
        self.demos = demo_arrays(self.demo_file, config.episode_length)
        self.demo_statistics = state_normalizer(self.demos.state)  # the fixed scale of the logged distance
        self.core = APGCore(env, policy, config.grad, 1, config.episode_length)  # flat params, Adam, clipping
        self.optimizer = self.core.optimizer(config.learning_rate)

    @property
    def sampled_evaluation_episodes(self) -> int:
        return self.config.sampled_evaluation_episodes

    def start_keys(self, key: jax.Array) -> jax.Array:
        """The N reset keys of a seed's start states, drawn once (kept in the state: a resumed run keeps them)."""
        return jax.random.split(key, self.config.num_envs)

    def start_states(self, start_keys: jax.Array):
        if self.config.start == "demo":
            return jax.vmap(lambda _: self.env.reset(self.demos.reset_key))(start_keys)
        return jax.vmap(self.env.reset)(start_keys)

    def initial_normalizer(self) -> NormalizerState:
        """The observation normaliser, started from the demos' observations (what BC sees)."""
        return self.policy.update_normalizer(self.policy.init_normalizer(), self.demos.observation)

    def rollout(
        self, flat, normalizer, start_state, key, deterministic: bool, cut_probe=None, restart: bool = False
    ) -> Trajectory:
        """One ``episode_length``-step episode from ``start_state``, through ``algo.grad``'s gradient options;
        its ``pipeline_state`` holds each step's ``state_features``. ``cut_probe``'s gradient counts the steps
        whose backward pass was cut (``diffrl.rollout.finite_cotangent``). ``restart``: a fall restarts it from
        ``start_state`` (``after_termination=restart``)."""
        # Without grad.step_clip no step is cut: the probe goes unused and its gradient is 0.
        cut_probe = cut_probe if self.core.grad.step_clip else None
        return episode(
            self.env,
            self.policy,
            self.core.unravel(flat),
            normalizer,
            start_state,
            self.config.episode_length,
            self.core.grad.rollout_options,
            record_pipeline_state=state_features,
            action_key=None if deterministic else key,
            cut_probe=cut_probe,
            restart=restart,
        )

    def rollouts(self, flat, normalizer, start_keys, key, cut_probe=None) -> Trajectory:
        """[N, T]: sampled rollouts from the N start states (sharing ``cut_probe``: its gradient sums their cuts),
        vmapped over ``ROLLOUT_AXIS`` (``grad.step_clip_scope=batch`` clips their per-step cotangent together)."""
        keys = jax.random.split(key, start_keys.shape[0])
        starts = self.start_states(start_keys)
        restart = self.config.after_termination == "restart"
        rollout = lambda s, k: self.rollout(flat, normalizer, s, k, False, cut_probe, restart)  # noqa: E731
        return jax.vmap(rollout, axis_name=ROLLOUT_AXIS)(starts, keys)

    def distances(self, states, valid, statistics: NormalizerState, kind: str) -> jax.Array:
        """[N, T, F] rollout states (their ``valid`` ones) -> [N] distances to the nearest demo, all normalised
        by ``statistics`` and clipped to +-``state_clip``."""
        clip = self.config.state_clip
        demos = normalise_states(self.demos.state, statistics, clip)
        agent = normalise_states(without_invalid_gradients(states, valid), statistics, clip)
        return jax.vmap(lambda a, v: trajectory_distance(a, demos, kind, v))(agent, valid)

    def fixed_scale_distance(self, trajectory: Trajectory) -> jax.Array:
        """[N]: the Chamfer distance of rollouts to the demo on the demos' own statistics (what is logged)."""
        states = jax.lax.stop_gradient(trajectory.pipeline_state)
        return self.distances(states, valid_states(trajectory), self.demo_statistics, "chamfer")

    def demo_start_measure(self, flat, normalizer) -> dict[str, jax.Array]:
        """One deterministic rollout from the demo's start state: its return and fixed-scale distance."""
        trajectory = jax.tree.map(
            lambda x: x[None], self.rollout(flat, normalizer, self.env.reset(self.demos.reset_key), None, True)
        )
        return {
            "return_demo_start": jnp.sum(trajectory.reward),
            "distance_demo_start": self.fixed_scale_distance(trajectory)[0],
        }

    def bc_loss(self, flat, normalizer, key) -> jax.Array:
        params = self.core.unravel(flat)
        if self.config.bc_loss == "sampled":
            return sampled_action_error(self.policy, params, normalizer, self.demos, key)
        return action_error(self.policy, params, normalizer, self.demos)

    def bc_steps(self, flat, opt_state, normalizer, key, steps: int, optimizer):
        """``steps`` full-batch Adam steps of action regression; returns (flat, opt_state, losses [steps])."""
        clip = optax.clip_by_global_norm(self.config.bc_clip_norm) if self.config.bc_clip_norm else optax.identity()

        def body(carry, step_key):
            flat, opt_state = carry
            loss = lambda p: (self.bc_loss(p, normalizer, step_key), None)  # noqa: E731
            flat, opt_state, value, _, _ = guarded_update(loss, flat, opt_state, optimizer, clip)
            return (flat, opt_state), value

        (flat, opt_state), losses = jax.lax.scan(body, (flat, opt_state), jax.random.split(key, steps))
        return flat, opt_state, losses

    def policy_params(self, state) -> tuple[Params, NormalizerState]:
        return self.core.unravel(state.params), state.normalizer

    def mean_std(self, flat, normalizer) -> jax.Array:
        """The policy's mean std (before the tanh) over the demo's observations: BC should lower it."""
        params = self.core.unravel(flat)

        def log_std(obs):
            _, out = self.policy.distribution(params, normalizer, self.policy.initial_carry(), obs)
            return out[1] if self.policy.stochastic else jnp.zeros(())

        obs = self.demos.observation.reshape(-1, self.demos.observation.shape[-1])
        return jnp.mean(jnp.exp(jax.vmap(log_std)(obs)))

    def demo_metrics(self) -> dict[str, jax.Array]:
        return {"demo_return": self.demos.returns[0]}


# --- BC ---------------------------------------------------------------------------------------------------
@struct.dataclass
class BCState:
    params: jax.Array  # flat
    opt_state: Any
    normalizer: NormalizerState
    start_keys: jax.Array  # [N, 2]: the measured rollouts' start states
    key: jax.Array


class BC(Imitation):
    name = "bc"

    @property
    def env_steps_per_iteration(self) -> int:
        return 0  # BC never steps the simulator to learn (its logged rollouts are a measurement)

    def init(self, key: jax.Array) -> BCState:
        key, init_key, start_key = jax.random.split(key, 3)
        flat = self.core.flat_init(init_key)
        return BCState(flat, self.optimizer.init(flat), self.initial_normalizer(), self.start_keys(start_key), key)

    def train_step(self, state: BCState) -> tuple[BCState, dict[str, jax.Array]]:
        c = self.config
        key, bc_key, rollout_key = jax.random.split(state.key, 3)
        flat, opt_state, losses = self.bc_steps(
            state.params, state.opt_state, state.normalizer, bc_key, c.steps_per_iteration, self.optimizer
        )
        trajectory = self.rollouts(flat, state.normalizer, state.start_keys, rollout_key)
        metrics = {
            **rollout_metrics(trajectory),
            "bc_loss": losses[-1],
            "action_error": action_error(self.policy, self.core.unravel(flat), state.normalizer, self.demos),
            "policy_std": self.mean_std(flat, state.normalizer),
            "distance": jnp.mean(self.fixed_scale_distance(trajectory)),
            **self.demo_start_measure(flat, state.normalizer),
            "nonfinite_grads": jnp.sum(~jnp.isfinite(losses)),
            **self.demo_metrics(),
        }
        return state.replace(params=flat, opt_state=opt_state, key=key), metrics


# --- ILD --------------------------------------------------------------------------------------------------
@struct.dataclass
class ILDState:
    params: jax.Array  # flat
    opt_state: Any
    normalizer: NormalizerState  # observations (the policy's input): the demos' statistics, fixed
    statistics: NormalizerState  # physics states (the distance's normalisation)
    start_keys: jax.Array  # [N, 2]: the rollouts' start states, drawn once
    key: jax.Array


def squash(distances: jax.Array, how: str) -> jax.Array:
    """The loss from the rollouts' distances [N]."""
    if how == "tanh_of_mean":
        return jnp.tanh(jnp.mean(distances))
    if how == "mean_of_tanh":
        return jnp.mean(jnp.tanh(distances))
    return jnp.mean(distances)


class ILD(Imitation):
    name = "ild"

    @property
    def env_steps_per_iteration(self) -> int:
        return self.config.num_envs * self.config.episode_length

    def init(self, key: jax.Array) -> ILDState:
        key, init_key, start_key = jax.random.split(key, 3)
        flat = self.core.flat_init(init_key)
        return ILDState(
            flat,
            self.optimizer.init(flat),
            self.initial_normalizer(),
            state_normalizer(self.demos.state),
            self.start_keys(start_key),
            key,
        )

    def warmup(self, state: ILDState) -> tuple[ILDState, dict[str, jax.Array]]:
        """Behaviour cloning for ``bc_steps`` Adam steps on the demos (the runner calls it once, before the first
        iteration; a resumed run has had it). ILD's optimiser state stays fresh, or (``adam_after_warmup=continue``)
        takes over the warm-up's Adam moments."""
        c = self.config
        optimizer = self.core.optimizer(c.bc_learning_rate)
        key, bc_key = jax.random.split(state.key)
        std_before = self.mean_std(state.params, state.normalizer)
        flat, bc_opt_state, losses = self.bc_steps(
            state.params, optimizer.init(state.params), state.normalizer, bc_key, c.bc_steps, optimizer
        )
        metrics = {
            "bc_loss_initial": losses[0],
            "bc_loss_final": losses[-1],
            "bc_action_error_final": action_error(self.policy, self.core.unravel(flat), state.normalizer, self.demos),
            "bc_policy_std_initial": std_before,
            "bc_policy_std_final": self.mean_std(flat, state.normalizer),
            "bc_steps": jnp.asarray(c.bc_steps),
        }
        continued = c.adam_after_warmup == "continue"
        opt_state = with_adam_moments(state.opt_state, bc_opt_state) if continued else state.opt_state
        return state.replace(params=flat, key=key, opt_state=opt_state), metrics

    def train_step(self, state: ILDState) -> tuple[ILDState, dict[str, jax.Array]]:
        c = self.config
        key, rollout_key = jax.random.split(state.key)

        def loss(flat, cut_probe):
            trajectory = self.rollouts(flat, state.normalizer, state.start_keys, rollout_key, cut_probe)
            states, valid = trajectory.pipeline_state, valid_states(trajectory)  # [N, T, F], [N, T]
            # The statistics include this batch's valid states (as constants): the agent's states set the scale.
            statistics = fold_valid_states(state.statistics, jax.lax.stop_gradient(states), valid)
            distances = self.distances(states, valid, statistics, c.loss)
            return squash(distances, c.squash), (statistics, trajectory, distances)

        # The gradient w.r.t. the zero probe is the number of rollout steps whose backward pass was cut.
        (value, aux), (grads, cut_steps) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            state.params, jnp.zeros(())
        )
        flat, opt_state, stats = guarded_step(
            grads, value, state.params, state.opt_state, self.optimizer, self.core.clip
        )
        statistics, trajectory, distances = jax.lax.stop_gradient(aux)
        new_state = state.replace(params=flat, opt_state=opt_state, statistics=statistics, key=key)
        metrics = {
            **rollout_metrics(trajectory),
            "loss": value,
            "loss_distance": jnp.mean(distances),  # on the running statistics the loss used
            "distance": jnp.mean(self.fixed_scale_distance(trajectory)),  # the demos' fixed scale
            "policy_std": self.mean_std(state.params, state.normalizer),
            **self.demo_start_measure(flat, state.normalizer),
            **update_metrics(stats),
            # Steps (over the N rollouts) that passed no gradient back: a per-chunk total, as `nonfinite_grads`.
            "nonfinite_cut_steps": jnp.round(cut_steps).astype(jnp.int32),
            # The runner stops a run whose updates have all been skipped this many times in a row.
            "nonfinite_stalled": (nonfinite_streak(opt_state) >= c.grad.max_consecutive_nonfinite).astype(jnp.int32),
            **self.demo_metrics(),
        }
        return new_state, metrics


def with_adam_moments(opt_state, source):
    """``opt_state`` (``APGCore.optimizer``'s: apply_if_finite over injected-hyperparameter Adam) with Adam's
    step count and moments taken from ``source``; its own learning rate and non-finite counters kept."""
    inner = opt_state.inner_state
    return opt_state._replace(inner_state=inner._replace(inner_state=source.inner_state.inner_state))


def update_metrics(stats: UpdateStats) -> dict[str, jax.Array]:
    finite = stats.nonfinite == 0
    return {
        "grad_norm": jnp.where(finite, stats.grad_norm, jnp.nan),
        "clipped_grad_norm": jnp.where(finite, stats.clipped_grad_norm, jnp.nan),
        "nonfinite_grads": stats.nonfinite,
    }
