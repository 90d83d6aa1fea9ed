"""The rebuilt SHAC bodies against what dflex simulated (shared/SHAC_BODIES.md): total mass, the torque each
joint needs to stand in the start pose, the contact mapping (penetration at rest and a drop's rebound,
MuJoCo's direct solref against dflex's penalty law), and substeps (deviation from 16 substeps over 1 s of
random actions on MJX, with the speed of each).

    python -m benchmarks.shac_bodies [--tasks shac_ant] [--substeps 16 8 4] [--static-only] [--out FILE]

The output file keeps the entries of tasks not measured in this call; ``--static-only`` skips the MJX
substep study (the costly part) and keeps the task's rows from the file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from brax.io import mjcf  # noqa: E402

from diffrl.envs import MJX_GRADIENT_SOLVER  # noqa: E402
from diffrl.envs.shac_locomotion import SHAC_LOCOMOTION, diffrl_asset, soft_limit_torque, soft_limits  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "results" / "shac_bodies.json"
# dflex's contact law per task (ke, kd), the stance contacts the mapping assumes, the geoms that carry the weight
# standing (their lowest points) and the radius of a contact sphere there (SHAC_BODIES.md §5, §6)
DFLEX = {
    "shac_ant": {"mass": 182.176, "ke": 4e4, "kd": 1e4, "stance": 4, "feet": "ankle", "radius": 0.08},
    "shac_hopper": {"mass": 15.820, "ke": 2e4, "kd": 1e3, "stance": 2, "feet": "foot", "radius": 0.06},
    "shac_cheetah": {"mass": 21.184, "ke": 2e4, "kd": 1e3, "stance": 2, "feet": "foot", "radius": 0.046},
    "shac_humanoid": {"mass": 40.844, "ke": 2e4, "kd": 5e3, "stance": 8, "feet": "foot", "radius": 0.027},
}
SUBSTEPS = {"shac_ant": [16, 8, 4], "shac_hopper": [16, 8, 4], "shac_cheetah": [16, 8, 4], "shac_humanoid": [48, 24]}
G = 9.81


def model_of(task: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(diffrl_asset(SHAC_LOCOMOTION[task].body_xml))


def standing_torque(model: mujoco.MjModel, stance_geoms: list[int], qpos: np.ndarray) -> np.ndarray:
    """Joint torques (from any source: motors, springs, limits) that hold pose ``qpos`` still with the weight
    shared equally by the lowest points of ``stance_geoms`` (static equilibrium: tau = gravity bias -
    sum_i J_i^T f_i over the actuated dofs). A horizontal capsule stands on both its ends, as dflex's does."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_forward(model, data)
    weight = model.body_mass.sum() * G
    torque = data.qfrc_bias.copy()
    points = [(geom, point) for geom in stance_geoms for point in lowest_points(model, data, geom)]
    for geom, point in points:
        jacp = np.zeros((3, model.nv))
        mujoco.mj_jac(model, data, jacp, None, point, model.geom_bodyid[geom])
        torque -= jacp.T @ np.array([0.0, 0.0, weight / len(points)])
    return torque


def lowest_points(model, data, geom, tie_m: float = 1e-6) -> list[np.ndarray]:
    """The geom's lowest point; both end points of a capsule lying level (dflex's contact candidates)."""
    centre, radius = data.geom_xpos[geom], model.geom_size[geom, 0]
    candidates = [centre]
    if model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_CAPSULE:
        half = data.geom_xmat[geom].reshape(3, 3)[:, 2] * model.geom_size[geom, 1]
        candidates = [centre + half, centre - half]
    low = min(p[2] for p in candidates)
    return [p - np.array([0.0, 0.0, radius]) for p in candidates if p[2] <= low + tie_m]


def dflex_drop(mass, ke, kd, radius, height, seconds, h=1 / 960):
    """A sphere of ``mass`` dropped on dflex's penalty ground (F = ke d + kd d max(0, -v)), semi-implicit Euler."""
    z, v, zs, vs = radius + height, 0.0, [], []
    for _ in range(int(seconds / h)):
        depth = radius - z
        force = ke * depth + kd * depth * max(0.0, -v) if depth > 0 else 0.0
        v += h * (-G + force / mass)
        z += h * v
        zs.append(z)
        vs.append(v)
    return np.array(zs), np.array(vs)


