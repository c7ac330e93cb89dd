"""LSMDC: tab-separated annotation files in ``--data_path``; videos found by walking ``--features_path``.

Files: ``LSMDC16_annos_training.csv`` (train), ``LSMDC16_annos_val.csv`` (val),
``LSMDC16_challenge_1000_publictect.csv`` (test; the typo is the official name). No header;
6 fields per line: clip id, start aligned, end aligned, start extracted, end extracted,
sentence. The time columns are not used: each clip is its own file, read whole. A clip id
can repeat in train (several sentences); the public test has 1,000 distinct clips (1:1).
Videos are looked up by file stem anywhere under ``--features_path`` (the release nests
them as ``<movie>/<clip_id>.avi``).

Follows CLIP4Clip. Deliberate differences:

- InternVideo's train loader drops the unique clip ids at positions 58200-58299 (first
  appearance order) with no explanation, probably clips that were broken on the authors'
  storage. ``DataOptions.lsmdc_internvideo_train_slice`` reproduces that; the command line's
  ``--lsmdc_internvideo_train_slice`` is on in the published protocol and off with
  ``--improved`` or ``--published_codebase clip4clip`` (CLIP4Clip keeps every clip). Missing
  clips are reported (``--allow_missing_videos`` drops them) and undecodable ones are handled
  by ``--skip_bad_videos``.
- CLIP4Clip silently drops sentences whose clip is not on disk; here that is an error
  unless ``--allow_missing_videos``, which drops them and logs the count.
- A repeated clip id gives one video with several captions, not a duplicated video column
  at evaluation.
- Fully blank lines are skipped; any other line without exactly 6 fields, or with an empty
  sentence, is an :class:`AnnotationError` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path

from dataloaders import base
from dataloaders.base import AnnotationError, RetrievalSplit, VideoGroup
from dataloaders.options import DataOptions, require_path

FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}
NUM_FIELDS = 6
# InternVideo's unexplained train slice: video_id_list[:58200] + video_id_list[58300:].
INTERNVIDEO_DROPPED_TRAIN_RANGE = (58200, 58300)


def read_annotations(path: Path) -> list[tuple[str, str]]:
    """(clip id, sentence) per line, in file order."""
    pairs = []
    for line_no, line in enumerate(base.text_lines(path, "LSMDC annotation file"), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != NUM_FIELDS:
            raise AnnotationError(f"{path}: line {line_no}: expected {NUM_FIELDS} tab-separated fields, got {len(fields)}")
        clip_id = fields[0].strip()
        if not clip_id:
            raise AnnotationError(f"{path}: line {line_no}: empty clip id")
        pairs.append((clip_id, base.clean_caption(fields[-1], path, f"line {line_no}")))
    return pairs


def load_split(options: DataOptions, subset: str) -> RetrievalSplit:
    base.check_subset(subset)
    path = require_path(options.data_path, "--data_path") / FILES[subset]
    captions: dict[str, list[str]] = {}
    for clip_id, sentence in read_annotations(path):
        captions.setdefault(clip_id, []).append(sentence)
    clip_ids = list(captions)
    if subset == "train" and options.lsmdc_internvideo_train_slice:
        lo, hi = INTERNVIDEO_DROPPED_TRAIN_RANGE
        clip_ids = clip_ids[:lo] + clip_ids[hi:]
    features = require_path(options.features_path, "--features_path")
    index = base.video_index(features)
    groups = [VideoGroup(c, index.find(c), captions[c]) for c in clip_ids]
    return base.finalize_split(f"lsmdc {subset}", groups, root=features, source=path,
                          allow_missing=options.allow_missing_videos, searched=f"{features} (walked, by file stem)")
