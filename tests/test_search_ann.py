"""Exact and FAISS nearest-neighbour search (search/ann.py) on small data."""

import numpy as np
import pytest

from search import ann


def _normalise(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _random_unit(n, dim=64, seed=0):
    return _normalise(np.random.default_rng(seed).standard_normal((n, dim)))


def _clustered(n, dim=64, clusters=40, subspace=12, seed=0):
    """Clusters in a low-dimensional subspace plus noise (shared centres; `seed` draws the points)."""
    layout = np.random.default_rng(1000)
    basis = np.linalg.qr(layout.standard_normal((dim, subspace)))[0].T
    centres = layout.standard_normal((clusters, subspace))
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(0, clusters, n)] + 0.4 * rng.standard_normal((n, subspace))
    return _normalise(points @ basis + 0.05 * rng.standard_normal((n, dim)))


def _brute_force(vectors, queries, k):
    scores = queries.astype(np.float32) @ vectors.astype(np.float32).T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("chunk", [37, 64, 65536])
def test_exact_search_equals_brute_force(dtype, chunk):
    vectors = _random_unit(301).astype(dtype)
    queries = _random_unit(9, seed=1)
    scores, ids = ann.exact_search(vectors, queries, 5, chunk=chunk)
    expected_scores, expected_ids = _brute_force(vectors, queries, 5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (9, 5)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-5)


def test_exact_search_clips_k_to_the_number_of_vectors():
    vectors = _random_unit(6)
    scores, ids = ann.exact_search(vectors, _random_unit(2, seed=1), 10, chunk=4)
    assert ids.shape == (2, 6)
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.tile(np.arange(6), (2, 1)))
    assert (np.diff(scores, axis=1) <= 0).all()


def test_exact_search_breaks_ties_by_lower_row():
    row = _random_unit(1)
    vectors = np.concatenate([_random_unit(3, seed=2), row, row, row])
    _, ids = ann.exact_search(vectors, row, 3, chunk=4)
    np.testing.assert_array_equal(ids, [[3, 4, 5]])


def test_exact_search_reads_a_read_only_memmap(tmp_path):
    vectors = _random_unit(200).astype(np.float16)
    path = tmp_path / "shard.f16"
    vectors.tofile(path)
    mapped = np.memmap(path, dtype=np.float16, mode="r", shape=vectors.shape)
    queries = _random_unit(3, seed=1)
    np.testing.assert_array_equal(ann.exact_search(mapped, queries, 4, chunk=64)[1],
                                  ann.exact_search(vectors, queries, 4)[1])


@pytest.mark.parametrize("vectors, queries, k, message", [
    (_random_unit(10), _random_unit(2, dim=32), 3, "dimension 32 but the vectors have dimension 64"),
    (_random_unit(10), 2 * _random_unit(2), 3, "queries must be L2-normalised"),
    (3 * _random_unit(10), _random_unit(2), 3, "vectors must be L2-normalised"),
    (_random_unit(10).astype(np.float64), _random_unit(2), 3, "float16 or float32"),
    (_random_unit(10), _random_unit(1)[0], 3, "queries must be a 2-D array"),
    (_random_unit(10), _random_unit(2), 0, "k must be a positive integer"),
])
def test_exact_search_rejects_bad_input(vectors, queries, k, message):
    with pytest.raises(ValueError, match=message):
        ann.exact_search(vectors, queries, k)


def test_nan_vectors_are_reported_as_not_normalised():
    queries = _random_unit(2)
    queries[1, 0] = np.nan
    with pytest.raises(ValueError, match="row 1 has norm nan"):
        ann.exact_search(_random_unit(5), queries, 2)


def test_recall_at_k_counts_the_overlap_and_ignores_missing_ids():
    exact = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    approx = np.array([[3, 2, 9, 9], [4, -1, -1, -1]])
    assert ann.recall_at_k(approx, exact, k=4) == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert ann.recall_at_k(exact, exact, k=2) == 1.0
    with pytest.raises(ValueError, match="same Q"):
        ann.recall_at_k(approx[:1], exact)


