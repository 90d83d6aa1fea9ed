"""Closed-form rigid-body dynamics for the swing-up tasks: M(q) q'' + C(q, q') q' + G(q) = B u.

The three tasks are planar serial chains: an optional cart sliding along world x, then hinges about
the y axis. For such a chain every centre of mass is a sum of constant vectors rotated by angles that
are linear in q, so positions, Jacobians and the velocity-product (Coriolis/centripetal) terms have
exact closed forms; no autodiff, no spatial algebra, no constraint solver. The physical parameters
(masses, centres of mass, inertias, gears, timestep, gravity) are read from the task's MJCF through
``mujoco.MjModel``: the MJCF stays the single source of truth for every backend.

``AnalyticSwingUpEnv`` wraps the dynamics in Brax's ``Env`` interface with the same reset and step
semantics as ``SwingUpEnv``, so the rest of diffrl runs unchanged on either backend.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax.envs.base import Env, State
from flax import struct

from diffrl.envs.swingup import SwingUpHooks
from diffrl.envs.tasks import SwingUpTask

Array = jax.Array

INTEGRATORS = ("semi_implicit", "rk4")


@dataclasses.dataclass(frozen=True)
class PlanarChain:
    """A planar serial chain in the x-z plane, as constant numpy arrays (n joints, b bodies, s segments).

    Each body's centre of mass is a sum of "segments": constant vectors (x, z) rotated about y by the
    angle of some body. Segment k is either body k's offset in its parent (rotated by the parent's
    angle) or body k's centre of mass in its own frame (rotated by its own angle).
    """

    mass: np.ndarray  # [b]
    inertia_yy: np.ndarray  # [b] rotational inertia about the y axis through the centre of mass
    angle_rows: np.ndarray  # [b, n] body angle = angle_rows @ q (the hinges above and at the body)
    slide_rows: np.ndarray  # [b, n] body x displacement = slide_rows @ q (sliders above and at the body)
    segment_vectors: np.ndarray  # [s, 2] (x, z) in the frame of the segment's rotating body
    segment_rows: np.ndarray  # [s, n] angle of segment = segment_rows @ q
    segment_of_body: np.ndarray  # [b, s] 1 where segment s is part of body b's centre of mass
    armature: np.ndarray  # [n] rotor inertia added to the diagonal of M, as in MuJoCo
    actuation: np.ndarray  # [n, u] generalized force per unit of control (the actuator gears)
    ctrl_range: np.ndarray  # [u, 2] control limits; (-inf, inf) where the actuator is not limited
    gravity: float  # magnitude, acting along -z
    timestep: float

    @property
    def num_joints(self) -> int:
        return self.angle_rows.shape[1]

    @classmethod
    def from_mjcf(cls, xml: str) -> PlanarChain:
        return cls.from_mujoco(mujoco.MjModel.from_xml_string(xml))

    @classmethod
    def from_mujoco(cls, model: mujoco.MjModel) -> PlanarChain:
        """Reads the chain from a compiled MuJoCo model; refuses anything the closed form does not model."""
        _check_supported(model)
        nb, nj = model.nbody - 1, model.njnt  # body 0 is the world
        parent = model.body_parentid[1:] - 1  # -1 = world
        hinge = model.jnt_type == int(mujoco.mjtJoint.mjJNT_HINGE)
        # above[b, k]: body k is body b or one of its ancestors, so k's offset and joint move b.
        above = np.array([[_is_ancestor_or_self(k, b, parent) for k in range(nb)] for b in range(nb)], float)
        moves = above[:, model.jnt_bodyid - 1]  # [b, n]: joint j moves body b
        angle_rows = moves * hinge
        parent_rows = np.stack([angle_rows[p] if p >= 0 else np.zeros(nj) for p in parent])

        xz = [0, 2]
        gear = np.zeros((nj, model.nu))
        gear[model.actuator_trnid[:, 0], np.arange(model.nu)] = model.actuator_gear[:, 0]
        limited = model.actuator_ctrllimited.astype(bool)[:, None]
        return cls(
            mass=model.body_mass[1:].copy(),
            inertia_yy=np.array([_inertia_about_y(model, b) for b in range(1, model.nbody)]),
            angle_rows=angle_rows,
            slide_rows=moves * ~hinge,
            segment_vectors=np.concatenate([model.body_pos[1:, xz], model.body_ipos[1:, xz]]),
            segment_rows=np.concatenate([parent_rows, angle_rows]),
            segment_of_body=np.concatenate([above, np.eye(nb)], axis=1),
            armature=model.dof_armature.copy(),
            actuation=gear,
            ctrl_range=np.where(limited, model.actuator_ctrlrange, [-np.inf, np.inf]),
            gravity=float(-model.opt.gravity[2]),
            timestep=float(model.opt.timestep),
        )


def _is_ancestor_or_self(k: int, b: int, parent: np.ndarray) -> bool:
    while b >= 0:
        if b == k:
            return True
        b = parent[b]
    return False


def _inertia_about_y(model: mujoco.MjModel, body: int) -> float:
    """I_yy of the body's inertia in the body frame; MuJoCo stores it diagonalised, rotated by iquat."""
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, model.body_iquat[body])
    rot = rot.reshape(3, 3)
    return float(np.sum(rot[1] ** 2 * model.body_inertia[body]))


