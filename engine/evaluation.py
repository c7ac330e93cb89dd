"""Distributed evaluation: every rank encodes a disjoint share, exactly once.

Captions and videos are cut into fixed global batches of `batch_size_val` items; rank r
encodes batches r, r + world, r + 2*world, ... Each batch has the same contents whatever the
number of processes, so 1 process and N processes compute bit-identical features and hence
identical metrics. No sampler pads a shard with repeated items, and each video is decoded
once per evaluation (captions and videos are separate datasets), not once per caption.
The similarity matrix is built in fixed blocks of rows, spread over the ranks the same way,
and assembled on rank 0, where the metrics are computed: plain and dual-softmax (DSL).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import metrics
from engine.distributed import DistInfo, gather_rows, worker_context

logger = logging.getLogger(__name__)


def global_batches(num_items: int, batch_size: int) -> list[list[int]]:
    return [list(range(start, min(start + batch_size, num_items))) for start in range(0, num_items, batch_size)]


def rank_share(batches: list, info: DistInfo) -> list:
    return batches[info.rank :: info.world_size]


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def gather_in_order(features: dict[str, torch.Tensor], order: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gather every rank's rows and put them back in global item order."""
    all_order = torch.cat(gather_rows(order))
    position = torch.argsort(all_order)
    return {key: torch.cat(gather_rows(value))[position] for key, value in features.items()}


@torch.no_grad()
def encode_items(encode: Callable[[dict], dict[str, torch.Tensor]], dataset: Dataset, info: DistInfo,
                 batch_size: int, num_workers: int, desc: str) -> dict[str, torch.Tensor]:
    """Encode this rank's share of `dataset` with `encode(batch)`, then gather all ranks' rows."""
    share = rank_share(global_batches(len(dataset), batch_size), info)
    loader = DataLoader(dataset, batch_sampler=share, num_workers=num_workers,
                        multiprocessing_context=worker_context(num_workers),
                        pin_memory=info.device.type == "cuda")
    chunks: dict[str, list[torch.Tensor]] = {}
    order = []
    for batch in tqdm(loader, desc=desc, disable=not info.is_main, leave=False):
        batch = _to_device(batch, info.device)
        for key, value in encode(batch).items():
            chunks.setdefault(key, []).append(value.float() if value.is_floating_point() else value)
        order.append(batch["index"].to(info.device))
    if not order:  # more ranks than batches: this rank contributes nothing
        probe = encode(_to_device(next(iter(DataLoader(dataset, batch_size=1))), info.device))
        chunks = {k: [v[:0].float() if v.is_floating_point() else v[:0]] for k, v in probe.items()}
        order = [torch.zeros(0, dtype=torch.long, device=info.device)]
    local = {key: torch.cat(values) for key, values in chunks.items()}
    return gather_in_order(local, torch.cat(order))


