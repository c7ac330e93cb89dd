"""Batch sampler that puts temporal twins in the same batch as hard negatives.

Trained with random batches on the synthetic benchmark, a model learns colour and shape
and leaves direction and order at chance: a random batch almost never holds two clips that
differ only in time. ``TwinBatchSampler`` builds every batch from twin pairs: the first
half of a batch holds one clip of each pair, the second half their twins, in the same
order, so each item's twin is in the batch as a negative. It is an option of the training
sampler for the synthetic dataset (``--twin_batches``, attached to the train split by
:mod:`synthetic.dataset`); real datasets have no twins and keep random batches.

Distributed: each of ``num_replicas`` ranks gets its own ``batch_size`` items per step,
the ranks' batches of one step are disjoint, every rank yields the same number of
batches, and all ranks shuffle with the same ``seed`` and ``set_epoch`` value.

One epoch visits every pair once. A video with several dataset items (several captions,
``--expand_msrvtt_sentences``) contributes one of its items, chosen at random each epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


def twin_pairs_from_meta(meta: dict, split: str = "train") -> list[tuple[str, str]]:
    """(video_id, twin_video_id) pairs of ``split`` from ``synthetic_meta.json``."""
    return [(a, b) for a, b, _kind in meta["twin_pairs"][split]]


def _distributed_defaults(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        ready = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if ready else 1)
        rank = rank if rank is not None else (dist.get_rank() if ready else 0)
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
    return num_replicas, rank


class TwinBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices: ``[a_1..a_k, b_1..b_k]`` with b_i the twin of a_i.

    Args:
        item_videos: video id of each dataset item (index i -> ``item_videos[i]``).
        pairs: (video_id, twin_video_id) pairs; each video may appear in one pair only,
            so no video is repeated within a batch. Items of videos in no pair are never
            yielded.
        batch_size: items per rank per step (even).
        num_replicas, rank: distributed layout (default: from torch.distributed, else 1, 0).
        seed: shuffling seed, identical on all ranks.
        drop_last: drop the last incomplete global batch (default). If False it is
            completed with pairs from the start of the epoch's order.
    """

    def __init__(self, item_videos: Sequence[str], pairs: Sequence[tuple[str, str]], batch_size: int,
                 num_replicas: int | None = None, rank: int | None = None, seed: int = 0,
                 drop_last: bool = True) -> None:
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2 (half twins), got {batch_size}")
        self.num_replicas, self.rank = _distributed_defaults(num_replicas, rank)
        self.batch_size, self.seed, self.drop_last, self.epoch = batch_size, seed, drop_last, 0
        items: dict[str, list[int]] = {}
        for index, video_id in enumerate(item_videos):
            items.setdefault(video_id, []).append(index)
        self.pairs = self._check_pairs(pairs, items)
        self.items = items
        self.pairs_per_step = batch_size // 2 * self.num_replicas
        if not drop_last and len(self.pairs) < self.pairs_per_step:
            raise ValueError(f"{len(self.pairs)} twin pairs cannot fill one global batch of "
                             f"{self.pairs_per_step} pairs without repeating videos")

    @staticmethod
    def _check_pairs(pairs: Sequence[tuple[str, str]], items: dict[str, list[int]]) -> list[tuple[str, str]]:
        seen: set[str] = set()
        for a, b in pairs:
            if a == b or a in seen or b in seen:
                raise ValueError(f"pair ({a}, {b}): each video may be in one pair only, never with itself")
            seen.update((a, b))
            for video_id in (a, b):
                if video_id not in items:
                    raise ValueError(f"video {video_id} of a twin pair has no item in the dataset")
        if not pairs:
            raise ValueError("no twin pairs: use the ordinary random sampler")
        return [(a, b) for a, b in pairs]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        steps = len(self.pairs) // self.pairs_per_step
        if not self.drop_last and len(self.pairs) % self.pairs_per_step:
            steps += 1
        return steps

    def _epoch_pairs(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        """Pairs in this epoch's order, as item indices, each side's order within the pair random."""
        out = []
        for p in rng.permutation(len(self.pairs)):
            a, b = self.pairs[p]
            ia, ib = (self.items[v][rng.integers(len(self.items[v]))] for v in (a, b))
            out.append((ia, ib) if rng.integers(2) == 0 else (ib, ia))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        pairs = self._epoch_pairs(rng)
        per_rank = self.batch_size // 2
        for step in range(len(self)):
            start = step * self.pairs_per_step + self.rank * per_rank
            mine = [pairs[i % len(pairs)] for i in range(start, start + per_rank)]
            yield [int(a) for a, _ in mine] + [int(b) for _, b in mine]