def _check_supported(model: mujoco.MjModel) -> None:
    """The closed form covers planar chains without damping, springs or friction; fail loudly otherwise."""
    problems = []
    if model.nq != model.nv or model.njnt != model.nbody - 1 or np.any(model.body_jntnum[1:] != 1):
        problems.append("every body needs exactly one hinge or slide joint")
    if np.any(model.body_parentid[1:] >= np.arange(1, model.nbody)):
        problems.append("bodies must be listed parent first")
    if not np.allclose(model.body_quat[1:], [1, 0, 0, 0]) or not np.allclose(model.jnt_pos, 0):
        problems.append("body frames must be unrotated and joints at the body origin")
    if np.any(model.body_pos[1:, 1] != 0) or np.any(model.body_ipos[1:, 1] != 0):
        problems.append("bodies and centres of mass must lie in the x-z plane")
    hinge, slide = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)
    for j in range(model.njnt):
        typ, axis = int(model.jnt_type[j]), model.jnt_axis[j]
        if typ == hinge and not np.allclose(axis, [0, 1, 0]):
            problems.append(f"hinge {j} must turn about y")
        elif typ == slide:
            hinge_above = any(
                model.jnt_type[i] == hinge
                and _is_ancestor_or_self(model.jnt_bodyid[i] - 1, model.jnt_bodyid[j] - 1, model.body_parentid[1:] - 1)
                for i in range(model.njnt)
            )
            if not np.allclose(axis, [1, 0, 0]) or hinge_above:
                problems.append(f"slider {j} must slide along world x, above every hinge")
        elif typ not in (hinge, slide):
            problems.append(f"joint {j} must be a hinge or a slider")
    if np.any(model.dof_damping) or np.any(model.dof_frictionloss) or np.any(model.jnt_stiffness):
        problems.append("damping, friction loss and joint springs are not modelled")
    if not np.allclose(model.opt.gravity[:2], 0):
        problems.append("gravity must point along -z")
    if np.any(model.actuator_trntype != mujoco.mjtTrn.mjTRN_JOINT) or np.any(model.actuator_biastype != 0):
        problems.append("actuators must be plain motors on joints")
    if problems:
        raise ValueError("MJCF outside the planar-chain closed form: " + "; ".join(problems))


# --- dynamics: pure functions of (chain, q, qd), unbatched; vmap for batches ---
#
# Written on lists of scalars, not on small matrices: which joint moves which body is resolved at trace
# time (structural zeros never reach XLA), and under vmap every op is elementwise over the batch, which
# XLA fuses into tight vector loops forward and backward. Tiny [3, 2, 3] tensors vectorise badly on CPU.

Scalar = Array | float  # a traced value, or a constant known at trace time


def _is_zero(x: Scalar) -> bool:
    return not isinstance(x, jax.Array) and x == 0


def _dot(xs, ys) -> Scalar:
    """sum_i xs[i] * ys[i], skipping terms that are zero at trace time."""
    total = 0.0
    for x, y in zip(xs, ys, strict=True):
        if not (_is_zero(x) or _is_zero(y)):
            # Python floats are weakly typed: constants never promote float32 values to float64.
            x, y = (v if isinstance(v, jax.Array) else float(v) for v in (x, y))
            total = total + x * y
    return total


def _rotated_segments(chain: PlanarChain, q: list[Scalar]) -> list[tuple[Scalar, Scalar]]:
    """Every segment vector rotated about y by its body angle: (x, z) in world coordinates."""
    segments = []
    for (vx, vz), row in zip(chain.segment_vectors, chain.segment_rows, strict=True):
        angle = _dot(row, q)
        if _is_zero(angle):  # on a body that never turns (the cart): a constant
            segments.append((float(vx), float(vz)))
        else:
            cos, sin = jnp.cos(angle), jnp.sin(angle)
            segments.append((_dot((vx, vz), (cos, sin)), _dot((-vx, vz), (sin, cos))))
    return segments


