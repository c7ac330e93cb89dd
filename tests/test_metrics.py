"""metrics.py against brute-force definitions, written as plainly as possible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics import (
    compute_metrics,
    format_metrics_table,
    is_multi_caption,
    metrics_from_ranks,
    t2v_ranks,
    v2t_group_ranks,
    v2t_per_caption_ranks,
)


# --- brute force -----------------------------------------------------------------------
def brute_t2v(sim: np.ndarray, cv: np.ndarray) -> list[int]:
    return [1 + sum(sim[i, j] > sim[i, cv[i]] for j in range(sim.shape[1])) for i in range(sim.shape[0])]


def brute_v2t_group(sim: np.ndarray, cv: np.ndarray) -> list[int]:
    n_video = sim.shape[1]
    groups = [[c for c in range(len(cv)) if cv[c] == g] for g in range(n_video)]
    ranks = []
    for v in range(n_video):
        if not groups[v]:
            continue
        score = {g: max(sim[c, v] for c in groups[g]) for g in range(n_video) if groups[g]}
        ranks.append(1 + sum(s > score[v] for s in score.values()))
    return ranks


def brute_v2t_per_caption(sim: np.ndarray, cv: np.ndarray) -> list[int]:
    return [1 + sum(sim[o, cv[c]] > sim[c, cv[c]] for o in range(len(cv))) for c in range(len(cv))]


def uneven_captions(rng: np.random.Generator, n_video: int, max_caps: int, allow_empty: bool) -> np.ndarray:
    low = 0 if allow_empty else 1
    counts = rng.integers(low, max_caps + 1, size=n_video)
    cv = np.repeat(np.arange(n_video), counts)
    return rng.permutation(cv)  # captions need not be sorted by video


def check_all(sim: np.ndarray, cv: np.ndarray, block_elements: int) -> None:
    assert t2v_ranks(sim, cv, block_elements).tolist() == brute_t2v(sim, cv)
    assert v2t_group_ranks(sim, cv, block_elements).tolist() == brute_v2t_group(sim, cv)
    assert v2t_per_caption_ranks(sim, cv, block_elements).tolist() == brute_v2t_per_caption(sim, cv)


# --- tests -----------------------------------------------------------------------------
@pytest.mark.parametrize("block_elements", [1, 7, 64, 1 << 22])
@pytest.mark.parametrize("seed", range(4))
def test_random_multi_caption_matches_brute_force(seed: int, block_elements: int) -> None:
    rng = np.random.default_rng(seed)
    cv = uneven_captions(rng, n_video=9, max_caps=5, allow_empty=seed % 2 == 1)
    sim = rng.standard_normal((len(cv), 9)).astype(np.float32)
    check_all(sim, cv, block_elements)


@pytest.mark.parametrize("seed", range(6))
def test_integer_ties_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    cv = uneven_captions(rng, n_video=8, max_caps=4, allow_empty=True)
    sim = rng.integers(0, 3, size=(len(cv), 8)).astype(np.float64)
    check_all(sim, cv, block_elements=13)
    check_all(sim.astype(np.int64), cv, block_elements=13)  # integer dtype accepted too


def test_all_tied_is_rank_one_everywhere() -> None:
    sim = np.ones((6, 3))
    cv = np.array([0, 0, 1, 1, 2, 2])
    out = compute_metrics(sim, cv)
    for direction in ("t2v", "v2t", "v2t_per_caption"):
        assert out[direction]["R1"] == 100.0 and out[direction]["MeanR"] == 1.0


def test_hand_computed_tiny_case() -> None:
    sim = np.array([[0.9, 0.1], [0.2, 0.5], [0.3, 0.8]])
    cv = np.array([0, 0, 1])
    out = compute_metrics(sim, cv)
    # t2v ranks [1, 2, 1]
    assert out["t2v"] == pytest.approx(
        {"R1": 200 / 3, "R5": 100.0, "R10": 100.0, "MedR": 1.0, "MeanR": 4 / 3, "count": 3}
    )
    # v2t: video 0 -> groups (0.9, 0.3), video 1 -> groups (0.5, 0.8): both rank 1
    assert out["v2t"] == pytest.approx({"R1": 100.0, "R5": 100.0, "R10": 100.0, "MedR": 1.0, "MeanR": 1.0, "count": 2})
    # per caption: column 0 = (0.9, 0.2, 0.3) -> caption 1 has rank 3; caption 2 rank 1
    assert v2t_per_caption_ranks(sim, cv).tolist() == [1, 3, 1]
    assert out["v2t_per_caption"]["MeanR"] == pytest.approx(5 / 3)
    assert out["v2t_per_caption"]["count"] == 3


def _published_compute_metrics_r1(x: np.ndarray) -> float:
    """CLIP4Clip's 1:1 rule (diagonal is correct, rank = position in the descending
    sort) restated; equal to ours whenever there are no ties."""
    order = np.argsort(-x, axis=1)
    ranks = np.argmax(order == np.arange(len(x))[:, None], axis=1)
    return float(100 * np.mean(ranks == 0))


def test_one_to_one_identity_mapping() -> None:
    rng = np.random.default_rng(7)
    sim = rng.standard_normal((50, 50)).astype(np.float32) + 1.5 * np.eye(50, dtype=np.float32)
    out = compute_metrics(sim)  # caption_video=None -> caption i is video i
    assert out == compute_metrics(sim, np.arange(50))
    assert out["v2t"] == out["v2t_per_caption"]
    assert out["t2v"]["R1"] == pytest.approx(_published_compute_metrics_r1(sim))
    assert out["v2t"]["R1"] == pytest.approx(_published_compute_metrics_r1(sim.T))
    assert t2v_ranks(sim, np.arange(50)).tolist() == brute_t2v(sim, np.arange(50))
    # Perfect retrieval on a diagonal matrix.
    perfect = compute_metrics(np.eye(5))
    assert all(perfect[d]["R1"] == 100.0 and perfect[d]["MedR"] == 1.0 for d in perfect)


def test_multi_caption_v2t_is_lenient_vs_per_caption() -> None:
    # Two videos, three captions each; video 0's captions all score 1.0 against it, so
    # per caption the 2nd and 3rd see their siblings tie (not higher): still rank 1.
    # Video 1's own captions score 0.5, 0.4, 0.3, and caption 0 of video 0 scores 0.6.
    sim = np.array([[1.0, 0.6], [1.0, 0.0], [1.0, 0.0], [0.0, 0.5], [0.0, 0.4], [0.0, 0.3]])
    cv = np.array([0, 0, 0, 1, 1, 1])
    out = compute_metrics(sim, cv)
    assert v2t_group_ranks(sim, cv).tolist() == [1, 2]
    assert v2t_per_caption_ranks(sim, cv).tolist() == [1, 1, 1, 2, 3, 4]
    assert out["v2t"]["R1"] == 50.0 and out["v2t_per_caption"]["R1"] == 50.0
    assert out["v2t_per_caption"]["MeanR"] == pytest.approx(12 / 6)


def test_video_without_captions_is_a_distractor_only() -> None:
    sim = np.array([[0.1, 0.9, 0.2], [0.8, 0.1, 0.3]])
    cv = np.array([0, 2])  # video 1 has no caption
    out = compute_metrics(sim, cv)
    assert t2v_ranks(sim, cv).tolist() == [3, 2]
    assert out["v2t"]["count"] == 2 and out["v2t_per_caption"]["count"] == 2
    assert v2t_group_ranks(sim, cv).tolist() == brute_v2t_group(sim, cv)


def test_torch_and_numpy_agree() -> None:
    rng = np.random.default_rng(3)
    cv = uneven_captions(rng, 20, 4, allow_empty=False)
    sim = rng.standard_normal((len(cv), 20)).astype(np.float32)
    a = compute_metrics(sim, cv, block_elements=100)
    b = compute_metrics(torch.from_numpy(sim), torch.from_numpy(cv), block_elements=100)
    c = compute_metrics(torch.from_numpy(sim).double(), list(cv))
    assert a == b == c


@pytest.mark.parametrize("bad,expect", [(float("nan"), "2 NaN and 0 infinite"), (float("inf"), "0 NaN and 2 infinite")])
def test_non_finite_scores_raise(bad: float, expect: str) -> None:
    sim = np.zeros((4, 4), dtype=np.float32)
    sim[1, 2] = sim[3, 0] = bad
    with pytest.raises(ValueError, match=expect):
        compute_metrics(sim, block_elements=3)
    with pytest.raises(ValueError, match=expect):
        compute_metrics(torch.from_numpy(sim))


def test_bad_caption_video_raises() -> None:
    sim = np.zeros((3, 2))
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(sim, np.array([0, 1]))
    with pytest.raises(ValueError, match="range"):
        compute_metrics(sim, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        compute_metrics(sim, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="not square"):
        compute_metrics(sim)
    with pytest.raises(ValueError, match="2-D"):
        compute_metrics(np.zeros(3), np.zeros(3, dtype=int))


def test_metrics_from_ranks_median_and_empty() -> None:
    m = metrics_from_ranks([1, 2, 6, 11])
    assert m == {"R1": 25.0, "R5": 50.0, "R10": 75.0, "MedR": 4.0, "MeanR": 5.0, "count": 4}
    assert metrics_from_ranks([])["count"] == 0


def test_medr_lower_median_on_even_count() -> None:
    assert metrics_from_ranks([1, 2, 6, 11], lower_median=True)["MedR"] == 2.0
    assert metrics_from_ranks([11, 1, 6], lower_median=True)["MedR"] == 6.0
    ranks = np.random.default_rng(5).integers(1, 40, size=1000)
    assert metrics_from_ranks(ranks, lower_median=True)["MedR"] == float(torch.median(torch.as_tensor(ranks)))


def test_medr_follows_the_published_function_of_each_direction() -> None:
    """Multi-caption t2v: torch.median (lower) as tensor_text_to_video_metrics; 1:1 t2v and
    v2t: np.median (mean of the middle two) as compute_metrics. Even counts on both sides."""
    # 4 captions, 2 videos; t2v ranks [1, 2, 2, 1]: lower median 1, np.median 1.5
    sim = np.array([[0.9, 0.1], [0.2, 0.5], [0.8, 0.3], [0.1, 0.6]])
    cv = np.array([0, 0, 1, 1])
    assert t2v_ranks(sim, cv).tolist() == [1, 2, 2, 1]
    out = compute_metrics(sim, cv)
    assert out["t2v"]["MedR"] == 1.0
    assert out["v2t_per_caption"]["MedR"] == float(np.median(v2t_per_caption_ranks(sim, cv)))
    rng = np.random.default_rng(6)  # a seed where the two medians differ (asserted below)
    cv = uneven_captions(rng, n_video=30, max_caps=4, allow_empty=False)
    sim = rng.standard_normal((len(cv) + len(cv) % 2, 30)).astype(np.float32)  # an even caption count
    cv = np.concatenate([cv, cv[:1]])[: len(sim)]
    out = compute_metrics(sim, cv)
    t2v = torch.as_tensor(t2v_ranks(sim, cv))
    assert len(t2v) % 2 == 0 and out["t2v"]["MedR"] == float(torch.median(t2v)) != np.median(t2v.numpy())
    v2t = v2t_group_ranks(sim, cv)
    assert out["v2t"]["MedR"] == float(np.median(v2t)) != float(torch.median(torch.as_tensor(v2t)))
    # 1:1 (even count, 40 queries): np.median in both directions, as the published compute_metrics
    square = rng.standard_normal((40, 40)).astype(np.float32)
    one_to_one = compute_metrics(square)
    assert one_to_one["t2v"]["MedR"] == float(np.median(t2v_ranks(square, np.arange(40))))
    v2t = v2t_group_ranks(square, np.arange(40))
    assert one_to_one["v2t"]["MedR"] == float(np.median(v2t)) != float(torch.median(torch.as_tensor(v2t)))


def test_is_multi_caption() -> None:
    assert not is_multi_caption(np.arange(4), 4)
    assert not is_multi_caption(torch.tensor([2, 0, 1]), 3)  # a permutation is still 1:1
    assert is_multi_caption(np.array([0, 0, 1]), 2)
    assert is_multi_caption(np.array([0, 1]), 3)  # a video without a caption


def test_large_matrix_in_small_blocks_is_consistent() -> None:
    rng = np.random.default_rng(11)
    cv = uneven_captions(rng, 300, 6, allow_empty=True)
    sim = rng.standard_normal((len(cv), 300)).astype(np.float32)
    assert compute_metrics(sim, cv, block_elements=5000) == compute_metrics(sim, cv)


def test_format_metrics_table() -> None:
    m = compute_metrics(np.eye(3))
    table = format_metrics_table({"plain": m, "DSL": m}, title="MSR-VTT")
    lines = table.splitlines()
    assert lines[0] == "**MSR-VTT**"
    assert "| plain | t2v | 100.0 | 100.0 | 100.0 | 1.0 | 1.0 | 3 |" in lines
    assert sum("| DSL |" in line for line in lines) == 3
    assert "| v2t_per_caption |" in format_metrics_table(m)
