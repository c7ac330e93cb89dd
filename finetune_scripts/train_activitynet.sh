#!/usr/bin/env bash
# Fine-tune on activitynet, evaluating each epoch.
# Hyperparameters: InternVideo's published scripts (finetune_scripts/train_*.sh and ret_*.sh); see ../README.md.
# MODEL=internvideo-l14 (default): InternVideo ViT-L/14 video encoder (--clip_evl).
# MODEL=clip-b: plain CLIP4Clip tower (ViT-B/16, meanP), as the CLIP4Clip baselines.
# Environment: DATA_DIR (default data/ActivityNet), VIDEO_DIR (default $DATA_DIR/videos),
#   OUTPUT_DIR, CLIP_NAME (released name or .pt path), PRETRAINED_PATH (InternVideo checkpoint),
#   NPROC (default: all visible GPUs, else 1), DRY_RUN=1 prints the command. Extra arguments are passed on.
source "$(dirname "$0")/../scripts/launch_retrieval.sh"
DATA_DIR="${DATA_DIR:-data/ActivityNet}"
VIDEO_DIR="${VIDEO_DIR:-$DATA_DIR/videos}"
MODEL="${MODEL:-internvideo-l14}"
require_file "$DATA_DIR/anns" "activitynet annotations"
if [ "$MODEL" = internvideo-l14 ]; then require_file "${PRETRAINED_PATH:-}" "InternVideo checkpoint (PRETRAINED_PATH)"; fi
case "$MODEL" in
  internvideo-l14) MODEL_ARGS=(--clip_evl --pretrained_clip_name "${CLIP_NAME:-ViT-L/14}" --pretrained_path "${PRETRAINED_PATH:-}" --mergeclip=false --max_words 77 --max_frames 64 --epochs 30 --batch_size 64 --batch_size_val 16 --lr 1e-3 --coef_lr 2e-3 --freeze_layer_num 0) ;;
  clip-b) MODEL_ARGS=(--pretrained_clip_name "${CLIP_NAME:-ViT-B/16}" --max_words 64 --max_frames 64 --epochs 5 --batch_size 32 --batch_size_val 64 --lr 1e-4 --coef_lr 1e-3 --freeze_layer_num 0) ;;
  *) echo "error: MODEL must be internvideo-l14 or clip-b, got $MODEL" >&2; exit 2 ;;
esac
launch --do_train --datatype activity --data_path "$DATA_DIR/anns" --features_path "$VIDEO_DIR" \
  --output_dir "${OUTPUT_DIR:-output/ft_activitynet_$MODEL}" \
  --sim_header meanP --loose_type --linear_patch 2d --feature_framerate 1 --slice_framepos 2 \
  --num_thread_reader "${NUM_WORKERS:-4}" "${MODEL_ARGS[@]}" "$@"
