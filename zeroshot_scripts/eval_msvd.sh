#!/usr/bin/env bash
# Zero-shot msvd retrieval.
# The published protocol by default (frames, optimizer, freezing, selection: ../README.md);
# pass --improved for this project's alternatives. MODEL picks the published recipe:
#   internvideo-l14 (default): InternVideo's zeroshot_scripts/eval_msvd.sh;
#     InternVideo's ViT-L/14 video encoder (--clip_evl).
#   internvideo-meanp: no published zero-shot run; the words and frames of InternVideo's finetune_scripts/ret_msvd.sh;
#     plain CLIP ViT-B/16, meanP without per-frame normalisation.
#   clip4clip: no published zero-shot run; the settings of CLIP4Clip's README command for MSVD;
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
if [ "$MODEL" = internvideo-l14 ]; then require_file "${PRETRAINED_PATH:-}" "InternVideo checkpoint (PRETRAINED_PATH)"; fi
case "$MODEL" in
  internvideo-l14) MODEL_ARGS=(--clip_evl --pretrained_clip_name "${CLIP_NAME:-ViT-L/14}" --pretrained_path "${PRETRAINED_PATH:-}" --mergeclip --mergeweight 0.25 --max_words 77 --max_frames 12 --batch_size_val 32 --freeze_layer_num -1) ;;
  internvideo-meanp) MODEL_ARGS=(--pretrained_clip_name "${CLIP_NAME:-ViT-B/16}" --max_words 32 --max_frames 12 --batch_size_val 128) ;;
  clip4clip) clip4clip_args 32 12 ;;
  *) unknown_model ;;
esac
launch --do_eval --datatype msvd --data_path "$DATA_DIR/anns" --features_path "$VIDEO_DIR" \
  --output_dir "${OUTPUT_DIR:-output/zs_msvd_$MODEL}" \
  --sim_header "${SIM_HEADER:-meanP}" --loose_type --linear_patch 2d --feature_framerate 1 --slice_framepos 2 \
  --num_thread_reader "${NUM_WORKERS:-4}" "${MODEL_ARGS[@]}" "$@"
