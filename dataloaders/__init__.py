"""Dataset registry by ``--datatype``: ``load_split(datatype, options, subset) -> RetrievalSplit``.

Each dataset module only parses annotation files (what it reads is a
:class:`~dataloaders.options.DataOptions`); :mod:`dataloaders.base` turns a split into torch
datasets (``TrainPairDataset``, ``TextDataset``, ``VideoDataset``). A registry entry also
says what the engine needs to know about a dataset without importing it: whether it has a
validation split of its own, and whether it reads ``--train_csv``/``--val_csv``. Importing
this package imports nothing heavy: a dataset module (and torch, through ``base``) is
imported the first time its loader is called.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dataloaders.options import DataOptions

if TYPE_CHECKING:
    from dataloaders.base import RetrievalSplit


@dataclass(frozen=True)
class DatasetEntry:
    module: str  # a module with ``load_split(options: DataOptions, subset: str) -> RetrievalSplit``
    # A validation split separate from test, used to select checkpoints. MSR-VTT 1k-A,
    # ActivityNet val_1 and VATEX have none in the published protocols: selection uses test.
    has_val_split: bool
    reads_csv: bool = False  # reads --train_csv (train) and --val_csv (val, test)

    @property
    def selection_subset(self) -> str:
        """The split checkpoints are selected on during training."""
        return "val" if self.has_val_split else "test"

    def load(self, options: DataOptions, subset: str) -> RetrievalSplit:
        return importlib.import_module(self.module).load_split(options, subset)


DATASETS: dict[str, DatasetEntry] = {
    "msrvtt": DatasetEntry("dataloaders.msrvtt", has_val_split=False, reads_csv=True),
    "msvd": DatasetEntry("dataloaders.msvd", has_val_split=True),
    "lsmdc": DatasetEntry("dataloaders.lsmdc", has_val_split=True),
    "activity": DatasetEntry("dataloaders.activitynet", has_val_split=False),
    "didemo": DatasetEntry("dataloaders.didemo", has_val_split=True),
    "vatex": DatasetEntry("dataloaders.vatex", has_val_split=False),
    # The built-in temporal benchmark: MSR-VTT's files plus twin pairs (package ``synthetic``).
    "synthetic": DatasetEntry("synthetic.dataset", has_val_split=False, reads_csv=True),
}


def dataset_entry(datatype: str) -> DatasetEntry:
    try:
        return DATASETS[datatype]
    except KeyError:
        raise ValueError(f"unknown --datatype {datatype!r}; choose from {sorted(DATASETS)}") from None


def load_split(datatype: str, options: DataOptions, subset: str) -> RetrievalSplit:
    """Parse ``subset`` ("train", "val" or "test") of dataset ``datatype`` (``--datatype``)."""
    return dataset_entry(datatype).load(options, subset)


def check_splits(datatype: str, options: DataOptions, *, train: bool, eval_subset: str | None,
                 selection_subset: str | None = None) -> None:
    """Parse every split a run will read (train and its selection split, the evaluated split).

    ``selection_subset``: the split training selects on (default: val where the dataset has one).
    Meant to run before any model is built: an empty split, an annotation file that is
    malformed, not UTF-8 or unsafe, a video id leaving the video folder or a missing video
    then fails in seconds with the file's name, instead of after the model has loaded (or
    after a training epoch, for the selection split). The engine loads the splits again when
    it uses them; the folder walk behind them is cached.
    """
    entry = dataset_entry(datatype)
    selection = selection_subset or entry.selection_subset
    subsets = (["train", selection] if train else []) + ([eval_subset] if eval_subset else [])
    for subset in dict.fromkeys(subsets):
        entry.load(options, subset)


__all__ = ["DATASETS", "DataOptions", "DatasetEntry", "check_splits", "dataset_entry", "load_split"]