def _slice(features: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    start, stop = rows[0], rows[-1] + 1
    return {key: value[start:stop] for key, value in features.items()}


@torch.no_grad()
def similarity_matrix(similarity: Callable[[dict, dict], torch.Tensor], text: dict[str, torch.Tensor],
                      video: dict[str, torch.Tensor], info: DistInfo, block_rows: int = 256,
                      block_cols: int = 4096) -> np.ndarray | None:
    """[num_captions, num_videos] scores, built in fixed blocks; the whole matrix on rank 0 only."""
    num_text = next(iter(text.values())).shape[0]
    num_video = next(iter(video.values())).shape[0]
    row_blocks = rank_share(global_batches(num_text, block_rows), info)
    col_blocks = global_batches(num_video, block_cols)
    device = info.device
    rows, order = [], []
    for row_block in tqdm(row_blocks, desc="similarity", disable=not info.is_main, leave=False):
        text_part = _slice(text, row_block)
        row = torch.cat([similarity(text_part, _slice(video, cols)).float() for cols in col_blocks], dim=1)
        rows.append(row)
        order.append(torch.tensor(row_block, device=device))
    local = torch.cat(rows) if rows else torch.zeros(0, num_video, device=device)
    local_order = torch.cat(order) if order else torch.zeros(0, dtype=torch.long, device=device)
    full = gather_in_order({"sim": local}, local_order)["sim"]
    return full.cpu().numpy() if info.is_main else None


def dual_softmax_rerank(sim: np.ndarray, axis: int) -> np.ndarray:
    """InternVideo's inference-time DSL: S * softmax(S, axis). Transductive: every score
    depends on the whole test set. axis=0 normalises each video column over all texts."""
    sim64 = sim.astype(np.float64)
    shifted = np.exp(sim64 - sim64.max(axis=axis, keepdims=True))
    prior = shifted / shifted.sum(axis=axis, keepdims=True)
    return (sim64 * prior).astype(np.float32)


def retrieval_metrics(sim: np.ndarray, caption_video: np.ndarray) -> dict:
    """Plain metrics and, labelled, DSL metrics (as InternVideo reports them).

    As in InternVideo: t2v uses the text-normalised DSL matrix; v2t uses the
    video-normalised one on one-caption-per-video sets, and the text-normalised one on
    multi-caption sets (DSL applied before the multi-caption grouping)."""
    one_to_one = len(caption_video) == sim.shape[1] and np.array_equal(caption_video, np.arange(sim.shape[1]))
    plain = metrics.compute_metrics(sim, caption_video)
    dsl_text = dual_softmax_rerank(sim, axis=0)
    dsl = metrics.compute_metrics(dsl_text, caption_video)
    if one_to_one:
        dsl_v2t = metrics.compute_metrics(dual_softmax_rerank(sim, axis=1), caption_video)
        dsl["v2t"] = dsl_v2t["v2t"]
        dsl["v2t_per_caption"] = dsl_v2t["v2t_per_caption"]
    return {"plain": plain, "dsl": dsl}


def format_results(results: dict) -> str:
    lines = []
    for label, key in (("plain", "plain"), ("DSL (dual softmax, transductive)", "dsl")):
        for direction in ("t2v", "v2t", "v2t_per_caption"):
            m = results[key].get(direction)
            if m is None:
                continue
            lines.append(f"{label:<34} {direction:<16} R@1 {m['R1']:6.2f}  R@5 {m['R5']:6.2f}  "
                         f"R@10 {m['R10']:6.2f}  MedR {m['MedR']:6.1f}  MeanR {m['MeanR']:8.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- synthetic benchmark
def synthetic_meta_beside(data_path: str | os.PathLike) -> dict | None:
    """`synthetic_meta.json` in the folder of the annotation file (or in `data_path` itself
    when it is a folder): the data is the built-in synthetic benchmark. None otherwise."""
    from dataloaders.synthetic import META_FILE, load_meta

    path = Path(data_path)
    folder = path if path.is_dir() else path.parent
    return load_meta(folder / META_FILE) if (folder / META_FILE).is_file() else None


def temporal_metrics(sim: np.ndarray, caption_video: np.ndarray, video_ids: list[str], meta: dict) -> dict | None:
    """The synthetic benchmark's temporal report (direction / order twins: R@1 and twin
    accuracy, in percent) for a test-split score matrix; None when the split is not the
    meta file's test split (e.g. the train split)."""
    from dataloaders.synthetic_eval import temporal_report

    caption_ids = [video_ids[i] for i in caption_video]
    if caption_ids != list(meta["test_video_ids"]) or sorted(video_ids) != sorted(meta["test_video_ids"]):
        return None
    return temporal_report(sim, meta, video_ids=video_ids)


def format_temporal(report: dict) -> str:
    return "\n".join(f"temporal twins {kind:<10} ({r['queries']} queries)   R@1 {r['R1']:6.2f}  "
                     f"twin accuracy {r['twin_acc']:6.2f}  (order-blind: twin accuracy 50)"
                     for kind, r in report.items())
