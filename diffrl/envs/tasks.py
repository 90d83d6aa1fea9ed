"""The CE-APG swing-up tasks: what is observed, what is rewarded, where an episode starts.

The physics lives in the MJCF files under ``assets/``; everything here is a pure function of the
joint positions ``q`` and velocities ``qd`` so that every backend (Brax pipelines, the closed-form
dynamics) shares one definition of the task.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp

ASSETS = pathlib.Path(__file__).parent / "assets"

# Where the swing-ups' link inertia comes from (``env.inertia``): "authors" = the <inertial> elements of the
# MJCF, 1 kg m^2 about each centre of mass as the CE-APG authors' Brax 0.0.10 simulated it; "geometric" = the
# capsules' own inertia and masses (those elements stripped), diffrl's bodies before they followed the authors.
INERTIAS = ("authors", "geometric")
_INERTIAL = re.compile(r"[ \t]*<inertial\b[^>]*/>[^\n]*\n")

Array = jnp.ndarray


def wrap_angle(angle: Array) -> Array:
    """Maps an angle to (-pi, pi]."""
    return jnp.pi - jnp.mod(jnp.pi - angle, 2.0 * jnp.pi)


@dataclasses.dataclass(frozen=True)
class SwingUpTask:
    """A swing-up task: MJCF file, control timing and the task's pure functions of (q, qd)."""

    name: str
    xml_file: str
    substeps: int  # physics steps per control step; the control step is substeps * timestep
    observation_size: int
    hanging_q: tuple[float, ...]  # joint positions of the hanging-down start state
    angle_mask: tuple[bool, ...]  # which joints are hinges (noised at reset, wrapped in rewards)
    observe: Callable[[Array, Array], Array]
    reward: Callable[[Array, Array], Array]
    best_return: float  # upper bound of the 500-step return, for tables and sanity checks
    episode_length: int = 500
    reset_noise: float = 0.01  # uniform +-noise on the joints in reset_noise_mask (default: the hinges)
    reset_noise_mask: tuple[bool, ...] | None = None
    reset_velocity_noise: float | None = None  # uniform +-noise on every velocity (default: reset_noise)
    inertia: str = "authors"  # one of INERTIAS: the MJCF's <inertial> elements, or the capsules' own

    def __post_init__(self):
        if self.inertia not in INERTIAS:
            raise ValueError(f"unknown inertia {self.inertia!r}; valid choices: {', '.join(INERTIAS)}")

    def start_joints(self, rng: Array) -> tuple[Array, Array]:
        """(q, qd) of a start state: hanging down plus uniform noise. Every backend calls this, so one key
        gives one start state on all of them."""
        rng_q, rng_qd = jax.random.split(rng)
        hanging = jnp.asarray(self.hanging_q)
        mask = jnp.asarray(self.reset_noise_mask or self.angle_mask, dtype=float)
        noise = self.reset_noise
        velocity_noise = noise if self.reset_velocity_noise is None else self.reset_velocity_noise
        q = hanging + mask * jax.random.uniform(rng_q, hanging.shape, minval=-noise, maxval=noise)
        qd = jax.random.uniform(rng_qd, hanging.shape, minval=-velocity_noise, maxval=velocity_noise)
        return q, qd

    def link_angles(self, q: Array) -> Array:
        """Absolute angle of each pole/link from upright (hinge angles are relative to the parent)."""
        hinges = jnp.asarray([i for i, is_hinge in enumerate(self.angle_mask) if is_hinge])
        return wrap_angle(jnp.cumsum(q[hinges]))

    def upright(self, q: Array, tolerance: float = 0.2) -> Array:
        """True when every link is within ``tolerance`` rad of upright (balancing)."""
        return jnp.all(jnp.abs(self.link_angles(q)) < tolerance)

    @property
    def xml_path(self) -> pathlib.Path:
        return ASSETS / self.xml_file

    @property
    def xml(self) -> str:
        """The MJCF every backend reads; ``inertia="geometric"`` strips its <inertial> elements (one line each)."""
        text = self.xml_path.read_text()
        return _INERTIAL.sub("", text) if self.inertia == "geometric" else text


