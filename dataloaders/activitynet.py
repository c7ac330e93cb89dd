"""ActivityNet Captions, paragraph-to-video retrieval.

Files in ``--data_path``: ``train_ids.json`` / ``val_ids.json`` (JSON lists of ids
``v_<youtube id>``) and ``train.json`` / ``val_1.json`` (JSON objects id -> ``duration``,
``timestamps``, ``sentences``). Follows CLIP4Clip / InternVideo:

- one item per video; its caption is the paragraph of all its sentences joined with a
  space (each sentence stripped first; the tokenizer would collapse the spaces anyway);
- the window is ``[0, ceil(duration)]`` seconds, as CLIP4Clip and InternVideo pass it
  (``timestamps`` are ignored); on their OpenCV grid it stops at the annotated duration where
  ``ceil(frames / int(fps))`` runs past it (29.97 fps files). Without a ``duration`` the whole
  file is read;
- train = train_ids + train.json; val and test = val_ids + val_1.json (the published test
  set; there is no separate test split);
- videos are found by walking ``--features_path`` by stem, accepting both ``v_<id>.*``
  (InternVideo's ``<split>/v_<id>.mp4``) and ``<id>.*`` (CLIP4Clip's naming).

Differences: ids listed without an entry in the captions JSON (9 in the real val_ids) are
skipped with a logged count, where the published loaders skip silently; a missing video is an
error unless ``--allow_missing_videos`` (CLIP4Clip dropped them silently); an entry without
``sentences`` or with an empty paragraph is an :class:`AnnotationError` naming the id.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dataloaders import base
from dataloaders.base import AnnotationError, RetrievalSplit, VideoGroup
from dataloaders.options import DataOptions, require_path

ID_FILES = {"train": "train_ids.json", "val": "val_ids.json", "test": "val_ids.json"}
CAPTION_FILES = {"train": "train.json", "val": "val_1.json", "test": "val_1.json"}
PREFIX = "v_"


def read_ids(path: Path, captioned: list[str], cap_path: Path) -> list[str]:
    """The JSON list of ids; each a string, like the keys (``captioned``) of ``cap_path``."""
    data = base.load_json(path, "ActivityNet id list")
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of video ids (strings)")
    return list(dict.fromkeys(base.require_string_id(v, f"{path}: [{i}]", captioned, cap_path) for i, v in enumerate(data)))


def paragraph(entry: Any, path: Path, vid: str) -> str:
    sentences = base.get_key(entry, "sentences", path, f"key '{vid}'")
    if not isinstance(sentences, list):
        raise AnnotationError(f"{path}: key '{vid}': 'sentences' should be a list")
    parts = [s.strip() for s in sentences if isinstance(s, str)]
    if len(parts) != len(sentences):
        raise AnnotationError(f"{path}: key '{vid}': every sentence should be a string")
    return base.clean_caption(" ".join(p for p in parts if p), path, f"key '{vid}'")


def window(entry: Any, path: Path, vid: str) -> tuple[float | None, float | None]:
    """(0, ceil(duration)) in seconds, or (None, None) when the entry has no duration."""
    duration = entry.get("duration") if isinstance(entry, dict) else None
    if duration is None:
        return None, None
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0:
        raise AnnotationError(f"{path}: key '{vid}': 'duration' should be a positive number, got {duration!r}")
    return 0.0, float(math.ceil(duration))


def bare_id(pseudo_id: str) -> str:
    return pseudo_id[len(PREFIX):] if pseudo_id.startswith(PREFIX) else pseudo_id


def load_split(options: DataOptions, subset: str) -> RetrievalSplit:
    base.check_subset(subset)
    root = require_path(options.data_path, "--data_path")
    cap_path = root / CAPTION_FILES[subset]
    data = base.load_json(cap_path, "ActivityNet captions")
    if not isinstance(data, dict):
        raise AnnotationError(f"{cap_path}: expected a JSON object id -> annotation")
    ids_path = root / ID_FILES[subset]
    ids = read_ids(ids_path, list(data), cap_path)
    base.warn_uncaptioned(f"activity {subset}", [v for v in ids if v not in data], cap_path)
    features = require_path(options.features_path, "--features_path")
    index = base.video_index(features)
    groups = [
        VideoGroup(v, index.find(v, bare_id(v)), [paragraph(data[v], cap_path, v)], *window(data[v], cap_path, v))
        for v in ids
        if v in data
    ]
    return base.finalize_split(f"activity {subset}", groups, root=features, source=ids_path,
                          allow_missing=options.allow_missing_videos, searched=f"{features} (walked, stem v_<id> or <id>)")