def _com_jacobians(chain: PlanarChain, segments: list[tuple[Scalar, Scalar]]) -> list:
    """jac[b][k][j] = d(coordinate k of body b's centre of mass)/dq_j.

    Turning joint j by dq moves every segment it rotates perpendicular to itself: d(x, z) = (z, -x) dq.
    """
    perp = [(wz, -wx) for wx, wz in segments]
    nb, n = chain.angle_rows.shape
    jac = []
    for b in range(nb):
        rotating = [chain.segment_of_body[b] * chain.segment_rows[:, j] for j in range(n)]
        x_row = [_dot(rotating[j], [p[0] for p in perp]) + float(chain.slide_rows[b, j]) for j in range(n)]
        z_row = [_dot(rotating[j], [p[1] for p in perp]) for j in range(n)]
        jac.append((x_row, z_row))
    return jac


def _mass_matrix(chain: PlanarChain, jac: list) -> list[list[Scalar]]:
    """M = sum_b m_b J_b^T J_b + I_b a_b a_b^T (+ armature), a_b = which hinges turn body b."""
    nb, n = chain.angle_rows.shape
    rows = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            entry = float(chain.armature[i]) if i == j else 0.0
            for b in range(nb):
                entry = entry + _dot([chain.mass[b]], [_dot([c[i] for c in jac[b]], [c[j] for c in jac[b]])])
                entry = entry + float(chain.inertia_yy[b] * chain.angle_rows[b, i] * chain.angle_rows[b, j])
            rows[i][j] = rows[j][i] = entry
    return rows


def _bias_forces(chain: PlanarChain, segments: list, jac: list, qd: list[Scalar]) -> list[Scalar]:
    """C(q, qd) qd + G(q) = sum_b m_b J_b^T (dJ_b/dt qd - gravity).

    Bodies only turn about the plane's normal, so their spin adds no gyroscopic term; each rotating
    segment contributes a centripetal acceleration -spin^2 * segment to the bodies it carries.
    """
    nb, n = chain.angle_rows.shape
    spin_sq = [_dot(row, qd) for row in chain.segment_rows]
    spin_sq = [_dot([s], [s]) for s in spin_sq]
    force = []  # [b] (x, z): mass times (centripetal acceleration minus gravity)
    for b in range(nb):
        accel_x = -_dot(chain.segment_of_body[b], [_dot([w[0]], [s]) for w, s in zip(segments, spin_sq, strict=True)])
        accel_z = -_dot(chain.segment_of_body[b], [_dot([w[1]], [s]) for w, s in zip(segments, spin_sq, strict=True)])
        force.append((_dot([chain.mass[b]], [accel_x]), _dot([chain.mass[b]], [accel_z + chain.gravity])))
    return [sum(_dot([c[j] for c in jac[b]], force[b]) for b in range(nb)) for j in range(n)]


def solve_spd(matrix: list[list[Scalar]], rhs: list[Scalar]) -> list[Scalar]:
    """Solves matrix @ x = rhs for a small symmetric positive-definite matrix by unrolled elimination.

    The loops run over the (static) size at trace time and compile to a few fused elementwise ops;
    far cheaper than a batched LAPACK call on 2x2/3x3 systems, forward and backward. No pivoting:
    M is positive definite.
    """
    n = len(rhs)
    a = [list(row) for row in matrix]
    y = list(rhs)
    for k in range(n):
        for i in range(k + 1, n):
            factor = a[i][k] / a[k][k]
            a[i] = [a[i][j] - factor * a[k][j] for j in range(n)]
            y[i] = y[i] - factor * y[k]
    x = [0.0] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(a[i][j] * x[j] for j in range(i + 1, n))) / a[i][i]
    return x


def _scalars(x: Array) -> list[Array]:
    return [x[i] for i in range(x.shape[0])]


def _stack(xs: list[Scalar], like: Array) -> Array:
    return jnp.stack([jnp.asarray(x, like.dtype) for x in xs])


def mass_matrix(chain: PlanarChain, q: Array) -> Array:
    """M(q): [n, n]."""
    rows = _mass_matrix(chain, _com_jacobians(chain, _rotated_segments(chain, _scalars(q))))
    return jnp.stack([_stack(row, q) for row in rows])


def bias_forces(chain: PlanarChain, q: Array, qd: Array) -> Array:
    """C(q, qd) qd + G(q): [n]."""
    segments = _rotated_segments(chain, _scalars(q))
    return _stack(_bias_forces(chain, segments, _com_jacobians(chain, segments), _scalars(qd)), q)


def energy(chain: PlanarChain, q: Array, qd: Array) -> Array:
    """Kinetic plus gravitational potential energy (zero height at the world origin)."""
    heights = [_dot(row, [w[1] for w in _rotated_segments(chain, _scalars(q))]) for row in chain.segment_of_body]
    potential = chain.gravity * _dot(chain.mass, heights)
    return 0.5 * qd @ mass_matrix(chain, q) @ qd + potential


