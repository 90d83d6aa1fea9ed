"""``diffrl plot <sweep dir> [...]``: learning curves per task (PNG and SVG) from the jobs' metrics.jsonl."""

from __future__ import annotations

import argparse
import pathlib
import sys

from diffrl.plots import write_plots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="diffrl plot", description=__doc__)
    parser.add_argument("sweep_dirs", nargs="+", type=pathlib.Path, help="sweep directories")
    parser.add_argument("--out", type=pathlib.Path, help="output directory (default: the first sweep dir)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir():
            parser.error(f"{sweep_dir} is not a directory")
    paths = write_plots(args.sweep_dirs, args.out or args.sweep_dirs[0])
    if not paths:
        print("no metrics.jsonl found: nothing to plot", file=sys.stderr)
        sys.exit(1)
    print("\n".join(f"wrote {p}" for p in paths))


if __name__ == "__main__":
    main()
