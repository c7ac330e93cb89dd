"""`python -m search status IDX [--json]`."""

from __future__ import annotations

import argparse
import json
import sys

from search.store import SearchIndexError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="IDX", help="index folder")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def main(args: argparse.Namespace) -> int:
    from search.api import open_index
    from search.status import format_status

    try:
        status = open_index(args.index).status()
    except SearchIndexError as err:
        print(f"search status: {err}", file=sys.stderr)
        return 2
    print(json.dumps(status, ensure_ascii=False) if args.json else format_status(status))
    return 0
