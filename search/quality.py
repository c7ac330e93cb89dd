"""Moment-retrieval quality on long synthetic videos.

    python -m search.quality --data data/synthetic --checkpoint output/demo/seqTransf/checkpoints/epoch_14 \\
        --out output/search_quality/seqTransf

Writes long videos made of the benchmark's held-out test clips (``search.synthetic_long``),
indexes them with the checkpoint, and asks every inner clip's caption. A query is *right*
when the first result is the video holding that clip and its best range overlaps the clip's
true time range with IoU >= 0.5; also reported: right video first, and IoU >= 0.5 for any of
the first result's ranges.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from search.windows import interval_iou  # noqa: E402

IOU_MIN = 0.5


def evaluate(index, long_meta: dict, per_video: int = 3) -> dict:
    """Share of queries (in percent) with the right video first and IoU >= 0.5."""
    right_video = best_range = any_range = total = 0
    misses = []
    for video in long_meta["videos"]:
        for clip in video["clips"]:
            results = index.query(clip["caption"], top=5, per_video=per_video)
            total += 1
            truth = (clip["start"], clip["end"])
            if not results or results[0]["path"] != video["file"]:
                misses.append({"caption": clip["caption"], "why": "wrong video",
                               "got": results[0]["path"] if results else None})
                continue
            right_video += 1
            ious = [interval_iou((r["start"], r["end"]), truth) for r in results[0]["ranges"]]
            best_range += ious[0] >= IOU_MIN
            any_range += max(ious) >= IOU_MIN
            if ious[0] < IOU_MIN:
                misses.append({"caption": clip["caption"], "why": f"IoU {ious[0]:.2f}", "truth": truth,
                               "got": [(r["start"], r["end"]) for r in results[0]["ranges"]]})
    pct = lambda n: 100.0 * n / max(total, 1)  # noqa: E731
    return {"queries": total, "right_video_first": pct(right_video), "right_video_and_best_range_iou50": pct(best_range),
            "right_video_and_any_range_iou50": pct(any_range), "misses": misses}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthetic", help="the demo's synthetic dataset (its test split is used)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint folder of the demo (seqTransf or meanP)")
    p.add_argument("--out", required=True, help="long videos, the index and quality.json go here")
    p.add_argument("--clips_per_video", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from search.api import open_index
    from search.indexer import IndexOptions, format_summary, run_index
    from search.synthetic_long import LONG_META, write_long_videos

    out = Path(args.out)
    meta_path = out / LONG_META
    long_meta = (json.loads(meta_path.read_text()) if meta_path.is_file()
                 else write_long_videos(args.data, out, args.clips_per_video))
    summary = run_index(IndexOptions(roots=[str(out / "videos")], index=str(out / "index"),
                                     model={"init_model": args.checkpoint}, workers=args.workers, progress=False))
    print(format_summary(summary))
    quality = evaluate(open_index(out / "index"), long_meta)
    (out / "quality.json").write_text(json.dumps(quality, indent=1))
    print(f"{quality['queries']} queries: right video first {quality['right_video_first']:.1f}%, "
          f"right video and best range IoU >= 0.5 {quality['right_video_and_best_range_iou50']:.1f}%, "
          f"right video and any range IoU >= 0.5 {quality['right_video_and_any_range_iou50']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
