"""Dataset registry by ``--datatype``: ``load_split(datatype, args, subset) -> RetrievalSplit``.

Each dataset module only parses annotation files; :mod:`dataloaders.base` turns a split
into torch datasets (``TrainPairDataset``, ``TextDataset``, ``VideoDataset``). Importing
this package imports nothing heavy: a dataset module (and torch, through ``base``) is
imported the first time its loader is called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataloaders.base import RetrievalSplit

_MODULES = {
    "msrvtt": "msrvtt",
    "msvd": "msvd",
    "lsmdc": "lsmdc",
    "activity": "activitynet",
    "didemo": "didemo",
    "vatex": "vatex",
}


def _lazy_loader(module: str) -> Callable[[Any, str], RetrievalSplit]:
    def load(args: Any, subset: str) -> RetrievalSplit:
        return importlib.import_module(f"dataloaders.{module}").load_split(args, subset)

    load.__name__ = f"{module}.load_split"
    load.__doc__ = f"``dataloaders.{module}.load_split(args, subset)``, imported on first use."
    return load


DATASETS: dict[str, Callable[[Any, str], RetrievalSplit]] = {
    name: _lazy_loader(module) for name, module in _MODULES.items()
}


def load_split(datatype: str, args: Any, subset: str) -> RetrievalSplit:
    """Parse ``subset`` ("train", "val" or "test") of dataset ``datatype`` (``--datatype``)."""
    try:
        loader = DATASETS[datatype]
    except KeyError:
        raise ValueError(f"unknown --datatype {datatype!r}; choose from {sorted(DATASETS)}") from None
    return loader(args, subset)


__all__ = ["DATASETS", "load_split"]
