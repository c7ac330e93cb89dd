#!/usr/bin/env bash
# Shared by the per-dataset scripts: picks the python, the number of processes, and runs
# main_task_retrieval.py under torchrun (or plain python for one process).
#   NPROC     processes (default: all visible GPUs, else 1 on CPU)
#   DRY_RUN=1 print the command instead of running it
#   PYTHON    interpreter (default: .venv/bin/python when present, else python3)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -z "${NPROC:-}" ]; then
  NPROC=$("$PYTHON" -c 'import torch; print(max(1, torch.cuda.device_count()))' 2>/dev/null || echo 1)
fi

require_file() {  # require_file PATH WHAT: a clear error before any work starts
  if [ "${DRY_RUN:-0}" != 1 ] && [ ! -e "$1" ]; then
    echo "error: $2 not found: $1 (set the environment variable named in the script's header)" >&2
    exit 2
  fi
}

launch() {
  local cmd
  if [ "$NPROC" -gt 1 ]; then
    cmd=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" main_task_retrieval.py "$@")
  else
    cmd=("$PYTHON" main_task_retrieval.py "$@")
  fi
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "${cmd[@]}"; echo
  else
    exec "${cmd[@]}"
  fi
}
