"""One logger, several sinks: console lines, a JSONL file and wandb, each switched on in config.

The runner makes one ``log(metrics, step)`` call per compiled chunk; sinks decide how to show it.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


def to_jsonable(value: Any) -> Any:
    """numpy/jax scalars and arrays -> plain Python; NaN and inf -> None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Sink(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per call; on resume, drops lines past the restored step first. A new run
    never touches an existing file: it is another job's (a sweep whose job directories collide)."""

    def __init__(self, path: pathlib.Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["iteration"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif path.exists():
            raise FileExistsError(f"{path} exists and this run is not resuming it: it belongs to another run")
        self._file = path.open("a")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._file.write(json.dumps(to_jsonable(metrics)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class WandbSink:
    """A wandb run in the run directory; offline by default so no account or network is needed."""

    def __init__(self, run_dir: pathlib.Path, config: dict, options: dict, name: str, resume_id: str | None = None):
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=options["project"],
            entity=options.get("entity"),
            group=options.get("group"),
            tags=list(options.get("tags") or []),
            mode=options.get("mode", "offline"),
            dir=str(run_dir),
            name=name,
            config=config,
            id=resume_id,
            resume="allow" if resume_id else None,
            reinit="finish_previous",
            settings=wandb.Settings(silent=True),  # our console shows progress; wandb's banner is noise
        )

    @property
    def run_id(self) -> str:
        return self.run.id

    def log(self, metrics: dict[str, Any], step: int) -> None:
        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        for k, v in metrics.items():  # per-seed lists become return/seed0, return/seed1, ...
            if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
                flat.update({f"{k}/seed{i}": x for i, x in enumerate(v)})
        self.run.log(flat, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(to_jsonable(values))

    def close(self) -> None:
        self.run.finish()


class MetricLogger:
    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    def log(self, metrics: dict[str, Any], step: int) -> None:
        metrics = to_jsonable(metrics)
        for sink in self.sinks:
            sink.log(metrics, step)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # closing one sink must not stop the others from flushing
                log.exception("closing %s failed", type(sink).__name__)


def format_metrics_line(metrics: dict[str, Any]) -> str:
    """A compact one-line view of a chunk's metrics for the console and train.log."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, (list, np.ndarray)):
            continue
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)
