"""``diffrl <command> [hydra overrides]``: pops the subcommand and hands the rest to its Hydra app.

Every Hydra feature keeps working (``key=value``, ``-m``, ``--cfg job``, ``--info``, launcher
overrides). Before Hydra sees the overrides, config-group choices are checked so that a typo gets
one readable line listing the valid choices, and ``resume=<run dir>`` is expanded into the original
run's overrides so the resumed run composes exactly the same config into the same directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pathlib
import sys

import yaml
from omegaconf import OmegaConf

CONF_DIR = pathlib.Path(__file__).resolve().parents[1] / "conf"
COMMANDS = {
    "train": ("cli.train", "train a policy: diffrl train env=acrobot algo=cem [key=value ...] [-m]"),
    "eval": (
        "cli.evaluate",
        "evaluate a finished or interrupted run: diffrl eval <run dir> [episodes=N html=true]",
    ),
    "table": ("cli.table", "results table beside the paper's: diffrl table <sweep dir> [...] [--out DIR]"),
    "plot": ("cli.plot", "learning curves of sweeps: diffrl plot <sweep dir> [...] [--out DIR]"),
    "demos": (
        "cli.demos",
        "train an expert and save its best episodes as demos: diffrl demos env=hopper [expert=ppo|sac budget=quick]",
    ),
    "gradients": (
        "cli.gradients",
        "gradient report for one task: diffrl gradients env=hopper [env.backend=mjx policy=mlp ...]",
    ),
}
CHECKED_GROUPS = ("env", "algo", "policy", "hardware", "logger", "tuned", "experiment", "debug", "launcher")
# Launchers that live in a Hydra plugin, and the extra that installs it.
LAUNCHER_PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
}


class UsageError(Exception):
    pass


def job_suffix(override_dirname: str) -> str:
    """``_<the job's other overrides>`` for a sweep job's directory name (``""`` when there are none), so
    that every job of a sweep over seeds or hyperparameters gets a directory of its own."""
    return "_" + override_dirname.replace("/", "_") if override_dirname else ""


if not OmegaConf.has_resolver("job_suffix"):  # a submitit job imports this module again
    OmegaConf.register_new_resolver("job_suffix", job_suffix)


def usage() -> str:
    lines = ["usage: diffrl <command> [key=value ...] [-m] [--help]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += [
        "",
        "train, eval, demos and gradients are Hydra apps: `diffrl train --help` lists their config groups",
        "and options; table and plot take plain arguments: `diffrl table --help`.",
    ]
    return "\n".join(lines)


def group_choices(group: str) -> list[str]:
    folder = CONF_DIR / group
    # `_base.yaml` and the like are building blocks of a group's configs, not choices.
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")) if folder.is_dir() else []


def check_group_choices(overrides: list[str]) -> None:
    """``algo=nope`` -> one line naming the valid choices (Hydra's own message is many lines)."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key not in CHECKED_GROUPS or not value or "(" in value or value == "null":
            continue
        valid = group_choices(key)
        for choice in value.split(","):
            if choice not in valid:
                raise UsageError(f"unknown {key} {choice!r}; valid choices: {', '.join(valid) or '(none)'}")
            if key == "launcher" and choice in LAUNCHER_PLUGINS:
                check_plugin_installed(choice)


def check_plugin_installed(launcher: str) -> None:
    module, extra = LAUNCHER_PLUGINS[launcher]
    if importlib.util.find_spec(module) is None:
        raise UsageError(f'launcher={launcher} needs its Hydra plugin: pip install -e ".[{extra}]"')


# Launchers that run every job of a sweep in this process or in reused worker processes, where JAX's
# platform, fixed by the first job, cannot change; and launchers that give each job its own process and
# ask for its devices (hydra.launcher.gpus_per_node).
SHARED_PROCESS_LAUNCHERS = ("local", "joblib")
SUBMITIT_LAUNCHERS = ("slurm", "submitit_local")


def override_values(overrides: list[str], key: str, default: str) -> list[str]:
    """The values an override gives ``key`` (a comma list in a sweep), or ``[default]``."""
    given = [o.lstrip("+~").partition("=")[2] for o in overrides if o.lstrip("+~").partition("=")[0] == key]
    return given[-1].split(",") if given else [default]


def check_launch(overrides: list[str]) -> None:
    """Sweeps that cannot run as asked, refused before Hydra launches anything."""
    if not {"-m", "--multirun"} & set(overrides):
        return
    launcher = override_values(overrides, "launcher", "local")[-1]
    hardware = sorted(set(override_values(overrides, "hardware", "cpu")))
    if len(hardware) > 1 and launcher in SHARED_PROCESS_LAUNCHERS:
        raise UsageError(
            f"-m hardware={','.join(hardware)} with launcher={launcher}: the jobs share processes, and JAX's "
            "platform cannot change inside one; use launcher=submitit_local or launcher=slurm (a process per "
            "job), or one sweep per hardware"
        )
    if "gpu" in hardware and launcher in SUBMITIT_LAUNCHERS:
        default = yaml.safe_load((CONF_DIR / "launcher" / f"{launcher}.yaml").read_text())["hydra"]["launcher"]
        gpus = override_values(overrides, "hydra.launcher.gpus_per_node", str(default["gpus_per_node"]))[-1]
        if not gpus.isdigit() or int(gpus) < 1:
            raise UsageError(
                f"hardware=gpu with launcher={launcher} asks for no GPU per job (hydra.launcher.gpus_per_node="
                f"{gpus}): add hydra.launcher.gpus_per_node=1, or use hardware=cpu"
            )


def hydra_literal(value: str) -> str:
    """``value`` quoted for Hydra's override grammar, so that it is taken as it is: a sweep job's directory
    name holds its other overrides (``..._seed0_iterations=2,num_seeds=2``), whose ``=`` and ``,`` Hydra
    would parse as syntax. A value the user quoted already is left alone."""
    if value[:1] in ("'", '"'):
        return value
    return "'" + value.replace("'", "\\'") + "'"


def unquoted(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in ("'", '"') else value


def literal_run_dir(overrides: list[str]) -> list[str]:
    """``diffrl eval``'s run directory, taken literally: ``run_dir=<dir>`` or the directory alone, as printed."""
    out = []
    for override in overrides:
        if override.startswith("run_dir="):
            override = "run_dir=" + hydra_literal(override.partition("=")[2])
        elif not override.startswith("-") and pathlib.Path(override).is_dir():
            override = "run_dir=" + hydra_literal(override)
        out.append(override)
    return out


def expand_resume(overrides: list[str]) -> list[str]:
    """``resume=<dir>`` -> the run's saved overrides + ``hydra.run.dir=<dir>`` + ``resume=<dir>``, the
    directory quoted for Hydra (``hydra_literal``)."""
    resume = [o for o in overrides if o.startswith("resume=")]
    if not resume or resume[-1] == "resume=auto":  # auto: each job of a sweep decides in its own directory
        return overrides
    run_dir = pathlib.Path(unquoted(resume[-1].partition("=")[2])).expanduser().absolute()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise UsageError(f"resume: {run_dir} is not a diffrl run directory (no .hydra/overrides.yaml)")
    original = [o for o in yaml.safe_load(saved.read_text()) or [] if not o.startswith(("resume=", "hydra."))]
    extra = [o for o in overrides if not o.startswith("resume=")]
    literal = hydra_literal(str(run_dir))
    return original + extra + [f"hydra.run.dir={literal}", f"resume={literal}"]


class _DropNotices(logging.Filter):
    """MuJoCo MJX logs its default device at INFO on the root logger for every env it builds."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Using JAX default device")


def quiet_libraries() -> None:
    # XLA's C++ logger reports harmless CPU-feature mismatches on every cached executable it loads.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger().addFilter(_DropNotices())


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"diffrl: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    try:
        if command == "demos":  # the expert is an algo of its own: `expert=sac` is `algo=sac`
            rest = ["algo" + o[len("expert") :] if o.startswith("expert=") else o for o in rest]
        check_group_choices(rest)
        if command == "train":
            check_launch(rest)
            rest = expand_resume(rest)
        if command == "eval":
            rest = literal_run_dir(rest)
    except UsageError as err:
        print(f"diffrl {command}: error: {err}", file=sys.stderr)
        sys.exit(2)
    quiet_libraries()
    sys.argv = [f"diffrl-{command}", *rest]
    importlib.import_module(COMMANDS[command][0]).main()


if __name__ == "__main__":
    main()
