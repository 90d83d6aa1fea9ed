"""Copies generated results into the README: every block between

    <!-- generated from docs/results/<...>.md by `make readme` -->
    ...
    <!-- end generated -->

is replaced by that file's content, so that no measured table in the README is typed by hand: each one
is a committed file written by a command (`diffrl table ... --out docs/results/...`), and the README
shows it. `--check` exits non-zero if the README differs from its files (the tests run it).

    python tools/sync_readme.py [--check] [README.md docs/cluster.md]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(?P<start><!-- generated from (?P<source>\S+) by `make readme` -->\n)"
    r"(?P<body>.*?)(?P<end><!-- end generated -->)",
    re.DOTALL,
)


def synced(text: str, root: pathlib.Path = ROOT) -> str:
    """The README with every generated block refilled from its source file (relative to ``root``)."""

    def refill(match: re.Match) -> str:
        source = root / match["source"]
        if not source.is_file():
            raise FileNotFoundError(f"README block names {match['source']}, which does not exist")
        return match["start"] + source.read_text().rstrip("\n") + "\n" + match["end"]

    return BLOCK.sub(refill, text)


# The files with generated blocks; sources are relative to the repo.
DOCUMENTS = ("README.md", "docs/cluster.md", "docs/ild.md")


def source_root(document: pathlib.Path) -> pathlib.Path:
    """Where a document's block sources live: the repository for its own documents, else the file's folder."""
    document = document.resolve()
    return ROOT if document.is_relative_to(ROOT) else document.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("documents", nargs="*", type=pathlib.Path, default=[ROOT / d for d in DOCUMENTS])
    parser.add_argument("--check", action="store_true", help="only report whether the documents are in sync")
    args = parser.parse_args(argv)
    stale = 0
    for document in args.documents:
        text = document.read_text()
        new = synced(text, source_root(document))
        if args.check:
            if new != text:
                print(f"{document} is out of sync with its generated files: run `make readme`", file=sys.stderr)
                stale += 1
            continue
        document.write_text(new)
        print(f"{document}: {len(BLOCK.findall(text))} generated blocks refilled")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
