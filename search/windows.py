"""Cutting a video into overlapping windows, and merging hit windows back into time ranges.

A window is ``max_frames`` frames spread over ``window`` seconds (one frame every
``window / max_frames`` s, the model's frame rate); consecutive windows start ``stride``
seconds apart (50% overlap by default). The stride is rounded to a whole number of frame
periods, so that every window's frames lie on one grid of times shared by the whole video:
a run of windows is decoded once and each window picks its frames out of that run.

A video no longer than one window is one window ``[0, duration]``; otherwise windows start at
``0, stride, 2 * stride, ...`` until one reaches the end, and the last is cut at the end (its
missing frames are masked, as a short clip's are in training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-9


@dataclass(frozen=True)
class WindowPlan:
    """Window length and stride (seconds) and frames per window."""

    window: float
    stride: float
    max_frames: int

    def __post_init__(self) -> None:
        if not self.window > 0:
            raise ValueError(f"window must be > 0 seconds, got {self.window}")
        if not self.stride > 0:
            raise ValueError(f"stride must be > 0 seconds, got {self.stride}")
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")

    @property
    def frame_rate(self) -> float:
        """Frames per second sampled inside a window."""
        return self.max_frames / self.window

    @classmethod
    def create(cls, max_frames: int, window: float, stride: float | None = None) -> WindowPlan:
        """``stride`` (default: half the window) rounded to a whole number (>= 1) of frame periods."""
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        rate = max_frames / window
        wanted = window / 2 if stride is None else stride
        if not wanted > 0:
            raise ValueError(f"stride must be > 0 seconds, got {wanted}")
        periods = max(1, round(wanted * rate))
        return cls(window=float(window), stride=periods / rate, max_frames=int(max_frames))

    def to_dict(self) -> dict:
        return {"window": self.window, "stride": self.stride, "max_frames": self.max_frames}


def plan_windows(duration: float, plan: WindowPlan) -> list[tuple[float, float]]:
    """``(start, end)`` in seconds of every window of a video of ``duration`` seconds."""
    if not duration > 0:
        raise ValueError(f"video has no duration ({duration} s)")
    if duration <= plan.window + _EPS:
        return [(0.0, float(duration))]
    count = math.ceil((duration - plan.window) / plan.stride - 1e-6) + 1
    return [(k * plan.stride, min(k * plan.stride + plan.window, float(duration))) for k in range(count)]


# ----------------------------------------------------------------------------- ranges


def select_hits(scores: np.ndarray, relative: float = 0.25) -> np.ndarray:
    """Windows of one video that count as hits for a query: those scoring at least
    ``best - relative * (best - median)``, i.e. in the top quarter of the gap between the
    video's typical window and its best one. A video with one window: that window.

    On the long synthetic videos (seqTransf, 300 captions) ``relative=0.5`` merged up to four
    half-overlapping windows around 1 s clips (IoU 0.4, 8 of 300 queries); at 0.25 every query
    that found its video got a best range with IoU >= 0.5 (the value was chosen there)."""
    scores = np.asarray(scores, dtype=np.float64)
    best, typical = scores.max(), np.median(scores)
    return scores >= best - relative * (best - typical) - 1e-12


def merge_ranges(starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, hits: np.ndarray) -> list[dict]:
    """Overlapping or touching hit windows merged into ranges, best first.

    Windows must be sorted by start. A range's score is its best window's score and
    ``window_id`` that window's position in the arrays given (callers map it to their ids).
    """
    ranges: list[dict] = []
    current: dict | None = None
    for i in np.flatnonzero(np.asarray(hits)):
        start, end, score = float(starts[i]), float(ends[i]), float(scores[i])
        if current is not None and start <= current["end"] + 1e-6:
            current["end"] = max(current["end"], end)
            if score > current["score"]:
                current["score"], current["window_id"] = score, int(i)
            continue
        current = {"start": start, "end": end, "score": score, "window_id": int(i)}
        ranges.append(current)
    return sorted(ranges, key=lambda r: (-r["score"], r["start"]))


def interval_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time intervals."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0
