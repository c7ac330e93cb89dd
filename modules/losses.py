"""Contrastive loss over a global batch split across ranks, and dual softmax re-ranking.

Distributed scheme (each rank holds b = B / world samples; B is the global batch):
rank r gathers the features of all ranks (`all_gather_with_grad`) and computes only
  rows: its own b texts against all B videos   [b, B]
  cols: all B texts against its own b videos   [B, b]
and the loss `(CE(rows) + CE(cols^T)) / 2` (each CE a mean over its b rows). Summed over the
ranks these terms are exactly W times the single-process loss on the full B x B matrix. The
gather's backward sums the incoming gradients of all ranks (all-reduce) before taking the
own slice, so each rank's features receive the gradient of the *sum* of the rank losses;
after DDP averages the parameter gradients over the W ranks, they equal the gradients of
the single-process symmetric cross-entropy on the global batch. The average of the rank
losses equals the global loss.

CLIP4Clip instead has every rank compute the full B x B loss and its gather returns the own
slice without the all-reduce; its gradients are 1/W of the single-process ones (and every
rank holds the whole matrix).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def world_info() -> tuple[int, int]:
    """(world_size, rank); (1, 0) when torch.distributed is unavailable or not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class AllGather(torch.autograd.Function):
    """all_gather + cat along dim 0, keeping gradients: backward all-reduces (SUM) the
    incoming gradient over ranks and returns this rank's slice. All ranks must pass tensors
    of the same shape (train loaders use drop_last)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world, rank = world_info()
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor)
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """`AllGather`, or the tensor itself with one process or no process group at all."""
    world, _ = world_info()
    if world == 1:
        return tensor
    return AllGather.apply(tensor)


class CrossEn(nn.Module):
    """CLIP4Clip's loss: mean over rows of -log_softmax(sim)[i, i] (positives on the diagonal)."""

    def forward(self, sim_matrix: torch.Tensor) -> torch.Tensor:
        return -torch.diagonal(F.log_softmax(sim_matrix, dim=-1)).mean()


def same_video_negatives(row_ids: torch.Tensor, col_ids: torch.Tensor, offset: int) -> torch.Tensor:
    """Bool [len(row_ids), len(col_ids)]: True where the pair shows the same video but is not
    the positive pair (row i's positive is column `offset + i`)."""
    same = row_ids[:, None] == col_ids[None, :]
    rows = torch.arange(len(row_ids), device=row_ids.device)[:, None]
    cols = torch.arange(len(col_ids), device=col_ids.device)[None, :]
    return same & (cols != rows + offset)


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits.float(), target)


def local_contrastive_loss(rows: torch.Tensor, cols: torch.Tensor, offset: int,
                           row_video_ids: torch.Tensor | None = None,
                           all_video_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric cross-entropy of one rank's share (see the module docstring).

    rows [b, B]: local texts x all videos, positive of row i at column offset + i.
    cols [B, b]: all texts x local videos, positive of column j at row offset + j.
    With video ids (local [b] and global [B]), the in-batch negatives that are other
    captions of the same video are left out of the softmax denominators.
    With one process, pass rows = cols = the full matrix and offset 0: the result is
    (CrossEn(S) + CrossEn(S^T)) / 2.
    """
    b = rows.shape[0]
    if cols.shape != (rows.shape[1], b):
        raise ValueError(f"rows {tuple(rows.shape)} and cols {tuple(cols.shape)} do not describe one split")
    target = torch.arange(b, device=rows.device) + offset
    exclude_rows = exclude_cols = None
    if row_video_ids is not None and all_video_ids is not None:
        # Texts and videos are paired, so cols^T ([b, B]: local videos x all texts) has the
        # same id layout as rows.
        exclude_rows = exclude_cols = same_video_negatives(row_video_ids, all_video_ids, offset)
    t2v = _cross_entropy(rows, target, exclude_rows)
    v2t = _cross_entropy(cols.t(), target, exclude_cols)
    return (t2v + v2t) / 2
