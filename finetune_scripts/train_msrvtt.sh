#!/usr/bin/env bash
# Fine-tune on msrvtt; after each epoch evaluate test and keep the best (published; --improved
# selects on val where the dataset has one); the run ends with the kept checkpoint's test metrics.
# The published protocol by default (frames, optimizer, freezing, selection: ../README.md);
# pass --improved for this project's alternatives. MODEL picks the published recipe:
#   internvideo-l14 (default): InternVideo's finetune_scripts/train_msrvtt.sh;
#     InternVideo's ViT-L/14 video encoder (--clip_evl).
#   internvideo-meanp: InternVideo's finetune_scripts/ret_msrvtt.sh;
#     plain CLIP ViT-B/32, meanP without per-frame normalisation.
#   clip4clip: CLIP4Clip's README command for MSRVTT;
#     plain CLIP ViT-B/32, meanP over L2-normalised frames
#     (--frame_norm l2); SIM_HEADER=seqLSTM, seqTransf or tightTransf selects CLIP4Clip's other heads.
# Environment: DATA_DIR (default data/MSR-VTT), VIDEO_DIR (default $DATA_DIR/videos),
#   OUTPUT_DIR, CLIP_NAME (released name or .pt path), PRETRAINED_PATH (InternVideo checkpoint),
#   NPROC (default: all visible GPUs, else 1), DRY_RUN=1 prints the command. Extra arguments are passed on.
source "$(dirname "$0")/../scripts/launch_retrieval.sh"
DATA_DIR="${DATA_DIR:-data/MSR-VTT}"
VIDEO_DIR="${VIDEO_DIR:-$DATA_DIR/videos}"
MODEL="${MODEL:-internvideo-l14}"
require_file "$DATA_DIR/anns/MSRVTT_data.json" "msrvtt annotations"
if [ "$MODEL" = internvideo-l14 ]; then require_file "${PRETRAINED_PATH:-}" "InternVideo checkpoint (PRETRAINED_PATH)"; fi
case "$MODEL" in
  internvideo-l14) MODEL_ARGS=(--clip_evl --pretrained_clip_name "${CLIP_NAME:-ViT-L/14}" --pretrained_path "${PRETRAINED_PATH:-}" --mergeclip=false --max_words 77 --max_frames 12 --epochs 5 --batch_size 128 --batch_size_val 16 --lr 1e-3 --coef_lr 4e-3 --freeze_layer_num 0) ;;
  internvideo-meanp) MODEL_ARGS=(--pretrained_clip_name "${CLIP_NAME:-ViT-B/32}" --max_words 32 --max_frames 12 --epochs 5 --batch_size 128 --batch_size_val 128 --lr 1e-3 --coef_lr 5e-3 --freeze_layer_num 0) ;;
  clip4clip) clip4clip_args 32 12 train ;;
  *) unknown_model ;;
esac
launch --do_train --datatype msrvtt --train_csv "$DATA_DIR/anns/MSRVTT_train.9k.csv" --val_csv "$DATA_DIR/anns/MSRVTT_JSFUSION_test.csv" --data_path "$DATA_DIR/anns/MSRVTT_data.json" --features_path "$VIDEO_DIR" \
  --output_dir "${OUTPUT_DIR:-output/ft_msrvtt_$MODEL}" --expand_msrvtt_sentences \
  --sim_header "${SIM_HEADER:-meanP}" --loose_type --linear_patch 2d --feature_framerate 1 --slice_framepos 2 \
  --num_thread_reader "${NUM_WORKERS:-4}" "${MODEL_ARGS[@]}" "$@"
