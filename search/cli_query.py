"""`python -m search query IDX "text" [--top K] [--per-video N] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys

from search.store import SearchIndexError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", metavar="IDX", help="index folder")
    parser.add_argument("text", help="what to look for, in words")
    parser.add_argument("--top", type=int, default=10, help="videos to return")
    parser.add_argument("--per-video", "--per_video", dest="per_video", type=int, default=3,
                        help="time ranges per video")
    parser.add_argument("--exact", action="store_true", help="exact search even on a large index")
    parser.add_argument("--timeline", action="store_true", help="add every window's score (JSON output)")
    parser.add_argument("--json", action="store_true", help="one JSON object per result")
    parser.add_argument("--device", default=None)


def clock(seconds: float) -> str:
    """12.5 -> '0:12.5'; 3725 -> '1:02:05.0'."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def format_results(results: list[dict]) -> str:
    if not results:
        return "no results (the index is empty)"
    lines = [f"{'rank':>4}  {'score':>6}  {'ranges (start-end score)':<40}  video"]
    for r in results:
        ranges = ", ".join(f"{clock(x['start'])}-{clock(x['end'])} {x['score']:.3f}" for x in r["ranges"])
        lines.append(f"{r['rank']:>4}  {r['score']:6.3f}  {ranges:<40}  {r['path']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from search.api import open_index

    try:
        index = open_index(args.index, device=args.device)
        results = index.query(args.text, top=args.top, per_video=args.per_video, exact=args.exact,
                              timeline=args.timeline)
    except (SearchIndexError, ValueError) as err:
        print(f"search query: {err}", file=sys.stderr)
        return 2
    if args.json:
        for result in results:
            print(json.dumps(result, ensure_ascii=False))
    else:
        print(format_results(results))
    return 0
