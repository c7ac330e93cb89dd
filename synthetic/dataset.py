"""``--datatype synthetic``: the MSR-VTT loader on the generated files, plus the twin hooks.

The annotation files are MSR-VTT's (same flags: ``--data_path`` the ``MSRVTT_data.json``
or its folder, ``--train_csv``, ``--val_csv``, ``--features_path``); ``synthetic_meta.json``
beside them adds what only this benchmark has, as the split's optional hooks:

- train split: ``batch_sampler``, a :class:`~synthetic.twin_sampler.TwinBatchSampler` over
  the train twin pairs (used with ``--twin_batches``);
- val and test splits: ``report``, a :class:`~synthetic.twin_metrics.TemporalReport` (the
  ``"temporal"`` section of the results).
"""

from __future__ import annotations

import functools
from pathlib import Path

from dataloaders import msrvtt
from dataloaders.base import RetrievalSplit
from dataloaders.options import DataOptions, require_path
from synthetic.generate import META_FILE, load_meta
from synthetic.twin_metrics import TemporalReport
from synthetic.twin_sampler import TwinBatchSampler, twin_pairs_from_meta


def meta_path(options: DataOptions) -> Path:
    """``synthetic_meta.json`` in the folder of ``--data_path`` (or in it, when it is a folder)."""
    data_path = require_path(options.data_path, "--data_path")
    path = (data_path if data_path.is_dir() else data_path.parent) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--datatype synthetic: {path} not found; --data_path must point into a folder "
                                "written by `python -m synthetic.generate`")
    return path


def load_split(options: DataOptions, subset: str) -> RetrievalSplit:
    meta = load_meta(meta_path(options))
    split = msrvtt.load_split(options, subset, name="synthetic")
    if subset == "train":
        split.batch_sampler = functools.partial(TwinBatchSampler, pairs=twin_pairs_from_meta(meta, "train"))
    else:
        test_only = {"test_video_ids": meta["test_video_ids"], "twin_pairs": {"test": meta["twin_pairs"]["test"]}}
        ids = split.video_ids
        split.report = TemporalReport(test_only, tuple(ids), tuple(ids[i] for i in split.caption_video))
    return split
