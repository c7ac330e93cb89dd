"""VATEX: ``train_list.txt`` / ``test_list.txt`` + the official JSON annotation files.

Files in ``--data_path``: ``vatex_training_v1.0.json`` (train) and
``vatex_validation_v1.0.json`` (val/test), JSON lists of ``{"videoID", "enCap": [10
English captions], "chCap", ...}``; InternVideo's ``*_ceph.json`` copies (same format plus a
``path`` key) are read when the official names are absent. Follows InternVideo:

- train = ids of ``train_list.txt`` in the training JSON; test = ids of ``test_list.txt``
  (the HGR split, 1,500 videos) in the validation JSON; one item per (video, caption),
  so evaluation is multi-caption (10 per video);
- val = ``val_list.txt`` in the validation JSON when that file exists, else ``test_list.txt``
  as published (a warning says so: checkpoint selection then sees the test set);
- video path: the entry's ``path`` when present (relative paths are taken under
  ``--features_path``; URLs such as InternVideo's ``s3://`` paths cannot be read here and
  fall back to the default), else ``<features_path>/<videoID>.mp4``. A ``path`` that leaves
  ``--features_path`` (``../x.mp4``, or an absolute path elsewhere) is refused.

Differences: InternVideo silently skips entries without ``path`` (so the official JSON gave
an empty dataset) and turns failed reads into zeros; here listed ids without an annotation
are skipped with a logged count, missing videos are an error unless
``--allow_missing_videos``, and malformed entries are an :class:`AnnotationError` naming the
file and entry.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dataloaders import base
from dataloaders.base import AnnotationError, RetrievalSplit, VideoGroup
from dataloaders.options import DataOptions, require_path

logger = logging.getLogger(__name__)

TRAIN_JSON = ("vatex_training_v1.0.json", "vatex_training_v1.0_ceph.json")
VALIDATION_JSON = ("vatex_validation_v1.0.json", "vatex_validation_v1.0_ceph.json")


def pick_file(root: Path, names: tuple[str, ...]) -> Path:
    """The first of ``names`` present in ``root`` (the first name if none is)."""
    for name in names:
        if (root / name).is_file():
            return root / name
    return root / names[0]


def list_file(root: Path, subset: str) -> Path:
    if subset == "train":
        return root / "train_list.txt"
    if subset == "val":
        if (root / "val_list.txt").is_file():
            return root / "val_list.txt"
        logger.warning("vatex: no val_list.txt in %s; val uses test_list.txt as published", root)
    return root / "test_list.txt"


def entry_path(entry: dict, features: Path, vid: str) -> Path:
    raw = entry.get("path")
    if isinstance(raw, str) and raw.strip() and "://" not in raw:
        p = Path(raw.strip())
        return p if p.is_absolute() else features / p
    return features / f"{vid}.mp4"


def read_entries(path: Path, ids: list[str], ids_path: Path, features: Path) -> dict[str, VideoGroup]:
    """The entries of the videos listed in ``ids_path`` (``ids``), by id."""
    data = base.load_json(path, "VATEX annotation json")
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of entries")
    keep = set(ids)
    out: dict[str, VideoGroup] = {}
    for i, entry in enumerate(data):
        where = f"entry [{i}]"
        vid = base.require_string_id(base.get_key(entry, "videoID", path, where), f"{path}: {where}", ids, ids_path)
        if vid not in keep:
            continue
        caps = base.get_key(entry, "enCap", path, where)
        if not isinstance(caps, list) or not caps:
            raise AnnotationError(f"{path}: {where} ('{vid}'): 'enCap' should be a non-empty list")
        captions = [base.clean_caption(c, path, f"{where} ('{vid}') enCap[{j}]") for j, c in enumerate(caps)]
        out[vid] = VideoGroup(vid, entry_path(entry, features, vid), captions)
    return out


def load_split(options: DataOptions, subset: str) -> RetrievalSplit:
    base.check_subset(subset)
    root = require_path(options.data_path, "--data_path")
    ids_path = list_file(root, subset)
    ids = base.read_id_list(ids_path, f"VATEX {subset} list")
    json_path = pick_file(root, TRAIN_JSON if subset == "train" else VALIDATION_JSON)
    features = require_path(options.features_path, "--features_path")
    entries = read_entries(json_path, ids, ids_path, features)
    base.warn_uncaptioned(f"vatex {subset}", [v for v in ids if v not in entries], json_path)
    groups = [entries[v] for v in ids if v in entries]
    # The JSON gives both the ids and the 'path' fields: it is the file a refused path is in.
    return base.finalize_split(f"vatex {subset}", groups, root=features, source=json_path,
                          allow_missing=options.allow_missing_videos,
                          searched=f"the JSON 'path' fields or {features}/<videoID>.mp4")
