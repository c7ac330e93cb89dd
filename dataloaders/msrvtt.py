"""MSR-VTT: ``--train_csv`` + ``MSRVTT_data.json`` (``--data_path``) for train, ``--val_csv`` for val/test.

Follows CLIP4Clip / InternVideo:

- train: video ids from ``--train_csv`` (column ``video_id``; ``MSRVTT_train.9k.csv`` or
  ``.7k.csv``), captions from the JSON's ``sentences`` (``video_id``, ``caption``). With
  ``--expand_msrvtt_sentences`` one item per (video, caption) pair; without it one item per
  video with a caption drawn at random each time (``sample_unit="video"``).
- val and test: the JSFusion csv ``--val_csv`` (``key,vid_key,video_id,sentence``; only
  ``video_id`` and ``sentence`` are read). There is no separate MSR-VTT val split in the
  published setup, so val is the test csv unless you point ``--val_csv`` elsewhere.
- videos: ``<features_path>/<video_id>.mp4``, falling back to ``.webm``.

Differences: a missing video is an error (or dropped and counted with
``--allow_missing_videos``) instead of a zero tensor at training time; train-csv videos with
no sentence in the JSON are skipped with a warning (CLIP4Clip would crash drawing a random
caption); a video listed twice in a csv gives one video with several captions instead of a
duplicated column.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from dataloaders import base
from dataloaders.base import AnnotationError, RetrievalSplit, VideoGroup
from dataloaders.options import DataOptions, require_path

logger = logging.getLogger(__name__)


def read_csv_columns(path: Path, columns: tuple[str, ...], what: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a csv with a header, keeping ``columns``; errors name the file and line."""
    reader = csv.DictReader(base.csv_text(path, what))
    header = reader.fieldnames or []
    absent = [c for c in columns if c not in header]
    if absent:
        raise AnnotationError(f"{path}: missing column(s) {absent} (header: {header})")
    rows = []
    for row in reader:
        values = {c: row.get(c) for c in columns}
        empty = [c for c, v in values.items() if v is None or (c == "video_id" and not v.strip())]
        if empty:
            raise AnnotationError(f"{path}: line {reader.line_num}: missing value for column(s) {empty}")
        rows.append((reader.line_num, {c: v.strip() for c, v in values.items()}))
    return rows


def video_path(features_path: Path, video_id: str) -> Path | None:
    return base.first_existing(features_path / f"{video_id}.mp4", features_path / f"{video_id}.webm")


def read_train_sentences(json_path: Path, keep: list[str], csv_path: Path) -> dict[str, list[str]]:
    """Captions per video id (only ids in ``keep``, read from ``csv_path``), in the JSON's order."""
    data = base.load_json(json_path, "MSR-VTT annotation json (--data_path)")
    sentences = base.get_key(data, "sentences", json_path, "top level")
    return base.captions_by_id(sentences, json_path, "sentences", ("video_id", "caption"), keep, csv_path)


def load_train(options: DataOptions) -> tuple[list[VideoGroup], str, Path]:
    features = require_path(options.features_path, "--features_path")
    csv_path = require_path(options.train_csv, "--train_csv")
    ids = list(dict.fromkeys(r["video_id"] for _, r in read_csv_columns(csv_path, ("video_id",), "MSR-VTT train csv")))
    json_path = require_path(options.data_path, "--data_path")
    if json_path.is_dir():  # accept the folder holding MSRVTT_data.json too
        json_path = json_path / "MSRVTT_data.json"
    captions = read_train_sentences(json_path, ids, csv_path)
    base.warn_uncaptioned("msrvtt train", [v for v in ids if v not in captions], json_path)
    groups = [VideoGroup(v, video_path(features, v), captions[v]) for v in ids if v in captions]
    unit = "caption" if options.expand_msrvtt_sentences else "video"
    return groups, unit, csv_path


def load_eval(options: DataOptions) -> tuple[list[VideoGroup], Path]:
    features = require_path(options.features_path, "--features_path")
    csv_path = require_path(options.val_csv, "--val_csv")
    rows = read_csv_columns(csv_path, ("video_id", "sentence"), "MSR-VTT test csv (--val_csv)")
    captions: dict[str, list[str]] = {}
    for line, row in rows:
        captions.setdefault(row["video_id"], []).append(base.clean_caption(row["sentence"], csv_path, f"line {line}"))
    return [VideoGroup(v, video_path(features, v), caps) for v, caps in captions.items()], csv_path


def load_split(options: DataOptions, subset: str, name: str = "msrvtt") -> RetrievalSplit:
    """``name`` labels the split in messages (the synthetic benchmark reuses this loader)."""
    base.check_subset(subset)
    unit = "caption"
    if subset == "train":
        groups, unit, source = load_train(options)
    else:
        groups, source = load_eval(options)
    features = require_path(options.features_path, "--features_path")
    searched = f"{features} (<video_id>.mp4 or .webm)"
    return base.finalize_split(f"{name} {subset}", groups, root=features, source=source,
                          allow_missing=options.allow_missing_videos, searched=searched, sample_unit=unit)
