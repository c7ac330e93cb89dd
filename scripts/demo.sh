#!/usr/bin/env bash
# The demo on a fresh clone: set up .venv, generate the synthetic temporal benchmark under
# data/synthetic, train a small CLIP from random weights with seqTransf and with meanP through
# main_task_retrieval.py (CPU is enough), evaluate both, evaluate them zero-shot on a second
# split generated with another seed, and print one table. Outputs: output/demo/ (checkpoints,
# logs, results JSON; the table in output/demo/table.md). Each command run is printed.
# Options are passed on to `python -m synthetic.demo` (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m synthetic.demo "$@"
