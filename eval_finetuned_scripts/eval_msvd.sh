#!/usr/bin/env bash
# Evaluate a fine-tuned msvd checkpoint (INIT_MODEL).
# The published protocol by default (frames, optimizer, freezing, selection: ../README.md);
# pass --improved for this project's alternatives. MODEL picks the published recipe:
#   internvideo-l14 (default): InternVideo's eval_finetuned_scripts/run_kc4_msvd_infer.sh;
#     InternVideo's ViT-L/14 video encoder (--clip_evl).
#   internvideo-meanp: the evaluation settings of InternVideo's finetune_scripts/ret_msvd.sh;
#     plain CLIP ViT-B/16, meanP without per-frame normalisation.
#   clip4clip: the evaluation settings of CLIP4Clip's README command for MSVD;
#     plain CLIP ViT-B/32, meanP over L2-normalised frames
#     (--frame_norm l2); SIM_HEADER=seqLSTM, seqTransf or tightTransf selects CLIP4Clip's other heads.
# Environment: DATA_DIR (default data/MSVD), VIDEO_DIR (default $DATA_DIR/videos),
#   OUTPUT_DIR, CLIP_NAME (released name or .pt path), PRETRAINED_PATH (InternVideo checkpoint),
#   NPROC (default: all visible GPUs, else 1), DRY_RUN=1 prints the command. Extra arguments are passed on.
source "$(dirname "$0")/../scripts/launch_retrieval.sh"
DATA_DIR="${DATA_DIR:-data/MSVD}"
VIDEO_DIR="${VIDEO_DIR:-$DATA_DIR/videos}"
MODEL="${MODEL:-internvideo-l14}"
require_file "$DATA_DIR/anns" "msvd annotations"
require_file "${INIT_MODEL:-}" "fine-tuned checkpoint (INIT_MODEL)"
case "$MODEL" in
  internvideo-l14) MODEL_ARGS=(--clip_evl --pretrained_clip_name "${CLIP_NAME:-ViT-L/14}" --max_words 77 --max_frames 8 --batch_size_val 16) ;;
  internvideo-meanp) MODEL_ARGS=(--pretrained_clip_name "${CLIP_NAME:-ViT-B/16}" --max_words 32 --max_frames 12 --batch_size_val 128) ;;
  clip4clip) clip4clip_args 32 12 ;;
  *) unknown_model ;;
esac
launch --do_eval --datatype msvd --data_path "$DATA_DIR/anns" --features_path "$VIDEO_DIR" \
  --output_dir "${OUTPUT_DIR:-output/ev_msvd_$MODEL}" --init_model "${INIT_MODEL:-}" \
  --sim_header "${SIM_HEADER:-meanP}" --loose_type --linear_patch 2d --feature_framerate 1 --slice_framepos 2 \
  --num_thread_reader "${NUM_WORKERS:-4}" "${MODEL_ARGS[@]}" "$@"
