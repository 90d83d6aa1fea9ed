"""SHAC's locomotion tasks (Xu et al., ICLR 2022; DiffRL ``envs/{ant,hopper,cheetah,humanoid}.py``) on
MuJoCo bodies: the authors' observations, rewards, terminations, control step and reset noise.

Every task runs on the body the authors' simulator, dflex, built (``diffrl/envs/assets/shac_*.xml``, from
shared/SHAC_BODIES.md: density-1000 masses, dflex's torque scale, armature and damping, every geom in
contact with the ground, its start pose), on MJX only; dflex's soft joint limits (a 1000 N m/rad spring
outside the range) are applied here every substep (``soft_limit_torque``). Brax's own MJCF bodies stay
reachable as the Brax suite's ``ant``, ``hopper``, ``halfcheetah``, ``humanoid``. ``docs/shac_tasks.md``
lists every difference from the authors' and why.

Shared: control step 1/60 s in ``substeps`` physics steps; actions clipped to [-1, 1] and sent to the
MJCF's motors; z up (dflex is y up: its "height" is our z, its "up_y" our up_z).
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax import math as brax_math
from brax.envs.base import PipelineEnv, State
from brax.io import mjcf

from diffrl.envs.brax_suite import replay_as_is

CONTROL_DT = 1.0 / 60.0
TARGET_X = 10000.0  # the authors' far-away target straight ahead: heading reward = cos(angle to +x)


DFLEX_LIMIT_STIFFNESS = 1000.0  # dflex's limit_ke (N m/rad) in all four tasks; its limit_kd is in the damping
REBUILT_BACKENDS = ("mjx",)  # the soft limits reach the physics through MJX's qfrc_applied


def diffrl_asset(file: str) -> str:
    return str(pathlib.Path(__file__).parent / "assets" / file)


def soft_limits(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(qpos index, dof index, lower, upper) of every hinge or slide joint that has a range: dflex's limits,
    which the MJCF leaves ``limited="false"`` so MuJoCo adds no hard limit of its own."""
    scalar = (model.jnt_type == mujoco.mjtJoint.mjJNT_HINGE) | (model.jnt_type == mujoco.mjtJoint.mjJNT_SLIDE)
    ranged = scalar & (model.jnt_range[:, 0] < model.jnt_range[:, 1])
    if np.any(model.jnt_limited[ranged]):
        raise ValueError('a rebuilt SHAC body must leave its soft-limited joints limited="false"')
    lower, upper = model.jnt_range[ranged].T
    return model.jnt_qposadr[ranged], model.jnt_dofadr[ranged], lower, upper


def soft_limit_torque(qpos: jax.Array, nv: int, limits, stiffness: float = DFLEX_LIMIT_STIFFNESS) -> jax.Array:
    """dflex's joint-limit law (sim.py eval_joint_force): ke_lim (lower - q) below the range, ke_lim
    (upper - q) above it, 0 inside; the torque on each dof [nv]."""
    qpos_index, dof_index, lower, upper = limits
    q = qpos[qpos_index]
    torque = stiffness * (jnp.clip(q, lower, upper) - q)
    return jnp.zeros(nv, qpos.dtype).at[dof_index].set(torque)


def uniform(key: jax.Array, shape, scale: float) -> jax.Array:
    """U(-scale, scale), the authors' ``scale * (rand - 0.5) * 2``."""
    return jax.random.uniform(key, shape, minval=-scale, maxval=scale)


def height_reward(d: jax.Array, scale: float) -> jax.Array:
    """The authors' shaped height term: -200 d^2 below the threshold, ``scale * d`` above it."""
    return jnp.where(d < 0.0, -200.0 * d**2, scale * d)


