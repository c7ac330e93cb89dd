"""Temporal query groups and twin metrics of the synthetic benchmark (:mod:`synthetic.generate`).

Conventions. ``sim`` is the text-to-video score matrix of the synthetic test split: row i
is caption i of the test csv (the caption of video ``meta["test_video_ids"][i]``); columns
are videos in the order ``video_ids`` (by default also ``meta["test_video_ids"]``; pass
the loader's own video order if it differs).

- Query group "direction": the captions of the base clip and of the direction twin of every
  test triplet (they differ only in one direction word); "order" likewise with the order
  twin (they differ only in the order of the two events).
- ``twin_accuracy``: over those queries, the fraction that score their own video above
  their twin's video. A tie (within ``rtol``) counts 0.5, so a model that averages frames,
  which gives a clip and its twin the same vector up to rounding, scores exactly 0.5.
- ``temporal_recall_at_1``: R@1 (percent) of those queries against the whole test gallery,
  counting a tie with another video as a miss (an order-blind model ties with the twin;
  the usual "1 + number of strictly higher scores" rank would hand it the hit).

:class:`TemporalReport` is what :mod:`synthetic.dataset` attaches to an evaluation split
(the split's ``report`` hook): the engine calls it with the score matrix and logs its
``format``; the results JSON gets the ``"temporal"`` section.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metrics import format_table

KINDS = ("direction", "order")


def _as_numpy(sim) -> np.ndarray:
    if hasattr(sim, "detach"):
        sim = sim.detach().float().cpu().numpy()
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(f"sim must be 2-D [captions, videos], got shape {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("sim contains NaN or inf")
    return sim


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def twin_query_pairs(meta: dict, kind: str, video_ids: Sequence[str] | None = None) -> np.ndarray:
    """int [Q, 3]: (caption row, own video column, twin video column) for each query of ``kind``."""
    _check_kind(kind)
    rows = {v: i for i, v in enumerate(meta["test_video_ids"])}
    cols = {v: i for i, v in enumerate(video_ids if video_ids is not None else meta["test_video_ids"])}
    out = []
    for base, twin, pair_kind in meta["twin_pairs"]["test"]:
        if pair_kind == kind:
            out.append((rows[base], cols[base], cols[twin]))
            out.append((rows[twin], cols[twin], cols[base]))
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def temporal_query_groups(meta: dict) -> dict[str, np.ndarray]:
    """Caption indices (test csv rows) of the queries only temporal information answers."""
    return {kind: np.unique(twin_query_pairs(meta, kind)[:, 0]) for kind in KINDS}


def _tolerance(a: np.ndarray, b: np.ndarray, rtol: float) -> np.ndarray:
    return rtol * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))


def twin_accuracy(sim, meta: dict, kind: str, video_ids: Sequence[str] | None = None, rtol: float = 1e-5) -> float:
    """Fraction of ``kind`` queries scoring their own video above their twin (ties 0.5)."""
    sim = _as_numpy(sim)
    q = twin_query_pairs(meta, kind, video_ids)
    if len(q) == 0:
        raise ValueError(f"the meta file lists no {kind} twins in the test split")
    own, twin = sim[q[:, 0], q[:, 1]], sim[q[:, 0], q[:, 2]]
    tol = _tolerance(own, twin, rtol)
    score = np.where(own > twin + tol, 1.0, np.where(own >= twin - tol, 0.5, 0.0))
    return float(score.mean())


def temporal_recall_at_1(sim, meta: dict, kind: str, video_ids: Sequence[str] | None = None,
                         rtol: float = 1e-5) -> float:
    """R@1 in percent of the ``kind`` queries against all test videos; ties are misses."""
    sim = _as_numpy(sim)
    rows, own_cols = np.unique(twin_query_pairs(meta, kind, video_ids)[:, :2], axis=0).T
    own = sim[rows, own_cols]
    others = sim[rows].copy()
    others[np.arange(len(rows)), own_cols] = -np.inf
    best_other = others.max(axis=1)
    hit = own > best_other + _tolerance(own, best_other, rtol)
    return float(100.0 * hit.mean())


def temporal_report(sim, meta: dict, video_ids: Sequence[str] | None = None, rtol: float = 1e-5) -> dict:
    """{"direction": {"queries", "R1", "twin_acc"}, "order": {...}}; R1 and twin_acc in percent."""
    report = {}
    for kind in KINDS:
        report[kind] = {
            "queries": int(len(temporal_query_groups(meta)[kind])),
            "R1": temporal_recall_at_1(sim, meta, kind, video_ids, rtol),
            "twin_acc": 100.0 * twin_accuracy(sim, meta, kind, video_ids, rtol),
        }
    return report


@dataclass(frozen=True)
class TemporalReport:
    """The temporal twins report of one loaded split (a ``RetrievalSplit.report`` hook).

    ``meta`` needs only ``test_video_ids`` and ``twin_pairs["test"]``; ``video_ids`` are the
    split's columns, ``caption_video_ids`` the video of each of its rows. A split that is not
    the meta file's test split (another ``--val_csv``, videos dropped) gets no report.
    """

    meta: dict
    video_ids: tuple[str, ...]
    caption_video_ids: tuple[str, ...]
    name: str = "temporal"

    def __call__(self, sim: np.ndarray) -> dict | None:
        test_ids = list(self.meta["test_video_ids"])
        if list(self.caption_video_ids) != test_ids or sorted(self.video_ids) != sorted(test_ids):
            return None
        return temporal_report(sim, self.meta, video_ids=list(self.video_ids))

    @staticmethod
    def format(report: dict) -> str:
        rows = [[f"temporal twins {kind}", r["queries"], f"{r['R1']:.2f}", f"{r['twin_acc']:.2f}"]
                for kind, r in report.items()]
        table = format_table(["", "queries", "R@1", "twin accuracy"], rows)
        return table + "\n(an order-blind model scores twin accuracy 50 and R@1 0 on these queries)"
