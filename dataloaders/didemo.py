"""DiDeMo, paragraph-to-video retrieval.

Files in ``--data_path``: ``{train,val,test}_list.txt`` (one video file name per line, with
its original extension: ``.mp4``, ``.m4v``, ``.mov``, ``.mpg``, ``.3gp``, ``.avi``, ...) and
``{train,val,test}_data.json`` (LocalizingMoments: a JSON list of ``{"video",
"description", "times", ...}``, several descriptions per video). Follows CLIP4Clip:

- one item per video; its caption is the paragraph of its descriptions in JSON order,
  joined with a space; ``times`` (5-second chunk indices) are not used;
- clip window [0, 31] s, as published: DiDeMo videos were truncated to 30 s for
  annotation, so this is the whole video for most files and the annotated part of the
  longer ones;
- videos are found by walking ``--features_path``. A name from the list is matched as the
  exact file name (CLIP4Clip), then as a stem (``name.m4v.mp4``, the re-encoded copies
  InternVideo reads as ``<video>.mp4``), then by its stem without extension (``name.mp4``
  re-encoded from ``name.m4v``). Names without an extension work too.

Differences: listed videos without descriptions are skipped with a logged count (CLIP4Clip
skips silently); missing videos are an error unless ``--allow_missing_videos`` (CLIP4Clip
dropped them silently; InternVideo additionally turned every decode error into zeros);
an entry without ``video`` or ``description``, or with an empty description, is an
:class:`AnnotationError` naming the file and the entry index.
"""

from __future__ import annotations

import os
from pathlib import Path

from dataloaders import base
from dataloaders.base import RetrievalSplit, VideoGroup, VideoIndex
from dataloaders.options import DataOptions, require_path

CLIP_START_S = 0.0
CLIP_END_S = 31.0


def read_descriptions(path: Path, names: list[str], list_file: Path) -> dict[str, list[str]]:
    """Descriptions per video listed in ``list_file`` (``names``), in JSON order."""
    data = base.load_json(path, "DiDeMo annotation json")
    return base.captions_by_id(data, path, "entry ", ("video", "description"), names, list_file)


def find_video(index: VideoIndex, name: str) -> Path | None:
    stem, ext = os.path.splitext(name)
    keys = (name, stem) if ext else (name,)
    for key in keys:
        hit = index.find(key)
        if hit is not None:
            return hit
    return None


def load_split(options: DataOptions, subset: str) -> RetrievalSplit:
    base.check_subset(subset)
    root = require_path(options.data_path, "--data_path")
    list_file = root / f"{subset}_list.txt"
    names = base.read_id_list(list_file, f"DiDeMo {subset} list")
    json_path = root / f"{subset}_data.json"
    descriptions = read_descriptions(json_path, names, list_file)
    base.warn_uncaptioned(f"didemo {subset}", [n for n in names if n not in descriptions], json_path)
    features = require_path(options.features_path, "--features_path")
    index = base.video_index(features)
    groups = [
        VideoGroup(n, find_video(index, n), [" ".join(descriptions[n])], CLIP_START_S, CLIP_END_S)
        for n in names
        if n in descriptions
    ]
    return base.finalize_split(f"didemo {subset}", groups, root=features, source=list_file,
                          allow_missing=options.allow_missing_videos, searched=f"{features} (walked, by file name or stem)")