@pytest.mark.parametrize("kind", ["auto", "IVF16,PQ16x4fs+rerank", "HNSW16,Flat"])
def test_faiss_index_agrees_with_exact_search_on_clustered_data(kind):
    vectors = _clustered(4000)
    queries = _clustered(100, seed=1)
    index = ann.AnnIndex.build(vectors, kind=kind)
    _, exact_ids = ann.exact_search(vectors, queries, 10)
    scores, ids = index.search(queries, 10)
    assert ids.shape == (100, 10) and ids.dtype == np.int64 and scores.dtype == np.float32
    assert ann.recall_at_k(ids, exact_ids, 10) >= 0.95
    assert index.calibrated_recall >= ann.TARGET_RECALL
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_auto_kind_is_ivf_sq8_with_a_calibrated_nprobe():
    index = ann.AnnIndex.build(_clustered(3000, dim=32))
    assert index.kind == f"IVF{ann.ivf_list_count(3000)},SQ8"
    assert index.description == f"IVF64,SQ8 (nprobe {index.parameter_value})"


def test_build_is_deterministic():
    vectors, queries = _clustered(2000), _clustered(20, seed=1)
    first, second = (ann.AnnIndex.build(vectors, kind="IVF16,SQ8", seed=3) for _ in range(2))
    assert first.parameter_value == second.parameter_value
    np.testing.assert_array_equal(first.search(queries, 5)[1], second.search(queries, 5)[1])


def test_rerank_scores_are_exact():
    vectors, queries = _clustered(2000), _clustered(5, seed=1)
    index = ann.AnnIndex.build(vectors, kind="IVF16,PQ8x4fs+rerank")
    scores, ids = index.search(queries, 3)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", vectors[ids], queries), atol=1e-5)


def test_build_rejects_vectors_that_are_not_normalised():
    vectors = _clustered(500)
    vectors[321] *= 2
    with pytest.raises(ValueError, match="row 321 has norm 2"):
        ann.AnnIndex.build(vectors, kind="IVF4,SQ8")


def test_choose_index_is_exact_below_the_threshold_and_faiss_above():
    limit = ann.EXACT_MAX_VECTORS
    assert ann.choose_index(limit - 1, 512, None) == "exact"
    assert ann.choose_index(limit, 512, None) == f"IVF{ann.ivf_list_count(limit)},SQ8"
    assert ann.choose_index(4_000_000, 512, 10 * 2**30) == "IVF2048,SQ8"


def test_choose_index_trades_precision_for_memory():
    n, dim = 4_000_000, 512
    sq8_bytes = ann.estimate_index_bytes("IVF2048,SQ8", n, dim)
    assert sq8_bytes == n * (dim + 8) + 2048 * dim * 4
    tight = ann.choose_index(n, dim, sq8_bytes - 1)
    assert tight == "IVF2048,PQ128x4fs+rerank"
    assert ann.choose_index(n, dim, n * 20) == "IVF2048,PQ16x4fs+rerank"
    with pytest.raises(ValueError, match="too small"):
        ann.choose_index(n, dim, n * 8)


def test_ivf_list_count_grows_with_the_square_root():
    assert [ann.ivf_list_count(n) for n in (100, 100_000, 1_000_000, 4_000_000)] == [16, 256, 1024, 2048]


@pytest.mark.parametrize("kind", ["IVF16,SQ8", "IVF16,PQ8x4fs+rerank", "HNSW8,Flat", "exact"])
def test_save_and_load_round_trip(tmp_path, kind):
    vectors, queries = _clustered(1000), _clustered(10, seed=1)
    index = ann.AnnIndex.build(vectors, kind=kind)
    path = tmp_path / "windows.ann"
    index.save(path)
    loaded = ann.AnnIndex.load(path, vectors=vectors)
    assert loaded.description == index.description and loaded.calibrated_recall == index.calibrated_recall
    for got, expected in zip(loaded.search(queries, 5), index.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert not list(tmp_path.glob("*.tmp"))


def test_load_errors_name_the_file_and_the_problem(tmp_path):
    vectors = _clustered(1000)
    index = ann.AnnIndex.build(vectors, kind="IVF16,PQ8x4fs+rerank")
    path = tmp_path / "windows.ann"
    index.save(path)
    with pytest.raises(ValueError, match="pass vectors= to load"):
        ann.AnnIndex.load(path).search(vectors[:1], 3)
    with pytest.raises(ValueError, match="built over 1000 x 64 vectors"):
        ann.AnnIndex.load(path, vectors=vectors[:999])
    other = tmp_path / "other.bin"
    other.write_bytes(b"not an index")
    with pytest.raises(ValueError, match="other.bin is not an ANN index file"):
        ann.AnnIndex.load(other)
    truncated = tmp_path / "truncated.ann"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="damaged"):
        ann.AnnIndex.load(truncated)
