#!/usr/bin/env bash
# Search demo, after the synthetic demo (bash scripts/demo.sh): long videos made of the held-out
# test clips (10 clips of 1 s each), indexed with the demo's trained seqTransf checkpoint; the
# moment-retrieval figure over every clip's caption; then a few captions asked through the CLI,
# each printed with the clip's true place so the returned time ranges can be checked by eye.
# Settings (environment): PYTHON (.venv/bin/python), DATA (data/synthetic),
# RUN (output/demo/seqTransf: the run whose last epoch checkpoint is used), OUT (output/search_demo),
# QUERIES (3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data/synthetic}
RUN=${RUN:-output/demo/seqTransf}
OUT=${OUT:-output/search_demo}
QUERIES=${QUERIES:-3}

CKPT=$(ls -d "$RUN"/checkpoints/epoch_* 2>/dev/null | sort -t_ -k2 -n | tail -1 || true)
if [ -z "$CKPT" ]; then
  echo "no checkpoint under $RUN/checkpoints: run the demo first (bash scripts/demo.sh)" >&2
  exit 1
fi
echo "+ $PY -m search.quality --data $DATA --checkpoint $CKPT --out $OUT"
"$PY" -m search.quality --data "$DATA" --checkpoint "$CKPT" --out "$OUT"

"$PY" - "$OUT/long_videos.json" "$QUERIES" <<'PYEOF' |
import json, sys
videos = json.load(open(sys.argv[1]))["videos"]
for n in range(int(sys.argv[2])):
    video = videos[(7 * n) % len(videos)]
    clip = video["clips"][(3 * n + 2) % len(video["clips"])]
    print("|".join([clip["caption"], video["file"], f"{clip['start']:g}", f"{clip['end']:g}"]))
PYEOF
while IFS='|' read -r caption file start end; do
  echo
  echo "query: \"$caption\"  (true clip: $(basename "$file") $start-$end s)"
  echo "+ $PY -m search query $OUT/index \"$caption\" --top 3"
  "$PY" -m search query "$OUT/index" "$caption" --top 3 < /dev/null
done
echo
"$PY" -m search status "$OUT/index"
