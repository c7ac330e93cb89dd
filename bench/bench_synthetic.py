"""Synthetic temporal benchmark, long schedule: the demo's pipeline (real entry point, mp4
decoding through the loader, real evaluation) trained longer. At most 30 minutes on 2 cores.

    python -m bench.bench_synthetic                       # = python -m synthetic.demo --long
    python -m bench.bench_synthetic --seq_epochs 30 --out output/bench_synthetic

Prints a markdown table (the one in ``bench/RESULTS.md``, section "Synthetic temporal
benchmark") and writes it to ``<out>/table.md``, with seconds per run and per optimizer step.
The pipeline lives in :mod:`synthetic.demo`.
"""

from __future__ import annotations

import sys

from synthetic.demo import main

if __name__ == "__main__":
    sys.exit(main(["--long", *sys.argv[1:]]))
