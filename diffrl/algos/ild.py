"""ILD (Chen, Ma, Xu 2022): imitation through differentiable physics, and behaviour cloning (BC).

Both learn from expert demonstrations (``diffrl.demos``: states, observations and actions of a few
episodes of an expert, best first).

ILD, per iteration:
1. roll ``num_envs`` episodes of ``episode_length`` steps out from the best demo's start state, sampling
   the tanh-Normal policy with reparameterised noise, so each state is a differentiable function of the
   parameters through the simulator;
2. loss: the trajectory distance (``algo.loss``: two-way Chamfer, or time-aligned L2;
   ``diffrl.algos.trajectory_distance``) between each rollout's physics states and the demos' (the
   nearest of ``algo.demos`` demos), both normalised by running statistics of the states; tanh of it,
   averaged over the rollouts;
3. one Adam step, the gradient flowing back through time as ILD's authors let it: each step's state
   cotangent clipped to norm ``grad.step_clip`` (1), cut every ``grad.truncation`` (10) steps, the update
   clipped to global norm ``grad.clip_norm`` (0.3); a non-finite update is skipped and counted;
4. the state statistics fold in the rollouts' states.
Before the first iteration, ``warmup`` runs ``bc_steps`` (1000) steps of behaviour cloning on the demos.
The policy's observation normaliser holds the demos' statistics and stays fixed: the warm-up cloned the
expert through it, and folding in the first (failing) rollouts would shift every input and undo the
clone in one iteration (measured on the inverted pendulum: return 96 after the warm-up, 37 one iteration later).

BC regresses the policy's deterministic action, tanh(mean), onto the demo's action at the demo's
observations (mean squared error, full batch, Adam): the warm-up on its own, and ILD's natural baseline.
Each of its iterations ends with one deterministic rollout from the demo's start state, so its return and
distance to the demo are logged like ILD's.
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

from diffrl.algos.apg import APGCore, GradientConfig, UpdateStats, guarded_update, nonfinite_streak
from diffrl.algos.trajectory_distance import DISTANCES, trajectory_distance
from diffrl.demos import DemoError, Demos, check_demos_fit, load_demos, state_features
from diffrl.networks.base import NormalizerState, Params, Policy
from diffrl.rollout import Trajectory, episode

ILD_GRADIENTS = GradientConfig(truncation=10, step_clip=1.0, clip_norm=0.3)  # the paper's


@dataclasses.dataclass(frozen=True)
class ImitationConfig:
    """What BC and ILD share: the demos and how they are used."""

    demo: str  # the demo file (default: the committed demo of the task, diffrl/data/demos/<task>.npz)
    task: str  # what the demo file must hold (the run's env and backend)
    backend: str
    demos: int = 1  # how many of the file's best demos to imitate (ILD: the distance is to the nearest)
    episode_length: int = 128  # steps of each rollout (the demos must be at least this long)
    learning_rate: float = 1e-3  # Adam


@dataclasses.dataclass(frozen=True)
class BCConfig(ImitationConfig):
    steps_per_iteration: int = 50  # Adam steps of action regression per iteration
    loss: str = "chamfer"  # the distance to the demo that is logged (BC does not train on it)
    grad: GradientConfig = GradientConfig()  # BC does not differentiate the simulator; here for uniformity


@dataclasses.dataclass(frozen=True)
class ILDConfig(ImitationConfig):
    num_envs: int = 16  # rollouts per iteration, all from the demo's start state (paper: 300)
    loss: str = "chamfer"  # chamfer | l2
    bc_steps: int = 1000  # behaviour-cloning warm-up before the first iteration (0: none)
    bc_learning_rate: float = 1e-3
    grad: GradientConfig = ILD_GRADIENTS

    def __post_init__(self):
        if self.loss not in DISTANCES:
            raise ValueError(f"unknown algo.loss {self.loss!r}; valid choices: {', '.join(DISTANCES)}")


@struct.dataclass
class DemoArrays:
    """The demos as device arrays (closed over by the compiled programs: they are constants)."""

    observation: jax.Array  # [D, T, obs]
    action: jax.Array  # [D, T, act]
    state: jax.Array  # [D, T, F]
    reset_key: jax.Array  # [2]: rebuilds the best demo's start state
    returns: jax.Array  # [D]


def load_imitation_demos(config: ImitationConfig, env: Env) -> Demos:
    """The run's demos, checked against the env: one line if they cannot serve it (``DemoError``)."""
    path = pathlib.Path(config.demo)
    demos = load_demos(path, config.task, config.backend)
    check_demos_fit(demos, path, env, config.episode_length)
    if config.demos < 1:
        raise DemoError(f"algo.demos must be >= 1, got {config.demos}")
    demos = demos.first(config.demos)
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
    cut = lambda x: jnp.asarray(x[:, :length], dtype)
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


