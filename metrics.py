"""Retrieval metrics: R@1/5/10 (percent), median and mean rank, both directions.

Input is the full similarity matrix ``sim[Nt, Nv]`` (captions x videos, NumPy or torch,
any device) and ``caption_video[Nt]``, the index of each caption's video. Every caption
has exactly one correct video; a video may have several captions (MSVD, VATEX, MSR-VTT
with all 20 sentences) or none.

Rank of a correct item = 1 + number of candidates that score *strictly* higher. This is
deterministic: a candidate tied with the correct one never pushes it down, and no
random tie-break decides the result.

Three results, each with R1, R5, R10, MedR, MeanR and count (queries scored):

``t2v``
    For each caption, the rank of its video among all Nv videos. Same as CLIP4Clip's
    ``compute_metrics(sim)`` on 1:1 data and ``tensor_text_to_video_metrics`` on
    multi-caption data, apart from ties (see below).

``v2t`` (published, comparable form)
    Captions are grouped by video; a video scores a group by the best of that group's
    captions (max over the group). For each video with at least one caption, the rank of
    its own group among the Nv groups (caption-less groups score -inf). This is what
    CLIP4Clip/InternVideo report (``tensor_video_to_text_sim`` then ``compute_metrics``):
    a hit whenever *any* of the video's captions beats the best caption of every other
    video. On 1:1 data it equals ranking captions by ``sim[:, v]``.

``v2t_per_caption`` (stricter)
    For every (video, one of its captions) pair, the rank of that caption among all Nt
    captions in the video's column ``sim[:, v]``. Every other caption counts as a
    competitor, *including the video's other correct captions*, so on multi-caption data
    this is harder than ``v2t`` (and harder than UMT/VINDLU's "best correct caption"
    rank). count = Nt pairs. On 1:1 data it equals ``v2t``.

Differences from the published code (documented on purpose):

* Ties. CLIP4Clip's ``compute_metrics`` finds the correct score by exact equality in the
  sorted row, so a row with k tied entries yields k ranks and silently inflates the
  denominator; ``tensor_text_to_video_metrics`` breaks ties by ``argsort`` order. Ours
  gives each query exactly one rank, the optimistic one (1 + strictly higher).
* NaN. The published code lets NaN rows fall out of the denominator. Ours raises
  ``ValueError`` naming how many NaN (and +-inf) entries the matrix holds.

MedR follows the published code in each place: ``t2v`` on multi-caption data (some video
without exactly one caption) takes the lower of the two middle ranks of an even count, as
``torch.median`` in ``tensor_text_to_video_metrics`` does (VATEX's 15000 queries); 1:1
``t2v`` and ``v2t`` average them, as ``np.median`` in ``compute_metrics`` does. Our own
``v2t_per_caption`` averages too.

Memory: the matrix is scanned in blocks of rows or columns (``block_elements`` entries
at a time), so temporaries stay bounded however many captions there are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

RECALL_KS = (1, 5, 10)
DEFAULT_BLOCK_ELEMENTS = 1 << 22  # ~4M scores per block (16 MB in fp32)

ArrayLike = Any  # np.ndarray | torch.Tensor


def _to_tensor(sim: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(sim)
    if t.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D [captions, videos], got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)):
        raise ValueError(f"similarity matrix must be real-valued, got dtype {t.dtype}")
    return t


def _to_index(caption_video: ArrayLike, n_text: int, n_video: int, device: torch.device) -> torch.Tensor:
    idx = torch.as_tensor(np.asarray(caption_video) if not torch.is_tensor(caption_video) else caption_video)
    if idx.ndim != 1 or idx.shape[0] != n_text:
        raise ValueError(f"caption_video must have shape [{n_text}] (one video per caption), got {tuple(idx.shape)}")
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"caption_video must hold integer video indices, got dtype {idx.dtype}")
    idx = idx.to(device=device, dtype=torch.long)
    if n_text and (int(idx.min()) < 0 or int(idx.max()) >= n_video):
        lo, hi = int(idx.min()), int(idx.max())
        raise ValueError(f"caption_video values must lie in [0, {n_video}), got range [{lo}, {hi}]")
    return idx


def _rows_per_block(row_len: int, block_elements: int) -> int:
    return max(1, block_elements // max(1, row_len))


def check_finite(sim: ArrayLike, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> None:
    """Raise ``ValueError`` if ``sim`` holds NaN or infinite scores, saying how many."""
    t = _to_tensor(sim)
    if not t.is_floating_point():
        return
    n_nan = n_inf = 0
    step = _rows_per_block(t.shape[1], block_elements)
    for r0 in range(0, t.shape[0], step):
        block = t[r0 : r0 + step]
        n_nan += int(torch.isnan(block).sum())
        n_inf += int(torch.isinf(block).sum())
    if n_nan or n_inf:
        raise ValueError(
            f"similarity matrix {tuple(t.shape)} has {n_nan} NaN and {n_inf} infinite entries; "
            "a failed video decode or an fp16 overflow upstream is the usual cause"
        )


def t2v_ranks(sim: ArrayLike, caption_video: ArrayLike, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> np.ndarray:
    """1-based rank of each caption's video among all videos (int64 [Nt])."""
    t = _to_tensor(sim)
    idx = _to_index(caption_video, t.shape[0], t.shape[1], t.device)
    out = torch.empty(t.shape[0], dtype=torch.long, device=t.device)
    step = _rows_per_block(t.shape[1], block_elements)
    for r0 in range(0, t.shape[0], step):
        block = t[r0 : r0 + step]
        target = block.gather(1, idx[r0 : r0 + step, None])
        out[r0 : r0 + step] = (block > target).sum(dim=1) + 1
    return out.cpu().numpy()


