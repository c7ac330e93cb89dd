#!/usr/bin/env bash
# Zero-shot evaluation on the synthetic temporal benchmark: a trained checkpoint (INIT_MODEL) on a
# second split generated with another seed (generated here when missing), so the zero-shot path
# (loading a checkpoint, evaluating on data it has never seen) runs end to end. The report adds the
# direction-only and order-only twin queries (R@1 and twin accuracy) to the usual metrics.
# Environment: INIT_MODEL (required; e.g. output/demo/seqTransf/checkpoints/best, or a
#   model.safetensors / pytorch_model.bin), SEED (default 1), NUM_TEST (test videos, multiple of 3,
#   default 300), DATA_DIR (default data/synthetic_seed$SEED), OUTPUT_DIR, NUM_WORKERS (default 1),
#   NPROC, DRY_RUN=1 prints the command. The model arguments (sim_header, ...) are read from the
#   checkpoint's meta.json; set SIM_HEADER for a checkpoint without one. Extra arguments are passed on.
source "$(dirname "$0")/../scripts/launch_retrieval.sh"
SEED="${SEED:-1}"
NUM_TEST="${NUM_TEST:-300}"
DATA_DIR="${DATA_DIR:-data/synthetic_seed$SEED}"
INIT_MODEL="${INIT_MODEL:-}"
if [ -z "$INIT_MODEL" ]; then echo "error: set INIT_MODEL to a trained checkpoint (e.g. output/demo/seqTransf/checkpoints/best)" >&2; exit 2; fi
require_file "$INIT_MODEL" "checkpoint (INIT_MODEL)"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # see synthetic/demo.py
if [ "${DRY_RUN:-0}" != 1 ] && [ ! -f "$DATA_DIR/synthetic_meta.json" ]; then
  "$PYTHON" -m synthetic.generate --out "$DATA_DIR" --seed "$SEED" --num_train 0 --num_test "$NUM_TEST" >&2
fi
read -r -a MODEL_ARGS <<< "$("$PYTHON" -m synthetic.demo --model_args "$INIT_MODEL")"
if [ -n "${SIM_HEADER:-}" ]; then MODEL_ARGS+=(--sim_header "$SIM_HEADER"); fi
if [ "${#MODEL_ARGS[@]}" -eq 0 ]; then MODEL_ARGS=(--sim_header seqTransf --max_words 24); fi
launch --do_eval --datatype synthetic --data_path "$DATA_DIR/MSRVTT_data.json" --val_csv "$DATA_DIR/synthetic_test.csv" \
  --features_path "$DATA_DIR/videos" --feature_framerate 8 --max_frames 8 --slice_framepos 0 \
  --init_model "$INIT_MODEL" --loose_type --batch_size_val 128 --num_thread_reader "${NUM_WORKERS:-1}" \
  --output_dir "${OUTPUT_DIR:-output/zs_synthetic_seed$SEED}" "${MODEL_ARGS[@]}" "$@"