def state_normalizer(states: jax.Array) -> NormalizerState:
    """Running mean/std of flat physics states, started from ``states`` [..., F]."""
    init = running_statistics.init_state(specs.Array((states.shape[-1],), jnp.asarray(0.0).dtype))
    return fold_states(init, states)


def policy_actions(policy: Policy, params: Params, normalizer: NormalizerState, observations: jax.Array) -> jax.Array:
    """The deterministic actions of ``policy`` along demo episodes ([D, T, obs] -> [D, T, act]); a
    recurrent policy carries its state along each episode."""

    def along(episode: jax.Array) -> jax.Array:
        def step(carry, obs):
            carry, action = policy.act(params, normalizer, carry, obs)
            return carry, action

        return jax.lax.scan(step, policy.initial_carry(), episode)[1]

    return jax.vmap(along)(observations)


def action_error(policy: Policy, params: Params, normalizer: NormalizerState, demos: DemoArrays) -> jax.Array:
    """BC's loss: mean squared error between the policy's and the expert's actions at the demo's observations."""
    return jnp.mean((policy_actions(policy, params, normalizer, demos.observation) - demos.action) ** 2)


class Imitation:
    """What BC and ILD share: the demos, the flat parameters and the rollout from the demo's start."""

    population_mesh = None

    def __init__(self, env: Env, policy: Policy, config: ImitationConfig):
        self.env, self.policy, self.config = env, policy, config
        self.demo_file = load_imitation_demos(config, env)
        self.demos = demo_arrays(self.demo_file, config.episode_length)
        self.core = APGCore(env, policy, config.grad, 1, config.episode_length)  # flat params, Adam, clipping
        self.optimizer = self.core.optimizer(config.learning_rate)

    def start_state(self):
        return self.env.reset(self.demos.reset_key)

    def initial_normalizer(self) -> NormalizerState:
        """The observation normaliser, started from the demos' observations (what BC sees)."""
        return self.policy.update_normalizer(self.policy.init_normalizer(), self.demos.observation)

    def rollout(self, flat, normalizer, key, deterministic: bool) -> Trajectory:
        """One ``episode_length``-step episode from the demo's start state, through ``algo.grad``'s gradient
        options; its ``pipeline_state`` holds each step's ``state_features``."""
        return episode(
            self.env,
            self.policy,
            self.core.unravel(flat),
            normalizer,
            self.start_state(),
            self.config.episode_length,
            self.core.grad.rollout_options,
            record_pipeline_state=state_features,
            action_key=None if deterministic else key,
        )

    def distances(self, states: jax.Array, statistics: NormalizerState) -> jax.Array:
        """[N, T, F] rollout states -> [N] distances to the nearest demo, all normalised by ``statistics``."""
        demos = running_statistics.normalize(self.demos.state, statistics)
        agent = running_statistics.normalize(states, statistics)
        return jax.vmap(lambda a: trajectory_distance(a, demos, self.config.loss))(agent)

    def bc_steps(self, flat, opt_state, normalizer, steps: int, optimizer):
        """``steps`` full-batch Adam steps of action regression; returns (flat, opt_state, losses [steps])."""

        def loss(p):
            return action_error(self.policy, self.core.unravel(p), normalizer, self.demos), None

        def body(carry, _):
            flat, opt_state = carry
            flat, opt_state, value, _, _ = guarded_update(loss, flat, opt_state, optimizer, optax.identity())
            return (flat, opt_state), value

        (flat, opt_state), losses = jax.lax.scan(body, (flat, opt_state), None, length=steps)
        return flat, opt_state, losses

    def policy_params(self, state) -> tuple[Params, NormalizerState]:
        return self.core.unravel(state.params), state.normalizer

    def demo_metrics(self) -> dict[str, jax.Array]:
        return {"demo_return": self.demos.returns[0]}


# --- BC ---------------------------------------------------------------------------------------------------
@struct.dataclass
class BCState:
    params: jax.Array  # flat
    opt_state: Any
    normalizer: NormalizerState
    key: jax.Array


