"""One job across several local devices (``hardware.devices``): the vmapped seed axis is sharded over a
one-dimensional mesh, each device running the same compiled chunk on its own slice of the seeds. When the
device count does not divide the seeds (one seed on two devices), the population algorithms (CE-APG, PAPG,
CEM) shard their population instead: each device refines or scores its own slice of the candidates, and
the elite selection sees them all.

Seeds never talk to each other inside a training step, so the sharded program is the unsharded one run
per slice (``shard_map``), with no collective. On CPU, ``hardware.devices=<n>`` asks XLA for ``n`` host
devices (``--xla_force_host_platform_device_count``), each on one thread (``--xla_cpu_multi_thread_eigen=false``),
so a laptop runs the sharded program too. Under the same XLA flags, a device's seeds are computed bit for bit
as a one-device run with that many seeds computes them; against one device holding all the seeds, an
algorithm whose arithmetic depends on the seed batch (CE-APG's does, CEM's does not) moves by round-off
(docs/cluster.md).
"""

from __future__ import annotations

import os
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffrl.errors import ConfigError

SEED_AXIS = "seeds"
POPULATION_AXIS = "population"
HOST_DEVICE_FLAG = "--xla_force_host_platform_device_count"
SINGLE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"


class DeviceError(ConfigError):
    """A device count that cannot run this job; raised before anything is compiled."""


def requested_devices(value: Any) -> int | str:
    """``hardware.devices`` as an int >= 1 or ``"all"``; anything else is refused in one line."""
    if isinstance(value, str) and value == "all":
        return "all"
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or str(count) != str(value).strip():
        raise DeviceError(f"hardware.devices={value!r}: expected a device count >= 1, or all")
    return count


def check_divides(devices: int, num_seeds: int, what: str = "num_seeds", population: int | None = None) -> None:
    """Each device takes an equal share of the seeds, or else (``population`` given) of the population."""
    if num_seeds % devices == 0 or (population is not None and population % devices == 0):
        return
    if population is None:
        raise DeviceError(
            f"hardware.devices={devices} does not divide {what}={num_seeds}: each device trains an equal share "
            f"of the seeds; use {what}=<a multiple of {devices}> or hardware.devices=<a divisor of {num_seeds}>"
        )
    raise DeviceError(
        f"hardware.devices={devices} divides neither {what}={num_seeds} nor the population ({population}): each "
        f"device trains an equal share of the seeds, or else of each seed's population; use {what}=<a multiple "
        f"of {devices}> or hardware.devices=<a divisor of {num_seeds} or {population}>"
    )


def request_host_devices(hardware) -> None:
    """On CPU, ``hardware.devices=<n>`` makes XLA expose n host devices, each computing on one thread (a
    device per core; Eigen's own threads would only compete with the other devices). Must run before JAX's
    backend starts; flags already in XLA_FLAGS win."""
    count = requested_devices(hardware.get("devices", 1))
    if hardware.platform != "cpu" or not isinstance(count, int) or count == 1:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if HOST_DEVICE_FLAG not in flags:
        flags += f" {HOST_DEVICE_FLAG}={count}"
    if SINGLE_THREAD_FLAG.split("=")[0] not in flags:
        flags += f" {SINGLE_THREAD_FLAG}"
    os.environ["XLA_FLAGS"] = flags.strip()


def local_devices(value: Any, shared: int, what: str = "num_seeds", population: int | None = None) -> list[jax.Device]:
    """The devices this job spreads ``shared`` (its seeds, or a Brax agent's envs), or else its
    ``population``, over; after JAX is configured, before any compile."""
    count = requested_devices(value)
    available = jax.local_devices()
    count = len(available) if count == "all" else count
    if count > len(available):
        platform = available[0].platform
        hint = (
            f"; on CPU set XLA_FLAGS={HOST_DEVICE_FLAG}={count} before the first job of this process "
            "(a sweep's later jobs cannot add devices), or use a launcher with a process per job"
            if platform == "cpu"
            else ""
        )
        raise DeviceError(f"hardware.devices={value}: JAX sees {len(available)} {platform} device(s){hint}")
    check_divides(count, shared, what, population)
    return available[:count]


def seed_mesh(devices: list[jax.Device]) -> Mesh | None:
    """A mesh over ``devices`` with one axis, the seeds; ``None`` for one device (no sharding at all)."""
    return Mesh(devices, (SEED_AXIS,)) if len(devices) > 1 else None


def population_mesh(devices: list[jax.Device]) -> Mesh | None:
    """A mesh over ``devices`` with one axis, an algorithm's population; ``None`` for one device."""
    return Mesh(devices, (POPULATION_AXIS,)) if len(devices) > 1 else None


def over_population(fn, mesh: Mesh | None):
    """``jax.vmap(fn)`` over the leading (population) axis of every argument and output; with a mesh, each
    device maps its own slice (values ``fn`` closes over are replicated)."""
    mapped = jax.vmap(fn)
    if mesh is None:
        return mapped
    spec = PartitionSpec(POPULATION_AXIS)
    return jax.shard_map(mapped, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)


def shard_seeds(tree: Any, mesh: Mesh | None) -> Any:
    """Places every leaf's leading (seed) axis across the mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(SEED_AXIS)))


def per_seed_shards(fn, mesh: Mesh | None, out_seed_axis: Any):
    """``fn`` (a function of seed-batched states) run on each device's slice of the seeds.
    ``out_seed_axis``: a pytree prefix of the outputs giving each one's seed axis (0, 1, ...)."""
    if mesh is None:
        return fn
    spec = lambda axis: PartitionSpec(*([None] * axis), SEED_AXIS)
    out_specs = jax.tree.map(spec, out_seed_axis)
    return jax.shard_map(fn, mesh=mesh, in_specs=PartitionSpec(SEED_AXIS), out_specs=out_specs, check_vma=False)
