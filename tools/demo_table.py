"""The table of the committed expert demos (``diffrl/data/demos/*.json``): what each expert cost and scored,
and what was kept, beside the paper's demo return. ``make demos`` runs it; ``make readme`` copies its output
into docs/ild.md.

    python tools/demo_table.py [--demos diffrl/data/demos] [--out docs/results/ild_demos.md]
"""

from __future__ import annotations

import argparse
import json
import pathlib

from diffrl.paper_results import PAPER_RESULTS, TASK_TITLES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def demo_rows(directory: pathlib.Path) -> list[str]:
    rows = []
    for path in sorted(directory.glob("*.json")):
        info = json.loads(path.read_text())
        task = info["task"]
        returns = info["returns"]
        paper = PAPER_RESULTS.get(("ild_fig", "demo", task))
        size_kb = path.with_suffix(".npz").stat().st_size / 1024
        rows.append(
            f"| {TASK_TITLES.get(task, task)} | {info['backend']} | {info['expert']} | "
            f"{int(info['config']['iterations']):,} | {info['expert_training_s'] / 60:.1f} min | "
            f"{info['expert_final_return']['mean']:.1f} | {info['full_length_rollouts']}/{info['rollouts']} | "
            f"{info['kept']} | {returns[0]:.1f} | {sum(returns) / len(returns):.1f} | "
            f"{'–' if paper is None else f'{paper[0]:.0f}'} | {size_kb:.0f} kB |"
        )
    return rows


def markdown(directory: pathlib.Path) -> str:
    header = (
        "| task | backend | expert | expert env steps | expert run (compile, training, eval) | expert's return "
        "(16 deterministic episodes) | full-length sampled episodes | demos kept | best demo's return | "
        "mean kept return | paper's demo | file |"
    )
    lines = [
        "128-step returns. Made by `make demos BUDGET=quick` on 2 CPU cores; each file's `.json` has its command.",
        "",
        header,
        "|" + "---|" * header.count(" | ") + "---|",
        *demo_rows(directory),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=pathlib.Path, default=ROOT / "diffrl" / "data" / "demos")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "results" / "ild_demos.md")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(args.demos))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