class BC(Imitation):
    name = "bc"

    def __init__(self, env: Env, policy: Policy, config: BCConfig):
        super().__init__(env, policy, config)
        self.statistics = state_normalizer(self.demos.state)

    @property
    def env_steps_per_iteration(self) -> int:
        return 0  # BC never steps the simulator to learn (its logged rollout is a measurement)

    def init(self, key: jax.Array) -> BCState:
        key, init_key = jax.random.split(key)
        flat = self.core.flat_init(init_key)
        return BCState(flat, self.optimizer.init(flat), self.initial_normalizer(), key)

    def train_step(self, state: BCState) -> tuple[BCState, dict[str, jax.Array]]:
        c = self.config
        flat, opt_state, losses = self.bc_steps(
            state.params, state.opt_state, state.normalizer, c.steps_per_iteration, self.optimizer
        )
        key, rollout_key = jax.random.split(state.key)
        trajectory = self.rollout(flat, state.normalizer, rollout_key, deterministic=True)
        states = trajectory.pipeline_state[None]
        episode_return = jnp.sum(trajectory.reward)
        metrics = {
            "return": episode_return,
            "action_error": losses[-1],
            "distance": self.distances(states, self.statistics)[0],
            "nonfinite_grads": jnp.sum(~jnp.isfinite(losses)),
            **self.demo_metrics(),
        }
        return BCState(flat, opt_state, state.normalizer, key), metrics


# --- ILD --------------------------------------------------------------------------------------------------
@struct.dataclass
class ILDState:
    params: jax.Array  # flat
    opt_state: Any
    normalizer: NormalizerState  # observations (the policy's input): the demos' statistics, fixed
    statistics: NormalizerState  # physics states (the distance's normalisation)
    key: jax.Array


class ILD(Imitation):
    name = "ild"

    @property
    def env_steps_per_iteration(self) -> int:
        return self.config.num_envs * self.config.episode_length

    def init(self, key: jax.Array) -> ILDState:
        key, init_key = jax.random.split(key)
        flat = self.core.flat_init(init_key)
        return ILDState(
            flat, self.optimizer.init(flat), self.initial_normalizer(), state_normalizer(self.demos.state), key
        )

    def warmup(self, state: ILDState) -> tuple[ILDState, dict[str, jax.Array]]:
        """Behaviour cloning for ``bc_steps`` Adam steps on the demos (the runner calls it once, before the first
        iteration); the main optimiser's state is untouched."""
        c = self.config
        optimizer = self.core.optimizer(c.bc_learning_rate)
        flat, _, losses = self.bc_steps(
            state.params, optimizer.init(state.params), state.normalizer, c.bc_steps, optimizer
        )
        metrics = {
            "bc_action_error_initial": losses[0],
            "bc_action_error_final": losses[-1],
            "bc_steps": jnp.asarray(c.bc_steps),
        }
        return state.replace(params=flat), metrics

    def train_step(self, state: ILDState) -> tuple[ILDState, dict[str, jax.Array]]:
        c = self.config
        key, rollout_key = jax.random.split(state.key)
        keys = jax.random.split(rollout_key, c.num_envs)

        def loss(flat):
            trajectory = jax.vmap(lambda k: self.rollout(flat, state.normalizer, k, deterministic=False))(keys)
            states = trajectory.pipeline_state  # [num_envs, T, F]: state_features
            # The statistics include this batch (as constants): the agent's states set the scale.
            statistics = fold_states(state.statistics, jax.lax.stop_gradient(states))
            distances = self.distances(states, statistics)
            aux = (statistics, trajectory.reward, distances)
            return jnp.mean(jnp.tanh(distances)), aux

        flat, opt_state, value, aux, stats = guarded_update(
            loss, state.params, state.opt_state, self.optimizer, self.core.clip
        )
        statistics, rewards, distances = jax.lax.stop_gradient(aux)
        new_state = ILDState(flat, opt_state, state.normalizer, statistics, key)
        metrics = {
            "return": jnp.mean(jnp.sum(rewards, axis=-1)),
            "loss": value,
            "distance": jnp.mean(distances),
            **update_metrics(stats),
            # The runner stops a run whose updates have all been skipped this many times in a row.
            "nonfinite_stalled": (nonfinite_streak(opt_state) >= c.grad.max_consecutive_nonfinite).astype(jnp.int32),
            **self.demo_metrics(),
        }
        return new_state, metrics


def update_metrics(stats: UpdateStats) -> dict[str, jax.Array]:
    finite = stats.nonfinite == 0
    return {
        "grad_norm": jnp.where(finite, stats.grad_norm, jnp.nan),
        "clipped_grad_norm": jnp.where(finite, stats.clipped_grad_norm, jnp.nan),
        "nonfinite_grads": stats.nonfinite,
    }
