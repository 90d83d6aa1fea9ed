"""Progress for a training run: a rich progress bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import logging
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from diffrl.loggers import format_metrics_line

log = logging.getLogger("diffrl")


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]


class ProgressDisplay:
    """Shows iterations, env steps, return, steps/s and ETA.

    On a terminal a rich bar is drawn and the per-chunk lines go to ``train.log`` only (the console
    handlers are quietened while the bar is live); otherwise every chunk is one plain log line.
    """

    def __init__(self, options: Any, total: int, start: int, enabled: bool = True):
        mode = str(options.get("progress_bar", "auto")).lower()
        self.bar = enabled and (mode == "true" or (mode == "auto" and sys.stdout.isatty()))
        self.enabled = enabled
        self.total, self.start = total, start
        self._progress: Progress | None = None
        self._saved_levels: list[tuple[logging.Handler, int]] = []

    def __enter__(self) -> ProgressDisplay:
        if self.bar:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(file=sys.stdout),
                transient=False,
            )
            self._task = self._progress.add_task("train", total=self.total, completed=self.start, info="compiling...")
            self._progress.start()
            for handler in _console_handlers():
                self._saved_levels.append((handler, handler.level))
                handler.setLevel(logging.WARNING)
        return self

    def update(self, row: dict[str, Any]) -> None:
        line = f"iter {row['iteration']}/{self.total} " + format_metrics_line(
            {k: v for k, v in row.items() if k != "iteration"}
        )
        if self.enabled:
            log.info(line)
        if self._progress is not None:
            info = (
                f"steps {row['env_steps']:.3g}  return {row.get('return_mean', float('nan')):.4g}"
                f"  {row['steps_per_second']:.3g} steps/s"
            )
            self._progress.update(self._task, completed=row["iteration"], info=info)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
        for handler, level in self._saved_levels:
            handler.setLevel(level)
