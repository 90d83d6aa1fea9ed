"""``diffrl table <sweep dir> [...]``: results.md and results.csv from the sweeps' summary.json files."""

from __future__ import annotations

import argparse
import pathlib
import sys

from diffrl.paper_results import PAPERS
from diffrl.tables import METRICS, write_tables


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="diffrl table", description=__doc__)
    parser.add_argument("sweep_dirs", nargs="+", type=pathlib.Path, help="sweep directories")
    parser.add_argument("--out", type=pathlib.Path, help="output directory (default: the first sweep dir)")
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default="final_return",
        help="final_return: diffrl's final evaluation (default); "
        "final_train_return: the last training return (what the paper reports); "
        "final_sampled_return: the final evaluation with sampled actions (ILD, BC)",
    )
    parser.add_argument(
        "--paper", choices=sorted(PAPERS), help="paper table to compare with (default: the sweep's experiment)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir():
            parser.error(f"{sweep_dir} is not a directory")
    md_path, csv_path = write_tables(args.sweep_dirs, args.out or args.sweep_dirs[0], args.metric, args.paper)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")


if __name__ == "__main__":
    main()
