"""Losses: CrossEn, dual softmax, the split contrastive loss (simulated ranks and real gloo ranks)."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine.distributed import cleanup
from engine.evaluation import dual_softmax_rerank
from modules.losses import AllGather, CrossEn, all_gather_with_grad, local_contrastive_loss, world_info


def full_loss(sim: torch.Tensor) -> torch.Tensor:
    """CLIP4Clip's training loss on the whole matrix."""
    return (CrossEn()(sim) + CrossEn()(sim.t())) / 2


def test_cross_en_is_mean_negative_log_softmax_diagonal():
    sim = torch.randn(5, 5)
    expected = sum(-(sim[i, i] - torch.logsumexp(sim[i], 0)) for i in range(5)) / 5
    torch.testing.assert_close(CrossEn()(sim), expected)


def test_dual_softmax_normalises_each_video_column_over_texts():
    sim = torch.randn(6, 4) * 5
    out = torch.from_numpy(dual_softmax_rerank(sim.numpy(), axis=0))
    for j in range(4):
        prior = torch.exp(sim[:, j]) / torch.exp(sim[:, j]).sum()
        torch.testing.assert_close(out[:, j], sim[:, j] * prior)


def test_single_process_loss_is_the_symmetric_cross_entropy():
    sim = torch.randn(7, 7)
    torch.testing.assert_close(local_contrastive_loss(sim, sim, 0), full_loss(sim))


def _features(n: int, d: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(n, d, generator=gen, requires_grad=True)
    video = torch.randn(n, d, generator=gen, requires_grad=True)
    return text, video


@pytest.mark.parametrize("world", [2, 4])
def test_simulated_ranks_give_the_full_matrix_gradient(world):
    """Sum over ranks of each rank's own rows/cols loss, averaged like DDP, equals the full loss
    in value and in the gradient of every feature."""
    n = 8
    text, video = _features(n)
    scale = torch.tensor(3.0, requires_grad=True)
    full = full_loss(scale * text @ video.t())
    expected = torch.autograd.grad(full, (text, video, scale))
    b = n // world
    ranks = []
    for r in range(world):
        local = slice(r * b, (r + 1) * b)
        rows = scale * text[local] @ video.t()
        cols = scale * text @ video[local].t()
        ranks.append(local_contrastive_loss(rows, cols, r * b))
    total = sum(ranks) / world
    torch.testing.assert_close(total, full)
    for got, want in zip(torch.autograd.grad(total, (text, video, scale)), expected, strict=True):
        torch.testing.assert_close(got, want)


def brute_masked_loss(sim: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Denominators without the other pairs of the same video, written with explicit loops."""
    n = len(ids)
    terms = []
    for i in range(n):
        keep = [j for j in range(n) if j == i or ids[j] != ids[i]]
        terms.append(-(sim[i, i] - torch.logsumexp(sim[i, keep], 0)))
        terms.append(-(sim[i, i] - torch.logsumexp(sim[keep, i], 0)))
    return sum(terms) / (2 * n)


@pytest.mark.parametrize("world", [1, 2])
def test_mask_same_video_negatives(world):
    n = 6
    ids = torch.tensor([3, 1, 3, 2, 1, 3])
    text, video = _features(n, seed=1)
    sim = text @ video.t()
    want = brute_masked_loss(sim, ids)
    b = n // world
    got = sum(local_contrastive_loss(sim[r * b:(r + 1) * b], sim[:, r * b:(r + 1) * b], r * b,
                                     ids[r * b:(r + 1) * b], ids) for r in range(world)) / world
    torch.testing.assert_close(got, want)
    assert not torch.allclose(want, full_loss(sim))
    g_got = torch.autograd.grad(got, text)[0]
    g_want = torch.autograd.grad(brute_masked_loss(text @ video.t(), ids), text)[0]
    torch.testing.assert_close(g_got, g_want)


def test_all_gather_is_identity_without_a_process_group():
    assert world_info() == (1, 0)
    x = torch.randn(3, 4, requires_grad=True)
    assert all_gather_with_grad(x) is x


# ----------------------------------------------------------------------------- real ranks (gloo)
WORLD = 2
CONFIGS = [
    dict(sim_header="meanP", frame_norm="l2", mask_same_video_negatives=True),
    dict(sim_header="seqTransf", cross_num_hidden_layers=1),
    dict(sim_header="tightTransf", cross_num_hidden_layers=1, cross_dropout=0.0),
]


def _batch():
    from tests.tiny_clip import random_captions, random_video

    gen = torch.Generator().manual_seed(5)
    ids, ids_mask = random_captions(gen, [2, 5, 1, 3], 8)
    video, video_mask = random_video(gen, [3, 1, 2, 3], 3)
    video_ids = torch.tensor([0, 1, 0, 2])  # two captions of video 0
    return ids, ids_mask, video, video_mask, video_ids


def _grads(config: dict, rows: slice) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    from modules.modeling import CLIP4Clip, RetrievalConfig
    from tests.tiny_clip import tiny_clip_state_dict

    torch.manual_seed(0)  # heads outside CLIP draw from the global generator
    model = CLIP4Clip.from_clip_state_dict(RetrievalConfig(**config), tiny_clip_state_dict(0))
    loss = model(*(x[rows] for x in _batch()))
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        # AllGather: forward concatenates, backward sums all ranks' gradients then slices.
        x = torch.full((2, 3), float(rank + 1), requires_grad=True)
        gathered = AllGather.apply(x)
        (gathered * torch.arange(1.0, 5.0)[:, None] * (rank + 1)).sum().backward()
        results = {"gathered": gathered.detach(), "x_grad": x.grad}
        b = 4 // WORLD
        for i, config in enumerate(CONFIGS):
            loss, grads = _grads(config, slice(rank * b, (rank + 1) * b))
            for g in grads.values():  # what DDP does: average over ranks
                dist.all_reduce(g)
                g /= WORLD
            dist.all_reduce(loss)
            results[i] = (loss / WORLD, grads)
        if rank == 0:
            torch.save(results, out)
    except BaseException:
        cleanup(wait_for_peers=False)
        raise
    cleanup()  # barrier first: rank 1 must not tear down while rank 0 still writes (gloo SIGABRT)


def test_two_gloo_ranks_match_one_process_on_the_whole_batch():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "grads.pt")
        ranks = mp.spawn(_worker, args=(os.path.join(tmp, "store"), out), nprocs=WORLD, join=False)
        expected = [_grads(config, slice(0, 4)) for config in CONFIGS]  # while the ranks start
        while not ranks.join():
            pass
        results = torch.load(out, weights_only=True)
    torch.testing.assert_close(results["gathered"], torch.tensor([[1.0] * 3] * 2 + [[2.0] * 3] * 2))
    # rank 0's rows 0, 1 get d/dx from rank 0 (x1) and rank 1 (x2): 3 * [1, 2]
    torch.testing.assert_close(results["x_grad"], torch.tensor([[3.0] * 3, [6.0] * 3]))
    for i, (config, (want_loss, want)) in enumerate(zip(CONFIGS, expected, strict=True)):
        loss, grads = results[i]
        torch.testing.assert_close(loss, want_loss, msg=str(config))
        assert set(grads) == set(want), config
        assert "clip.logit_scale" in grads or config["sim_header"] == "tightTransf"
        for name in want:
            torch.testing.assert_close(grads[name], want[name], atol=1e-6, rtol=1e-4, msg=f"{config} {name}")