def acceleration(chain: PlanarChain, q: Array, qd: Array, tau: Array) -> Array:
    """Forward dynamics: qdd = M(q)^-1 (tau - C(q, qd) qd - G(q))."""
    segments = _rotated_segments(chain, _scalars(q))
    jac = _com_jacobians(chain, segments)
    bias = _bias_forces(chain, segments, jac, _scalars(qd))
    rhs = [t - h for t, h in zip(_scalars(tau), bias, strict=True)]
    return _stack(solve_spd(_mass_matrix(chain, jac), rhs), q)


def semi_implicit_euler(chain: PlanarChain, q: Array, qd: Array, tau: Array) -> tuple[Array, Array]:
    """MuJoCo's (and Brax's) Euler: velocity first, then position with the new velocity. Symplectic."""
    qd = qd + chain.timestep * acceleration(chain, q, qd, tau)
    return q + chain.timestep * qd, qd


def rk4(chain: PlanarChain, q: Array, qd: Array, tau: Array) -> tuple[Array, Array]:
    """Classical 4th-order Runge-Kutta with the control held over the step; 4x the cost of Euler."""
    h = chain.timestep

    def deriv(q, qd):
        return qd, acceleration(chain, q, qd, tau)

    k1q, k1v = deriv(q, qd)
    k2q, k2v = deriv(q + 0.5 * h * k1q, qd + 0.5 * h * k1v)
    k3q, k3v = deriv(q + 0.5 * h * k2q, qd + 0.5 * h * k2v)
    k4q, k4v = deriv(q + h * k3q, qd + h * k3v)
    q = q + h / 6.0 * (k1q + 2.0 * k2q + 2.0 * k3q + k4q)
    qd = qd + h / 6.0 * (k1v + 2.0 * k2v + 2.0 * k3v + k4v)
    return q, qd


_INTEGRATOR_FNS = {"semi_implicit": semi_implicit_euler, "rk4": rk4}


def simulate(
    chain: PlanarChain,
    q: Array,
    qd: Array,
    ctrl: Array,
    num_steps: int,
    integrator: str = "semi_implicit",
    remat: bool = True,
) -> tuple[Array, Array]:
    """``num_steps`` physics steps with the control ``ctrl`` (before gears) held; clips it like MuJoCo.

    ``remat`` recomputes the substeps in the backward pass (``jax.checkpoint``) instead of storing
    their intermediates: a gradient then keeps only (q, qd, ctrl) per call, and on CPU it also runs
    ~3x faster, because the backward loop no longer streams hundreds of small residuals per step.
    """
    ctrl = jnp.clip(ctrl, chain.ctrl_range[:, 0], chain.ctrl_range[:, 1]).astype(q.dtype)
    tau = _stack([_dot(gears, _scalars(ctrl)) for gears in chain.actuation], q)
    integrate = _INTEGRATOR_FNS[integrator]

    def substeps(q, qd, tau):
        # Unrolled: each substep is a few dozen scalar ops, and unrolling lets XLA fuse across them.
        step = lambda carry, _: (integrate(chain, *carry, tau), None)
        return jax.lax.scan(step, (q, qd), None, length=num_steps, unroll=True)[0]

    return (jax.checkpoint(substeps) if remat else substeps)(q, qd, tau)


# --- the Brax Env ---


@struct.dataclass
class PlanarState:
    """The whole physical state: joint positions and velocities (the fields Brax states also expose)."""

    q: Array
    qd: Array


class AnalyticSwingUpEnv(SwingUpHooks, Env):
    """A swing-up task on the closed-form dynamics, with ``SwingUpEnv``'s reset and step semantics."""

    def __init__(self, task: SwingUpTask, integrator: str = "semi_implicit", remat: bool = True):
        if integrator not in INTEGRATORS:
            raise ValueError(f"unknown integrator {integrator!r}; valid choices: {', '.join(INTEGRATORS)}")
        self.task = task
        self.integrator = integrator
        self.remat = remat  # see ``simulate``
        self.chain = PlanarChain.from_mjcf(task.xml)

    def reset(self, rng: Array) -> State:
        q, qd = self.task.start_joints(rng)
        zero = jnp.zeros(())
        return State(PlanarState(q, qd), self.task.observe(q, qd), zero, zero, {})

    def step(self, state: State, action: Array) -> State:
        action = jnp.clip(action, -1.0, 1.0)
        physics = state.pipeline_state
        q, qd = simulate(self.chain, physics.q, physics.qd, action, self.task.substeps, self.integrator, self.remat)
        return state.replace(
            pipeline_state=PlanarState(q, qd),
            obs=self.task.observe(q, qd),
            reward=self.task.reward(q, qd),
        )

    @property
    def dt(self) -> float:
        return self.chain.timestep * self.task.substeps

    @property
    def observation_size(self) -> int:
        return self.task.observation_size

    @property
    def action_size(self) -> int:
        return self.chain.actuation.shape[1]

    @property
    def backend(self) -> str:
        return "analytic"
