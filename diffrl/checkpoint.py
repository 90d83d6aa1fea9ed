"""Checkpoints with orbax: the whole vmapped train state plus the host's counters.

Everything needed to resume lives here; everything needed to rebuild the policy is the run
directory's ``.hydra/config.yaml`` plus the train state. Orbax writes to a temporary folder and
renames it when complete, so a run killed mid-save keeps its previous checkpoint intact.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _storable(tree: Any) -> Any:
    """Orbax refuses zero-size arrays (MJX's state has some, e.g. ``act`` without actuator dynamics):
    each is stored as a one-element placeholder and rebuilt from the template on restore."""
    return jax.tree.map(lambda x: np.zeros((1,), x.dtype) if x.size == 0 else x, tree)


class Checkpointer:
    def __init__(self, directory: pathlib.Path, max_to_keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        """Every step kept, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, host: dict) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(_storable(state)), host=ocp.args.JsonSave(host))
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()

    def restore(self, like_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores the state into the structure, shapes and dtypes of ``like_state``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _storable(like_state))
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=args)
        state = jax.tree.map(lambda like, x: like if like.size == 0 else x, like_state, restored["state"])
        return state, restored["host"]

    def close(self) -> None:
        self._manager.close()
