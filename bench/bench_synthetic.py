"""Synthetic temporal benchmark, long schedule: the demo's pipeline (real entry point, mp4
decoding through the loader, real evaluation) trained longer. At most 30 minutes on 2 cores.

    python -m bench.bench_synthetic                       # defaults below
    python -m bench.bench_synthetic --seq_epochs 30 --out output/bench_synthetic

Prints a markdown table (the one in ``bench/RESULTS.md``, section "Synthetic temporal
benchmark") and writes it to ``<out>/table.md``, with seconds per run and per optimizer step.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from demo.synthetic_demo import DEMO, Schedule, report, run_pipeline

REPO = Path(__file__).resolve().parent.parent

LONG = Schedule(num_train=DEMO.num_train, num_test=DEMO.num_test, seq_epochs=40, meanp_epochs=14)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO / "data" / "synthetic"), help="dataset folder (generated when missing)")
    p.add_argument("--out", default=str(REPO / "output" / "bench_synthetic"))
    p.add_argument("--seq_epochs", type=int, default=LONG.seq_epochs)
    p.add_argument("--meanp_epochs", type=int, default=LONG.meanp_epochs)
    p.add_argument("--workers", type=int, default=LONG.workers)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[bench %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    schedule = Schedule(num_train=LONG.num_train, num_test=LONG.num_test, seq_epochs=args.seq_epochs,
                        meanp_epochs=args.meanp_epochs, workers=args.workers)
    data_dir, out_root = Path(args.data), Path(args.out)
    start = time.time()
    summary = run_pipeline(data_dir, out_root, schedule, zeroshot=False)
    summary["seconds"]["total"] = time.time() - start
    per_step = {h: summary["seconds"][h] / summary["steps"][h] for h in summary["results"] if summary["steps"][h]}
    text = report(summary, out_root, data_dir)
    text += "\n\nSeconds per optimizer step (whole run, evaluations included): " + ", ".join(
        f"{h} {s:.2f}" for h, s in per_step.items())
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "table.md").write_text(text + "\n")
    (out_root / "summary.json").write_text(json.dumps({**summary, "seconds_per_step": per_step}, indent=1))
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
