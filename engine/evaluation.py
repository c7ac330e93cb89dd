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
from collections.abc import Callable

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