class ShacLocomotionEnv(PipelineEnv):
    """What the four tasks share: timing, action clipping, the previous action in ``info``, the replay."""

    name: str
    body_xml: str  # the authors' body as dflex simulated it (diffrl/envs/assets)
    substeps: int
    observation_size_: int

    def __init__(self, backend: str = "mjx", **kwargs):
        if backend not in REBUILT_BACKENDS:
            raise ValueError(f"{self.name} runs on backend=mjx only (dflex's soft joint limits), not {backend!r}")
        path = diffrl_asset(self.body_xml)
        self.limits = tuple(jnp.asarray(a) for a in soft_limits(mujoco.MjModel.from_xml_path(path)))
        # As Brax's own ant and humanoid on MJX: without the Newton solver and explicit damping the MJX step
        # diverges to NaN within a few hundred random-action steps (measured on shac_ant). make_env then sets
        # the solver's iterations.
        sys = mjcf.load(path).tree_replace(
            {
                "opt.timestep": CONTROL_DT / self.substeps,
                "opt.solver": mujoco.mjtSolver.mjSOL_NEWTON,
                "opt.disableflags": mujoco.mjtDisableBit.mjDSBL_EULERDAMP,
            }
        )
        super().__init__(sys=sys, backend=backend, n_frames=self.substeps, **kwargs)

    # --- what each task defines ---
    def start_joints(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def observe(self, pipeline_state, last_action: jax.Array) -> jax.Array:
        raise NotImplementedError

    def reward(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        raise NotImplementedError

    def terminated(self, obs: jax.Array) -> jax.Array:
        return jnp.zeros((), bool)  # never ends (the cheetah): a flag for episode_ends

    def pipeline_step(self, pipeline_state, action: jax.Array):
        """``substeps`` physics steps under one action, dflex's soft-limit torque recomputed before every
        substep (dflex evaluates it inside each of its substeps)."""

        def substep(state, _):
            state = state.replace(qfrc_applied=soft_limit_torque(state.qpos, self.sys.nv, self.limits))
            return self._pipeline.step(self.sys, state, action, self._debug), None

        return jax.lax.scan(substep, pipeline_state, (), self._n_frames)[0]

    # --- Brax's Env ---
    def reset(self, rng: jax.Array) -> State:
        pipeline_state = self.pipeline_init(*self.start_joints(rng))
        no_action = jnp.zeros(self.action_size)
        obs = self.observe(pipeline_state, no_action)
        zero = jnp.zeros(())
        return State(pipeline_state, obs, zero, zero, {}, {"last_action": no_action})

    def step(self, state: State, action: jax.Array) -> State:
        action = jnp.clip(action, -1.0, 1.0)
        pipeline_state = self.pipeline_step(state.pipeline_state, action)
        obs = self.observe(pipeline_state, action)
        return state.replace(
            pipeline_state=pipeline_state,
            obs=obs,
            reward=self.reward(obs, action),
            done=self.episode_ends(obs).astype(state.done.dtype),
            info={**state.info, "last_action": action},
        )

    def episode_ends(self, obs: jax.Array) -> jax.Array:
        """The task's termination, or a state gone non-finite (the authors' humanoid resets those; a NaN
        height would never terminate: NaN < h is false). SHAC counts them (``nonfinite_envs``)."""
        return self.terminated(obs) | ~jnp.all(jnp.isfinite(obs))

    @property
    def observation_size(self) -> int:
        return self.observation_size_  # static: Brax's default runs an uncompiled reset to read a shape

    def replay(self, pipeline_states):
        return replay_as_is(self, pipeline_states)


def torso_observation(pipeline_state, last_action: jax.Array) -> jax.Array:
    """Ant's and Humanoid's observation: torso height, orientation, linear and angular velocity, joint
    positions, 0.1 x joint velocities, the up vector's vertical component, the heading towards the
    target, the previous action."""
    pos, rot = pipeline_state.x.pos[0], pipeline_state.x.rot[0]
    up = brax_math.rotate(jnp.array([0.0, 0.0, 1.0]), rot)
    heading = brax_math.rotate(jnp.array([1.0, 0.0, 0.0]), rot)
    to_target = jnp.array([TARGET_X - pos[0], -pos[1], 0.0])  # horizontal only
    heading_to_target = heading @ (to_target / jnp.linalg.norm(to_target))
    return jnp.concatenate(
        [
            pos[2:3],
            rot,
            pipeline_state.xd.vel[0],
            pipeline_state.xd.ang[0],
            pipeline_state.q[7:],
            0.1 * pipeline_state.qd[6:],
            up[2:3],
            heading_to_target[None],
            last_action,
        ]
    )


def torso_reset(env: PipelineEnv, key: jax.Array, joint_noise: float) -> tuple[jax.Array, jax.Array]:
    """The authors' ``stochastic_init`` of a free-floating torso: position +-0.1, a rotation of up to
    pi/24 about a random axis, joints +-``joint_noise``, every velocity U(+-0.25)."""
    k_pos, k_angle, k_axis, k_joints, k_vel = jax.random.split(key, 5)
    q0 = env.sys.init_q
    angle = uniform(k_angle, (), math.pi / 24)
    axis = jax.random.uniform(k_axis, (3,), minval=-0.5, maxval=0.5)
    tilt = brax_math.quat_rot_axis(axis / jnp.linalg.norm(axis), angle)
    q = jnp.concatenate(
        [
            q0[:3] + uniform(k_pos, (3,), 0.1),
            brax_math.quat_mul(q0[3:7], tilt),
            q0[7:] + uniform(k_joints, q0[7:].shape, joint_noise),
        ]
    )
    return q, uniform(k_vel, (env.sys.qd_size(),), 0.25)


def planar_reset(env: PipelineEnv, key: jax.Array, noise: float, velocity_noise: float):
    """The planar walkers' ``stochastic_init``: root x, z and angle and every joint +-``noise`` (angle:
    +-noise as well), every velocity U(+-``velocity_noise``)."""
    k_q, k_qd = jax.random.split(key)
    q = env.sys.init_q + uniform(k_q, (env.sys.q_size(),), noise)
    return q, uniform(k_qd, (env.sys.qd_size(),), velocity_noise)


class FloatingTorsoEnv(ShacLocomotionEnv):
    """Ant and Humanoid: a free torso, observed by ``torso_observation``, ending below a height."""

    termination_height: float

    def start_joints(self, key):
        return torso_reset(self, key, joint_noise=0.2)

    def observe(self, pipeline_state, last_action):
        return torso_observation(pipeline_state, last_action)

    def terminated(self, obs):
        return obs[0] < self.termination_height


class ShacAnt(FloatingTorsoEnv):
    """37 observations; reward v_x + 0.1 up_z + heading + (h - 0.27); ends when the torso is below 0.27.
    The authors' ant (assets/shac_ant.xml): 182 kg, torque 200 a, every geom touching the ground."""

    name, body_xml, substeps, observation_size_ = "shac_ant", "shac_ant.xml", 16, 37
    termination_height = 0.27

    def reward(self, obs, action):
        return sum(self.reward_terms(obs, action).values())

    def reward_terms(self, obs, action) -> dict[str, jax.Array]:
        """The reward's terms, in the authors' order (no action cost): where a return comes from."""
        return {
            "forward_velocity": obs[5],
            "up": 0.1 * obs[27],
            "heading": obs[28],
            "height": obs[0] - self.termination_height,
        }


class ShacHumanoid(FloatingTorsoEnv):
    """76 observations (21 joints); reward v_x + 0.1 up_z + heading + height term - 0.002 |a|^2; ends when
    the torso is below 0.74. The authors' humanoid (assets/shac_humanoid.xml): 40.8 kg, 21 hinges with
    torques 0.35 x their strengths, every geom touching the ground, 48 substeps."""

    name, body_xml, substeps, observation_size_ = "shac_humanoid", "shac_humanoid.xml", 48, 76
    termination_height = 0.74

    def reward(self, obs, action):
        return sum(self.reward_terms(obs, action).values())

    def reward_terms(self, obs, action) -> dict[str, jax.Array]:
        """The reward's terms, in the authors' order: where a return comes from."""
        joints = (self.sys.q_size() - 7) * 2  # joint positions and velocities sit before up_z
        up, heading = obs[11 + joints], obs[12 + joints]
        return {
            "forward_velocity": obs[5],
            "up": 0.1 * up,
            "heading": heading,
            "height": height_reward(jnp.clip(obs[0] - (self.termination_height + 0.1), -1.0, 0.1), scale=10.0),
            "action": -0.002 * jnp.sum(action**2),
        }


class PlanarWalkerEnv(ShacLocomotionEnv):
    """Hopper and Cheetah: a planar root (rootx, rootz slides, rooty hinge), observed as the authors'
    ``joint_q[1:]`` and ``joint_qd``: root height and angle, joint angles, then every velocity (x first)."""

    reset_noise: float  # root x, z and every joint +-this; the root angle U(+-this)
    velocity_noise: float

    def start_joints(self, key):
        return planar_reset(self, key, noise=self.reset_noise, velocity_noise=self.velocity_noise)

    def observe(self, pipeline_state, last_action):
        return jnp.concatenate([pipeline_state.q[1:], pipeline_state.qd])


class ShacHopper(PlanarWalkerEnv):
    """11 observations (joint_q[1:], joint_qd); reward v_x + height term + (1 - (angle / (pi/6))^2)
    - 0.1 |a|^2; ends when the torso has dropped 0.45 below its start (root z is 0 at the start height
    1.25, as dflex's). The authors' hopper (assets/shac_hopper.xml): 15.8 kg, torque 200 a, armature 1 on
    every dof, every geom touching the ground."""

    name, body_xml, substeps, observation_size_ = "shac_hopper", "shac_hopper.xml", 16, 11
    reset_noise, velocity_noise = 0.05, 0.05
    termination_height = -0.45  # root z relative to the start
    termination_angle = math.pi / 6

    def reward(self, obs, action):
        height = height_reward(jnp.clip(obs[0] - (self.termination_height + 0.15), -1.0, 0.3), scale=1.0)
        upright = 1.0 - obs[1] ** 2 / self.termination_angle**2
        return obs[5] + height + upright - 0.1 * jnp.sum(action**2)

    def terminated(self, obs):
        return obs[0] < self.termination_height


class ShacCheetah(PlanarWalkerEnv):
    """17 observations (joint_q[1:], joint_qd); reward v_x - 0.1 |a|^2; no termination. The authors'
    cheetah (assets/shac_cheetah.xml): 21.2 kg, torque 200 a on all six joints, joint springs, root z -0.2
    at the start (torso at 0.8) as dflex's, every geom touching the ground."""

    name, body_xml, substeps, observation_size_ = "shac_cheetah", "shac_cheetah.xml", 16, 17
    reset_noise, velocity_noise = 0.1, 0.25

    def reward(self, obs, action):
        return obs[8] - 0.1 * jnp.sum(action**2)


SHAC_LOCOMOTION = {cls.name: cls for cls in (ShacAnt, ShacHopper, ShacCheetah, ShacHumanoid)}