def _acrobot_reward(q: Array, qd: Array) -> Array:
    theta = wrap_angle(q)
    return 10.0 - jnp.sum(theta**2) - 0.01 * jnp.sum(qd**2)


def _cartpole_reward(q: Array, qd: Array) -> Array:
    return -(wrap_angle(q[1]) ** 2)


def _double_pendulum_reward(q: Array, qd: Array) -> Array:
    theta = wrap_angle(q[1:])
    return 10.0 - jnp.sum(theta**2) - q[0] ** 2 - 0.01 * jnp.sum(qd[1:] ** 2)


def _double_pendulum_obs(q: Array, qd: Array) -> Array:
    return jnp.concatenate([q[:1], jnp.sin(q[1:]), jnp.cos(q[1:]), qd])


# The authors observed Brax v1's signed joint angles, in (-pi, pi] (``joints[0].angle_vel``): an acrobot upright
# at 0 and at 2 pi is one input to the policy, not two.
def _acrobot_obs(q: Array, qd: Array) -> Array:
    return jnp.concatenate([wrap_angle(q), qd])


def _cartpole_obs(q: Array, qd: Array) -> Array:
    return jnp.stack([q[0], wrap_angle(q[1]), qd[0], qd[1]])


ACROBOT = SwingUpTask(
    name="acrobot",
    xml_file="acrobot.xml",
    substeps=4,
    observation_size=4,
    hanging_q=(jnp.pi, 0.0),
    angle_mask=(True, True),
    observe=_acrobot_obs,
    reward=_acrobot_reward,
    best_return=5000.0,
)

CARTPOLE_SWINGUP = SwingUpTask(
    name="cartpole_swingup",
    xml_file="cartpole_swingup.xml",
    substeps=8,
    observation_size=4,
    hanging_q=(0.0, jnp.pi),
    angle_mask=(False, True),
    observe=_cartpole_obs,
    reward=_cartpole_reward,
    best_return=0.0,
)

DOUBLE_PENDULUM_SWINGUP = SwingUpTask(
    name="double_pendulum_swingup",
    xml_file="double_pendulum_swingup.xml",
    substeps=12,
    observation_size=8,
    hanging_q=(0.0, jnp.pi, 0.0),
    angle_mask=(False, True, True),
    observe=_double_pendulum_obs,
    reward=_double_pendulum_reward,
    best_return=5000.0,
)


def _shac_cartpole_reward(q: Array, qd: Array) -> Array:
    theta = wrap_angle(q[1])
    return -(theta**2 + 0.1 * qd[1] ** 2 + 0.05 * q[0] ** 2 + 0.1 * qd[0] ** 2)


# SHAC's CartPole swing-up (DiffRL envs/cartpole_swing_up.py; docs/shac_tasks.md): control step 1/60 s in
# 4 substeps, 240-step episodes, starts hanging (theta = -pi) with U(+-pi/2) on both joints and U(+-0.25)
# on both velocities (the authors' `stochastic_init`), force 1000 a on the cart.
SHAC_CARTPOLE = SwingUpTask(
    name="shac_cartpole",
    xml_file="shac_cartpole.xml",
    substeps=4,
    observation_size=5,
    hanging_q=(0.0, -jnp.pi),
    angle_mask=(False, True),
    observe=lambda q, qd: jnp.stack([q[0], qd[0], jnp.sin(q[1]), jnp.cos(q[1]), qd[1]]),
    reward=_shac_cartpole_reward,
    best_return=0.0,
    episode_length=240,
    reset_noise=jnp.pi / 2,
    reset_noise_mask=(True, True),
    reset_velocity_noise=0.25,
)

TASKS: dict[str, SwingUpTask] = {
    task.name: task for task in (ACROBOT, CARTPOLE_SWINGUP, DOUBLE_PENDULUM_SWINGUP, SHAC_CARTPOLE)
}
