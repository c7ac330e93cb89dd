"""What a dataset loader may read: annotation and video locations and a few switches.

The loaders take this typed object instead of the command-line namespace; the engine builds
it from the arguments (``engine.builders.data_options``). Field names are the command-line
names, so messages can name the flag to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataOptions:
    data_path: str | None = None  # annotation file or folder (--data_path)
    features_path: str | None = None  # video folder (--features_path)
    train_csv: str | None = None  # MSR-VTT-style train list (--train_csv)
    val_csv: str | None = None  # MSR-VTT-style test list (--val_csv)
    expand_msrvtt_sentences: bool = False  # MSR-VTT train: one item per (video, caption) pair
    allow_missing_videos: bool = False  # drop annotations whose video is missing (count logged)
    lsmdc_internvideo_train_slice: bool = False  # LSMDC train: InternVideo's unexplained slice (parity runs only)


def require_path(value: str | None, flag: str) -> Path:
    """``value`` as a Path, or a clear error naming the flag that must be given."""
    if value in (None, ""):
        raise ValueError(f"{flag} is required for this dataset")
    return Path(value)
