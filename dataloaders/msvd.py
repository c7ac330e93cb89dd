"""MSVD: ``raw-captions.pkl`` + ``{train,val,test}_list.txt`` in ``--data_path``.

Follows CLIP4Clip: ``raw-captions.pkl`` maps a video id to its captions, each a list of
word tokens joined with spaces; one item per (video, caption) pair in every subset, so the
test set has several captions per video (multi-caption evaluation, ``cut_off_points``).
Videos are found by walking ``--features_path`` by file stem (MSVD ships ``<id>.avi``).

Differences: the pickle is read as plain data only (dicts, lists, tuples, strings, numbers):
a file asking for any Python global is refused, where ``pickle.load`` would run it. A listed
id absent from the pickle is skipped with a warning (CLIP4Clip asserts); a caption that is
empty or not a word list/string is an :class:`AnnotationError` naming the id; missing videos
fail at construction (or are dropped and counted with ``--allow_missing_videos``) instead of
a KeyError at the first batch.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from dataloaders import base
from dataloaders.base import AnnotationError, RetrievalSplit, VideoGroup
from dataloaders.options import DataOptions, require_path
from dataloaders.plain_pickle import RefusedPickleError, load_plain_pickle

CAPTION_FILE = "raw-captions.pkl"


def read_raw_captions(path: Path, ids: list[str], list_file: Path) -> dict[str, Any]:
    """The pickle's dict video id -> captions, read as plain data only (:mod:`dataloaders.plain_pickle`:
    a crafted file cannot run code); its keys must be strings like the ids of ``list_file``."""
    base.require_file(path, "MSVD captions")
    try:
        with open(path, "rb") as f:
            data = load_plain_pickle(f)
    except RefusedPickleError as e:
        raise AnnotationError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise AnnotationError(f"{path}: cannot unpickle ({e})") from e
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a dict video_id -> captions, got {type(data).__name__}")
    for key in data:
        base.require_string_id(key, f"{path}: key {key!r}", ids, list_file)
    return data


def join_caption(cap: Any, path: Path, where: str) -> str:
    """A caption stored as a list of words (or, leniently, a string)."""
    if isinstance(cap, (list, tuple)):
        if not all(isinstance(w, str) for w in cap):
            raise AnnotationError(f"{path}: {where}: caption words should be strings")
        cap = " ".join(cap)
    return base.clean_caption(cap, path, where)


def captions_of(data: dict[str, Any], vid: str, path: Path) -> list[str]:
    caps = data[vid]
    if not isinstance(caps, (list, tuple)) or not caps:
        raise AnnotationError(f"{path}: key '{vid}': expected a non-empty list of captions")
    return [join_caption(c, path, f"key '{vid}' caption {i}") for i, c in enumerate(caps)]


def load_split(options: DataOptions, subset: str) -> RetrievalSplit:
    base.check_subset(subset)
    root = require_path(options.data_path, "--data_path")
    list_file = root / f"{subset}_list.txt"
    ids = base.read_id_list(list_file, f"MSVD {subset} list")
    cap_path = root / CAPTION_FILE
    data = read_raw_captions(cap_path, ids, list_file)
    base.warn_uncaptioned(f"msvd {subset}", [v for v in ids if v not in data], cap_path)
    features = require_path(options.features_path, "--features_path")
    index = base.video_index(features)
    groups = [VideoGroup(v, index.find(v), captions_of(data, v, cap_path)) for v in ids if v in data]
    return base.finalize_split(f"msvd {subset}", groups, root=features, source=list_file,
                          allow_missing=options.allow_missing_videos, searched=f"{features} (walked, by file stem)")
