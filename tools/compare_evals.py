"""Two methods' deterministic returns compared seed by seed, from ``diffrl eval``'s ``eval.json`` files.

Each ``eval.json`` holds one run's seeds (``benchmarks.reward_terms``' JSON is read too: its first run's
per-seed returns, without per-episode errors); a method's files are pooled (runs of other seed families add seeds).
The seeds pair up in the order given (same family, same index: the same init key and the same evaluation
start states), so list both methods' files in the same family order. Prints, as markdown, each seed's return
(with the standard error over its episodes), the mean ± std over seeds (population std, as ``diffrl table``),
the paired differences, and one-sided tests that A's mean is above B's (Welch's t over the seeds; the paired t).

    python tools/compare_evals.py --a shac/eval.json shac_s1/eval.json --b ppo/eval.json ppo_s1/eval.json \
        [--names SHAC PPO] [--out comparison.md]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
from scipy import stats


def run_label(path: pathlib.Path) -> str:
    """A run's eval.json is named by its run directory; a renamed copy by its own name."""
    return path.parent.name if path.name == "eval.json" else path.stem


def load(paths: list[pathlib.Path]) -> list[tuple[pathlib.Path, dict]]:
    return [(path, json.loads(path.read_text())) for path in paths]


def seed_returns(files: list[tuple[pathlib.Path, dict]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-seed mean return, its standard error over the seed's episodes, and a label per seed."""
    means, errors, labels = [], [], []
    for path, result in files:
        if "results" in result:  # benchmarks.reward_terms' file: per-seed means only, its first run
            per_seed = result["results"][0]["deterministic"]["return"]["per_seed"]
            means.extend(per_seed)
            errors.extend([np.nan] * len(per_seed))
            count = result["episodes_per_seed"]
            labels.extend(f"{run_label(path)}[{i}] ({count} episodes)" for i in range(len(per_seed)))
            continue
        episodes = np.asarray(result["return_per_episode"], dtype=float)  # [seeds, episodes]
        means.extend(episodes.mean(axis=1))
        errors.extend(episodes.std(axis=1, ddof=1) / np.sqrt(episodes.shape[1]))
        labels.extend(f"{run_label(path)}[{i}] ({episodes.shape[1]} episodes)" for i in range(episodes.shape[0]))
    return np.asarray(means), np.asarray(errors), labels


def with_error(mean: float, error: float) -> str:
    return f"{mean:.1f}" if np.isnan(error) else f"{mean:.1f} ± {error:.1f}"


def check_same_start_states(files: list[tuple[pathlib.Path, dict]]) -> None:
    """Paired seeds must have seen the same start states: every file's eval seed alike."""
    seeds = {str(path): result.get("eval_seed") for path, result in files}
    if len(set(seeds.values())) > 1:
        listed = ", ".join(f"{path}: {seed}" for path, seed in seeds.items())
        raise SystemExit(f"the files were evaluated from different start states (eval seeds {listed})")


def comparison(a: list[pathlib.Path], b: list[pathlib.Path], names: tuple[str, str]) -> str:
    a_files, b_files = load(a), load(b)
    check_same_start_states([*a_files, *b_files])
    a_mean, a_err, a_labels = seed_returns(a_files)
    b_mean, b_err, b_labels = seed_returns(b_files)
    if len(a_mean) != len(b_mean):
        raise SystemExit(f"{names[0]} has {len(a_mean)} seeds and {names[1]} {len(b_mean)}: they must pair up")
    lines = [
        f"| seed ({names[0]} / {names[1]}) | {names[0]} | {names[1]} | difference |",
        "|---|---|---|---|",
    ]
    for la, lb, ma, ea, mb, eb in zip(a_labels, b_labels, a_mean, a_err, b_mean, b_err):
        lines.append(f"| {la} / {lb} | {with_error(ma, ea)} | {with_error(mb, eb)} | {ma - mb:+.1f} |")
    diff = a_mean - b_mean
    lines.append(
        f"| **mean ± std over {len(a_mean)} seeds** | **{a_mean.mean():.1f} ± {a_mean.std():.1f}** | "
        f"**{b_mean.mean():.1f} ± {b_mean.std():.1f}** | **{diff.mean():+.1f}** |"
    )
    welch = stats.ttest_ind(a_mean, b_mean, equal_var=False, alternative="greater")
    paired = stats.ttest_rel(a_mean, b_mean, alternative="greater")
    lines += [
        "",
        f"{names[0]} above {names[1]} on {int(np.sum(diff > 0))} of {len(diff)} seed pairs. One-sided tests that "
        f"{names[0]}'s mean is above {names[1]}'s: Welch's t = {welch.statistic:.2f}, p = {welch.pvalue:.3f}; "
        f"paired t = {paired.statistic:.2f}, p = {paired.pvalue:.3f}. (± after a seed's return: the standard "
        "error over its episodes.)",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=pathlib.Path, nargs="+", required=True, help="method A's eval.json files")
    parser.add_argument("--b", type=pathlib.Path, nargs="+", required=True, help="method B's eval.json files")
    parser.add_argument("--names", nargs=2, default=("A", "B"))
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    table = comparison(args.a, args.b, tuple(args.names))
    print(table, end="")
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