def _column_blocks(t: torch.Tensor, block_elements: int):
    """Yield (v0, v1, block[Nv_block, Nt]) column slices of ``t`` as contiguous rows."""
    step = _rows_per_block(t.shape[0], block_elements)
    for v0 in range(0, t.shape[1], step):
        v1 = min(v0 + step, t.shape[1])
        yield v0, v1, t[:, v0:v1].T.contiguous()


def v2t_group_ranks(
    sim: ArrayLike, caption_video: ArrayLike, block_elements: int = DEFAULT_BLOCK_ELEMENTS
) -> np.ndarray:
    """1-based rank of each captioned video's own caption group (group score = max over
    its captions); int64 [number of videos with >= 1 caption], in video order."""
    t = _to_tensor(sim)
    n_text, n_video = t.shape
    idx = _to_index(caption_video, n_text, n_video, t.device)
    has_caption = torch.zeros(n_video, dtype=torch.bool, device=t.device)
    has_caption[idx] = True
    ranks = []
    # Each block holds [b, Nt] scores plus the [b, Nv] group maxima.
    budget = max(1, block_elements * n_text // max(1, n_text + n_video))
    for v0, v1, cols in _column_blocks(t, budget):
        fill = torch.finfo(cols.dtype).min if cols.is_floating_point() else torch.iinfo(cols.dtype).min
        groups = torch.full((v1 - v0, n_video), fill, dtype=cols.dtype, device=t.device)
        groups.scatter_reduce_(1, idx.expand(v1 - v0, -1), cols, reduce="amax", include_self=False)
        own = torch.arange(v0, v1, device=t.device)
        target = groups.gather(1, own[:, None])
        # Empty groups keep the fill value; they cannot beat a real group's score unless
        # that score is itself the dtype minimum, so mask them out explicitly.
        higher = (groups > target) & has_caption[None, :]
        block_ranks = higher.sum(dim=1) + 1
        ranks.append(block_ranks[has_caption[v0:v1]])
    if not ranks:
        return np.zeros(0, dtype=np.int64)
    return torch.cat(ranks).cpu().numpy()


def v2t_per_caption_ranks(
    sim: ArrayLike, caption_video: ArrayLike, block_elements: int = DEFAULT_BLOCK_ELEMENTS
) -> np.ndarray:
    """1-based rank of caption c among all Nt captions in its video's column, for every
    caption c (int64 [Nt], in caption order)."""
    t = _to_tensor(sim)
    n_text, n_video = t.shape
    idx = _to_index(caption_video, n_text, n_video, t.device)
    out = torch.empty(n_text, dtype=torch.long, device=t.device)
    # Each block sorts [b, Nt] scores; a caption's rank = 1 + (Nt - #scores <= its own).
    for v0, v1, cols in _column_blocks(t, max(1, block_elements // 2)):
        pairs = torch.nonzero((idx >= v0) & (idx < v1)).flatten()
        if pairs.numel() == 0:
            continue
        ordered, _ = torch.sort(cols, dim=1)
        local = idx[pairs] - v0
        # Lay the block's captions out as [b, K] (K = most captions of one video here) so
        # one batched searchsorted handles them; the table never exceeds b * Nt entries.
        local, order = torch.sort(local, stable=True)
        pairs = pairs[order]
        counts = torch.bincount(local, minlength=v1 - v0)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(pairs.numel(), device=t.device) - starts[local]
        values = torch.zeros((v1 - v0, int(counts.max())), dtype=t.dtype, device=t.device)
        values[local, slot] = t[pairs, idx[pairs]]
        not_higher = torch.searchsorted(ordered, values, right=True)
        out[pairs] = n_text - not_higher[local, slot] + 1
    return out.cpu().numpy()


def metrics_from_ranks(ranks: ArrayLike, lower_median: bool = False) -> dict[str, float]:
    """R1, R5, R10 (percent), MedR, MeanR and count from 1-based ranks.

    MedR of an even count is the mean of the two middle ranks (``np.median``), or the lower
    one with ``lower_median`` (``torch.median``).
    """
    r = np.asarray(ranks, dtype=np.int64)
    if r.size == 0:
        nan = float("nan")
        return {**{f"R{k}": nan for k in RECALL_KS}, "MedR": nan, "MeanR": nan, "count": 0}
    out: dict[str, float] = {f"R{k}": float(100.0 * np.mean(r <= k)) for k in RECALL_KS}
    out["MedR"] = float(np.partition(r, (r.size - 1) // 2)[(r.size - 1) // 2]) if lower_median else float(np.median(r))
    out["MeanR"] = float(np.mean(r))
    out["count"] = int(r.size)
    return out


def is_multi_caption(caption_video: ArrayLike, n_videos: int) -> bool:
    """True unless every one of the ``n_videos`` videos has exactly one caption (the
    published code's multi-sentence evaluation, where t2v MedR is a lower median)."""
    index = caption_video.cpu() if torch.is_tensor(caption_video) else caption_video
    counts = np.bincount(np.asarray(index, dtype=np.int64).ravel(), minlength=n_videos)
    return len(counts) != n_videos or not bool(np.all(counts == 1))


def compute_metrics(
    sim: ArrayLike, caption_video: ArrayLike | None = None, block_elements: int = DEFAULT_BLOCK_ELEMENTS
) -> dict[str, dict[str, float]]:
    """t2v, v2t (group-max, comparable with published numbers) and v2t_per_caption.

    ``caption_video=None`` means the 1:1 layout (caption i belongs to video i).
    Raises ``ValueError`` on NaN/inf scores or inconsistent shapes.
    """
    t = _to_tensor(sim)
    if caption_video is None:
        if t.shape[0] != t.shape[1]:
            raise ValueError(f"caption_video is required when sim is not square, got shape {tuple(t.shape)}")
        caption_video = np.arange(t.shape[0])
    check_finite(t, block_elements)
    t2v = t2v_ranks(t, caption_video, block_elements)  # also checks caption_video
    return {
        "t2v": metrics_from_ranks(t2v, lower_median=is_multi_caption(caption_video, t.shape[1])),
        "v2t": metrics_from_ranks(v2t_group_ranks(t, caption_video, block_elements)),
        "v2t_per_caption": metrics_from_ranks(v2t_per_caption_ranks(t, caption_video, block_elements)),
    }


METRIC_KEYS = ("R1", "R5", "R10", "MedR", "MeanR")
METRIC_HEADER = ("R@1", "R@5", "R@10", "MedR", "MeanR")


def _fmt(value: float, key: str) -> str:
    if key == "count":
        return str(int(value))
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.1f}"


def metric_cells(metrics: Mapping[str, float]) -> list[str]:
    """R@1, R@5, R@10, MedR, MeanR of one direction, as table cells."""
    return [_fmt(metrics[k], k) for k in METRIC_KEYS]


def format_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], markdown: bool = False) -> str:
    """The one table formatter: aligned text columns (logs) or a markdown table (reports)."""
    lines = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    if markdown:
        lines.insert(1, ["---"] * len(header))
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def format_metrics_table(results: Mapping[str, Any], title: str | None = None, markdown: bool = True) -> str:
    """One ``compute_metrics`` result, or several keyed by a label (e.g. ``{"plain": m,
    "DSL": m_dsl}``), one row per (label, direction)."""
    labelled = {"": results} if "t2v" in results else dict(results)
    rows = [[label, direction, *metric_cells(row), _fmt(row["count"], "count")]
            for label, metrics in labelled.items() for direction, row in metrics.items()]
    table = format_table(["", "direction", *METRIC_HEADER, "n"], rows, markdown)
    return f"**{title}**\n\n{table}" if title else table
