#!/usr/bin/env bash
# Shared by the per-dataset scripts: picks the python, the number of processes, and runs
# main_task_retrieval.py under torchrun (or plain python for one process).
#   NPROC     processes (default: all visible GPUs, else 1 on CPU)
#   DRY_RUN=1 print the command instead of running it
#   PYTHON    interpreter (default: .venv/bin/python when present, else python3)
#   SIM_HEADER the temporal head for MODEL=clip4clip (meanP, seqLSTM, seqTransf, tightTransf)
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

# MODEL=clip4clip: the settings of CLIP4Clip's README commands (ViT-B/32, 5 epochs, batch 128,
# batch_size_val 16, lr 1e-4, coef_lr 1e-3, freeze_layer_num 0), with its meanP over
# L2-normalised frames and its OpenCV frame grid (--published_codebase clip4clip).
# Sets MODEL_ARGS.   clip4clip_args MAX_WORDS MAX_FRAMES [train]
clip4clip_args() {
  MODEL_ARGS=(--published_codebase clip4clip --pretrained_clip_name "${CLIP_NAME:-ViT-B/32}" --max_words "$1" --max_frames "$2" --batch_size_val 16 --frame_norm l2)
  if [ "${3:-}" = train ]; then MODEL_ARGS+=(--epochs 5 --batch_size 128 --lr 1e-4 --coef_lr 1e-3 --freeze_layer_num 0); fi
}

unknown_model() {
  echo "error: MODEL must be internvideo-l14, internvideo-meanp or clip4clip, got ${MODEL:-} (clip-b is now internvideo-meanp)" >&2
  exit 2
}

launch() {
  local cmd
  if [ "${SIM_HEADER:-meanP}" != meanP ] && [ "${MODEL:-}" != clip4clip ]; then
    echo "error: SIM_HEADER=$SIM_HEADER: InternVideo's recipes use meanP; the other heads are CLIP4Clip's (MODEL=clip4clip)" >&2
    exit 2
  fi
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