def mujoco_drop(mass, solref, solimp, radius, height, seconds, h=1 / 960):
    xml = f"""<mujoco><option gravity="0 0 -{G}" integrator="Euler" timestep="{h}"/><worldbody>
      <geom type="plane" size="5 5 1" contype="0" conaffinity="1" solref="{solref}" solimp="{solimp}"/>
      <body pos="0 0 {radius + height}"><freejoint/><geom type="sphere" size="{radius}" mass="{mass}"
      contype="1" conaffinity="0" condim="3" solref="{solref}" solimp="{solimp}"/></body></worldbody></mujoco>"""
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    zs, vs = [], []
    for _ in range(int(seconds / h)):
        mujoco.mj_step(model, data)
        zs.append(data.qpos[2])
        vs.append(data.qvel[2])
    return np.array(zs), np.array(vs)


def drop_summary(zs, vs, radius, height, h=1 / 960):
    """Penetration at rest (mean of the last second) and the rebound: the first bounce's apex / drop height."""
    first = int(np.argmax(zs < radius))
    rising = first + int(np.argmax(vs[first:] > 0))
    return {
        "rest_penetration_mm": 1000 * (radius - zs[-int(1 / h) :].mean()),
        "rebound": max(0.0, (zs[rising:].max() - radius) / height) if vs[first:].max() > 0 else 0.0,
    }


def contact_mapping(task: str, model: mujoco.MjModel) -> dict:
    f = DFLEX[task]
    per_contact = f["mass"] / f["stance"]
    solref = " ".join(f"{x:g}" for x in model.geom_solref[0])
    solimp = " ".join(f"{x:g}" for x in model.geom_solimp[0][:3])
    radius, height, seconds = f["radius"], 0.2, 6.0
    return {
        "mass_per_contact_kg": per_contact,
        "solref": solref,
        "solimp": solimp,
        "dflex_predicted_penetration_mm": 1000 * per_contact * G / f["ke"],
        "dflex": drop_summary(*dflex_drop(per_contact, f["ke"], f["kd"], radius, height, seconds), radius, height),
        "mujoco": drop_summary(*mujoco_drop(per_contact, solref, solimp, radius, height, seconds), radius, height),
    }


def start_qpos(task: str) -> np.ndarray:
    """The authors' start pose: the MJCF's init_qpos, which the env resets to before its noise."""
    return np.asarray(mjcf.load(diffrl_asset(SHAC_LOCOMOTION[task].body_xml)).init_q)


def mjx_env(task: str, substeps: int):
    cls = type(SHAC_LOCOMOTION[task].__name__, (SHAC_LOCOMOTION[task],), {"substeps": substeps})
    env = cls(backend="mjx")
    env.sys = env.sys.tree_replace(MJX_GRADIENT_SOLVER)
    return env


def rollout_program(env, steps):
    def run(key, actions):
        state = env.reset(key)

        def step(state, action):
            state = env.step(state, action)
            return state, (state.pipeline_state.qpos, state.obs[0])

        return jax.lax.scan(step, state, actions)[1]

    return jax.jit(jax.vmap(run))


def root_split(model: mujoco.MjModel) -> tuple[slice, slice]:
    """qpos slices of the torso's position and of the angles: a free root's (x, y, z) then the hinges after
    its quaternion; a planar root's (x, z) slides, then its pitch and the hinges."""
    if model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE:
        return slice(0, 3), slice(7, None)
    return slice(0, 2), slice(2, None)


def body_at_rest(task: str, model: mujoco.MjModel, seconds: float = 3.0) -> dict:
    """The whole body from its start pose under zero action for ``seconds`` (MuJoCo C with MJX's solver
    settings, dflex's soft limits applied every substep): the deepest ground penetration and the torso
    height over the last second. dflex's sink under its stance share would be m_c g / ke."""
    model = copy.copy(model)
    model.opt.timestep = 1 / 960 if task != "shac_humanoid" else 1 / 2880
    model.opt.solver, model.opt.iterations, model.opt.ls_iterations = mujoco.mjtSolver.mjSOL_NEWTON, 1, 4
    model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
    limits = soft_limits(model)
    data = mujoco.MjData(model)
    data.qpos[:] = start_qpos(task)
    steps, last = int(seconds / model.opt.timestep), int(1 / model.opt.timestep)
    depth, height = [], []
    for i in range(steps):
        data.qfrc_applied[:] = np.asarray(soft_limit_torque(data.qpos, model.nv, limits))
        mujoco.mj_step(model, data)
        if i >= steps - last:
            dists = [c.dist for c in data.contact[: data.ncon]]
            depth.append(-min(dists) if dists else 0.0)
            height.append(data.qpos[root_split(model)[0]][-1])
    f = DFLEX[task]
    return {
        "seconds": seconds,
        "max_penetration_mm": 1000 * float(np.max(depth)),
        "mean_deepest_penetration_mm": 1000 * float(np.mean(depth)),
        "dflex_predicted_penetration_mm": 1000 * f["mass"] / f["stance"] * G / f["ke"],
        "mean_torso_height_m": float(np.mean(height)),
    }


def substep_study(task: str, substeps: list[int], envs: int, seconds: float = 1.0) -> list[dict]:
    """Every count's trajectory from the same starts under the same random actions (U(-1, 1) per step),
    against the first count's; and env steps per second of a batch of ``envs``."""
    steps = int(round(seconds * 60))
    keys = jax.random.split(jax.random.PRNGKey(0), envs)
    rows, reference = [], None
    for n in substeps:
        env = mjx_env(task, n)
        actions = jax.random.uniform(jax.random.PRNGKey(1), (envs, steps, env.action_size), minval=-1, maxval=1)
        program = rollout_program(env, steps)
        start = time.perf_counter()
        qpos, height = jax.block_until_ready(program(keys, actions))
        compile_and_run = time.perf_counter() - start
        start = time.perf_counter()
        qpos, height = jax.block_until_ready(program(keys, actions))
        run_s = time.perf_counter() - start
        if reference is None:
            reference = (qpos, height)
        position, joints = root_split(env.sys.mj_model)
        row = {
            "substeps": n,
            "env_steps_per_s": envs * steps / run_s,
            "compile_s": compile_and_run - run_s,
            "finite": bool(np.all(np.isfinite(qpos))),
            "max_torso_position_deviation_m": float(np.max(np.abs(qpos[..., position] - reference[0][..., position]))),
            "mean_final_torso_position_deviation_m": float(
                np.mean(np.linalg.norm(qpos[:, -1, position] - reference[0][:, -1, position], axis=-1))
            ),
            "max_joint_deviation_rad": float(np.max(np.abs(qpos[..., joints] - reference[0][..., joints]))),
            "mean_height_m": float(np.mean(height)),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def measure(
    task: str, substeps: list[int] | None, envs: int, previous: dict | None = None, seconds: float = 1.0
) -> dict:
    """Mass, standing torque, contact mapping and rest penetration; then the substep study, or (``substeps``
    empty) ``previous``'s rows kept."""
    model = model_of(task)
    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in range(model.ngeom)]
    stance = [g for g, name in enumerate(names) if name and DFLEX[task]["feet"] in name]
    torque = standing_torque(model, stance, start_qpos(task))
    joints = [names_of_joint(model, j) for j in model.actuator_trnid[:, 0]]
    dofs = model.jnt_dofadr[model.actuator_trnid[:, 0]]
    result = {
        "task": task,
        "total_mass_kg": float(model.body_mass.sum()),
        "dflex_total_mass_kg": DFLEX[task]["mass"],
        "standing_torque_Nm": dict(zip(joints, torque[dofs].tolist())),
        "max_torque_Nm": dict(zip(joints, model.actuator_gear[:, 0].tolist())),
        "contact": contact_mapping(task, model),
        "body_at_rest": body_at_rest(task, model),
    }
    print(json.dumps({k: v for k, v in result.items()}, indent=1), flush=True)
    if substeps == []:
        result["substeps"] = (previous or {}).get("substeps", [])
    else:
        result["substeps"] = substep_study(task, substeps or SUBSTEPS[task], envs, seconds)
    return result


def names_of_joint(model, joint) -> str:
    return mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, joint)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=sorted(DFLEX))
    parser.add_argument("--substeps", nargs="+", type=int, default=None, help="default: the task's SUBSTEPS")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of the substep study's rollouts")
    parser.add_argument("--static-only", action="store_true", help="skip the substep study; keep the file's rows")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    kept = {r["task"]: r for r in json.loads(args.out.read_text())} if args.out.exists() else {}
    substeps = [] if args.static_only else args.substeps
    for task in args.tasks:
        kept[task] = measure(task, substeps, args.envs, kept.get(task), args.seconds)
    results = [kept[task] for task in DFLEX if task in kept]  # the file in a fixed task order
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
