"""Nearest-neighbour search over L2-normalised embeddings: exact and approximate (FAISS).

Scores are inner products, which for normalised vectors are cosine similarities.

- `exact_search`: a chunked matrix product in the vectors' own dtype (float16 halves the bytes
  read per query, and a query over a large index is bound by memory reads), the top candidates
  of each chunk merged; the final candidates are re-scored in float32 so the scores returned
  are the exact cosine of the stored vectors. Works on a `np.memmap` of the stored shards.
- `AnnIndex`: a FAISS index over the same vectors (ids = row numbers), trained on a sample, with
  its search parameter (IVF `nprobe` or HNSW `efSearch`) calibrated at build time so that
  recall@10 against exact search reaches `TARGET_RECALL` on calibration queries (midpoints of
  random pairs of stored rows; the figure reached is kept in `calibrated_recall`).
- `choose_index`: exact below `EXACT_MAX_VECTORS`, otherwise an IVF index sized by the number
  of vectors, with 8-bit scalar quantisation (SQ8) or, when the memory budget is too small for
  that, product quantisation whose candidates are re-ranked against the original vectors.

Index kinds are FAISS `index_factory` strings ("IVF1024,SQ8", "HNSW32,Flat", ...), optionally
followed by `RERANK_SUFFIX` ("IVF1024,PQ64x4fs+rerank"): the FAISS index then proposes
`max(RERANK_FACTOR * k, rerank_candidates)` candidates (calibrated) that are re-scored exactly
against the vectors given to `build` / `load` (an in-memory array or a memmap of the stored
shards; they are not part of the saved file).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

# FAISS ships its own OpenMP runtime, which reads this when FAISS is first imported (lazily, below).
# With OpenMP's default busy-waiting and other work on a 2-core machine, training a small IVF-PQ
# took 7.5 s instead of 0.09 s (as main_task_retrieval.py, this respects a value already set).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the OpenMP setting, for the same reason)

logger = logging.getLogger(__name__)

EXACT_MAX_VECTORS = 500_000
TARGET_RECALL = 0.95
RERANK_SUFFIX = "+rerank"
RERANK_FACTOR = 10             # re-ranking kinds re-score at least RERANK_FACTOR * k candidates
RERANK_CANDIDATES = (100, 200, 400, 800)   # tried in turn by the calibration
HNSW_MAX_EF_SEARCH = 4096
NORM_TOLERANCE = 1e-2          # float16 storage keeps norms within about 1e-3 of 1
RESCORE_MARGIN = 32            # extra exact-search candidates re-scored in float32
MAX_SCORES_PER_CHUNK = 1 << 24 # queries x rows scored at once by exact search (64 MB of float32)
TRAIN_POINTS_PER_LIST = 64     # k-means sample per IVF list (FAISS warns below 39)
MIN_TRAIN_POINTS = 10_000      # PQ needs about 39 x 256 points per sub-quantiser
KMEANS_ITERATIONS = 10
CALIBRATION_QUERIES = 200
ADD_CHUNK = 65536
PQ_SUBQUANTISERS = (128, 64, 32, 16)   # 4-bit fast-scan PQ: 64, 32, 16 or 8 bytes a vector
FILE_MAGIC = b"VTRANN01"
SQ8_BYTES_PER_DIM = 1
ID_BYTES = 8                   # an IVF list stores one int64 id per vector
HNSW_LINK_BYTES = 4            # one int32 per link
HNSW_LINK_FACTOR = 2           # level 0 has 2 M links per vector; the upper levels add little

_NUMBER_TYPES = (np.float16, np.float32)


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------

def _check_vectors(vectors, name: str = "vectors") -> np.ndarray:
    if not isinstance(vectors, np.ndarray):
        raise TypeError(f"{name} must be a numpy array [N, D], got {type(vectors).__name__}")
    if vectors.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D], got shape {vectors.shape}")
    if vectors.dtype.type not in _NUMBER_TYPES:
        raise ValueError(f"{name} must be float16 or float32, got {vectors.dtype}")
    return vectors


def _check_queries(queries, dim: int) -> np.ndarray:
    queries = _check_vectors(queries, "queries")
    if queries.shape[1] != dim:
        raise ValueError(f"queries have dimension {queries.shape[1]} but the vectors have dimension {dim}")
    _check_normalised(queries, "queries")
    return queries


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_normalised(rows: np.ndarray, name: str, first_row: int = 0) -> None:
    norms = np.linalg.norm(rows.astype(np.float32, copy=False), axis=1)
    bad = np.flatnonzero(~(np.abs(norms - 1.0) <= NORM_TOLERANCE))   # NaN counts as bad
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"{name} must be L2-normalised: row {first_row + row} has norm {norms[row]:.4g} "
                         f"({bad.size} of {len(rows)} rows checked are off by more than {NORM_TOLERANCE})")


def _sample_rows(num_rows: int, count: int) -> np.ndarray:
    """`count` row numbers spread evenly over [0, num_rows), first and last included."""
    return np.unique(np.linspace(0, num_rows - 1, min(num_rows, count)).astype(np.int64))


def _iter_chunks(num_rows: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, num_rows, chunk):
        yield start, min(start + chunk, num_rows)


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A zero-copy tensor view; a read-only memmap makes torch warn, which is harmless here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(array))


# ----------------------------------------------------------------------------------------------
# Exact search
# ----------------------------------------------------------------------------------------------

def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of `vectors` by inner product with each query, best first (ties: lower row first).

    vectors [N, D] float16 or float32, L2-normalised (an evenly spread sample of rows is checked
    on each call); queries [Q, D], L2-normalised (all checked). Returns scores [Q, k] float32 and
    ids [Q, k] int64 with k clipped to N. Candidates are picked with a matrix product in the
    vectors' dtype and re-scored in float32, so with float16 vectors the order can differ from a
    float32 brute force only between rows whose scores differ by float16 rounding (about 1e-3).
    """
    vectors = _check_vectors(vectors)
    num_rows, dim = vectors.shape
    queries = _check_queries(queries, dim)
    k = min(_check_k(k), num_rows)
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
    sample = _sample_rows(num_rows, 1024)
    _check_normalised(vectors[sample], "vectors")
    candidates = min(num_rows, k + RESCORE_MARGIN)
    block = max(1, MAX_SCORES_PER_CHUNK // chunk)   # bounds the [queries, chunk] score matrix
    results = [_rescore(vectors, queries[i:i + block], _top_candidates(vectors, queries[i:i + block], candidates, chunk), k)
               for i in range(0, len(queries), block)]
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _top_candidates(vectors: np.ndarray, queries: np.ndarray, count: int, chunk: int) -> np.ndarray:
    """Row numbers [Q, count] of the best inner products, computed chunk by chunk in the vectors' dtype."""
    dtype = torch.float16 if vectors.dtype == np.float16 else torch.float32
    query_tensor = _as_tensor(queries).to(dtype)
    best = _TopK(len(queries), count)
    for start, stop in _iter_chunks(len(vectors), chunk):
        best.merge((query_tensor @ _as_tensor(vectors[start:stop]).T).float(), start)
    return best.ids.numpy()


class _TopK:
    """Running top-`count` scores and row numbers of Q queries over chunks of rows."""

    def __init__(self, num_queries: int, count: int):
        self.count = count
        self.scores = torch.empty((num_queries, 0), dtype=torch.float32)
        self.ids = torch.empty((num_queries, 0), dtype=torch.int64)

    def merge(self, chunk_scores: torch.Tensor, first_row: int) -> None:
        top = torch.topk(chunk_scores, min(self.count, chunk_scores.shape[1]), dim=1)
        scores = torch.cat([self.scores, top.values], dim=1)
        ids = torch.cat([self.ids, top.indices + first_row], dim=1)
        keep = torch.topk(scores, min(self.count, scores.shape[1]), dim=1).indices
        self.scores, self.ids = torch.gather(scores, 1, keep), torch.gather(ids, 1, keep)


def _rescore(vectors: np.ndarray, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact float32 scores of candidate rows `ids` [Q, C] (-1 = none); the k best, best first, ties by row."""
    valid = ids >= 0
    rows = np.where(valid, ids, 0)
    flat = np.unique(rows)                                   # sorted: sequential reads on a memmap
    gathered = np.asarray(vectors[flat], dtype=np.float32)
    position = np.searchsorted(flat, rows)
    scores = np.einsum("qcd,qd->qc", gathered[position], queries.astype(np.float32, copy=False))
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    tie_ids = np.where(valid, ids, np.iinfo(np.int64).max)
    order = np.lexsort((tie_ids, -scores), axis=-1)[:, :k]
    best_ids = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    best_scores = np.take_along_axis(scores, order, axis=1)
    return best_scores, np.where(np.isfinite(best_scores), best_ids, -1)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (ids of -1 are ignored)."""
    approx_ids, exact_ids = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx_ids.ndim != 2 or exact_ids.ndim != 2 or len(approx_ids) != len(exact_ids):
        raise ValueError(f"recall_at_k needs two [Q, k] id arrays with the same Q, got {approx_ids.shape} and {exact_ids.shape}")
    if len(exact_ids) == 0:
        raise ValueError("recall_at_k needs at least one query")
    total = 0.0
    for approx_row, exact_row in zip(approx_ids[:, :k], exact_ids[:, :k], strict=True):
        truth = set(exact_row[exact_row >= 0].tolist())
        total += len(truth.intersection(approx_row.tolist())) / len(truth) if truth else 1.0
    return total / len(exact_ids)


# ----------------------------------------------------------------------------------------------
# Choosing an index
# ----------------------------------------------------------------------------------------------

def ivf_list_count(num_vectors: int) -> int:
    """Number of IVF lists: the power of two nearest sqrt(N), within [16, 65536].

    FAISS suggests 4-16 sqrt(N); with 2 CPU cores the k-means training and the assignment of
    every vector grow with the list count (4M vectors, 8192 lists: minutes), while with sqrt(N)
    lists a query scanning a few dozen lists stays under 10 ms at 4M vectors.
    """
    if num_vectors < 1:
        raise ValueError(f"an index needs at least one vector, got {num_vectors}")
    exponent = round(math.log2(math.sqrt(num_vectors)))
    return int(min(max(2 ** exponent, 16), 65536))


def estimate_index_bytes(kind: str, num_vectors: int, dim: int) -> int:
    """Approximate memory of a FAISS index of this kind (codes, ids, centroids, graph links)."""
    base, _ = _split_kind(kind)
    parts = base.split(",")
    coarse, storage = parts[0], parts[-1]
    if coarse.startswith("IVF"):
        lists = int(coarse[3:].split("_")[0])
        per_vector = ID_BYTES + _code_bytes(storage, dim)
        return num_vectors * per_vector + lists * dim * 4
    if coarse.startswith("HNSW"):
        links = int(coarse[4:] or 32)
        storage_bytes = _code_bytes(storage if len(parts) > 1 else "Flat", dim)
        return num_vectors * (storage_bytes + HNSW_LINK_FACTOR * links * HNSW_LINK_BYTES)
    return num_vectors * _code_bytes(storage, dim)


def _code_bytes(storage: str, dim: int) -> int:
    if storage == "Flat":
        return 4 * dim
    if storage == "SQ8":
        return SQ8_BYTES_PER_DIM * dim
    if storage in ("SQfp16", "SQbf16"):
        return 2 * dim
    if storage.startswith("PQ"):
        subquantisers, _, bits = storage[2:].removesuffix("fs").removesuffix("np").partition("x")
        return math.ceil(int(subquantisers) * int(bits or 8) / 8)
    raise ValueError(f"unknown vector storage {storage!r} (known: Flat, SQ8, SQfp16, PQ<m>)")


def approximate_kind(num_vectors: int, dim: int, memory_budget_bytes: int | None) -> str:
    """The FAISS kind for this size and budget: IVF-SQ8 if it fits, else IVF-PQ with re-ranking.

    The PQ is 4-bit fast-scan (16 centroids a sub-quantiser): quick to train and to scan (8-bit
    PQ64 did not finish training 20k vectors in 6 minutes on the shared 2 cores), with the
    candidates re-ranked against the original vectors. It is the weak tier: on the clustered
    benchmark vectors (20k) it calibrated to recall@10 0.62 at most (0.88 on fresh queries), a
    warning says so and `calibrated_recall` keeps the figure.
    """
    lists = ivf_list_count(num_vectors)
    sq8 = f"IVF{lists},SQ8"
    if memory_budget_bytes is None or estimate_index_bytes(sq8, num_vectors, dim) <= memory_budget_bytes:
        return sq8
    for subquantisers in PQ_SUBQUANTISERS:
        kind = f"IVF{lists},PQ{subquantisers}x4fs{RERANK_SUFFIX}"
        if dim % subquantisers == 0 and estimate_index_bytes(kind, num_vectors, dim) <= memory_budget_bytes:
            return kind
    smallest = estimate_index_bytes(f"IVF{lists},PQ{PQ_SUBQUANTISERS[-1]}x4fs", num_vectors, dim)
    raise ValueError(f"a memory budget of {memory_budget_bytes} bytes is too small for {num_vectors} vectors "
                     f"of dimension {dim}: the smallest index (IVF{lists},PQ{PQ_SUBQUANTISERS[-1]}x4fs) "
                     f"needs about {smallest} bytes")


def choose_index(num_vectors: int, dim: int, memory_budget_bytes: int | None) -> str:
    """"exact" below EXACT_MAX_VECTORS, else the FAISS kind `AnnIndex.build` would make (see approximate_kind)."""
    if num_vectors < EXACT_MAX_VECTORS:
        return "exact"
    return approximate_kind(num_vectors, dim, memory_budget_bytes)


def _split_kind(kind: str) -> tuple[str, bool]:
    if kind.endswith(RERANK_SUFFIX):
        return kind[: -len(RERANK_SUFFIX)], True
    return kind, False


# ----------------------------------------------------------------------------------------------
# FAISS index
# ----------------------------------------------------------------------------------------------

def _faiss():
    try:
        import faiss
    except ImportError as error:   # pragma: no cover - faiss-cpu is in requirements.txt
        raise ImportError("approximate search needs FAISS: pip install faiss-cpu") from error
    return faiss


@dataclass
class AnnIndex:
    """A FAISS index over L2-normalised vectors; ids are row numbers of the vectors it was built from."""

    index: object                       # faiss.Index
    kind: str
    dim: int
    num_vectors: int
    parameter: str | None               # "nprobe", "efSearch" or None (flat)
    parameter_value: int | None
    calibrated_recall: float | None     # recall@10 on the calibration queries at parameter_value
    rerank_candidates: int = 0          # "+rerank" kinds: candidates re-scored (at least RERANK_FACTOR * k)
    vectors: np.ndarray | None = field(default=None, repr=False)   # for "+rerank" kinds only

    @property
    def rerank(self) -> bool:
        return _split_kind(self.kind)[1]

    @property
    def description(self) -> str:
        details = [f"{self.parameter} {self.parameter_value}"] if self.parameter else []
        if self.rerank:
            details.append(f"re-rank {self.rerank_candidates}")
        base = _split_kind(self.kind)[0]
        return f"{base} ({', '.join(details)})" if details else base

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, memory_budget_bytes: int | None = None, kind: str = "auto",
              seed: int = 0, target_recall: float = TARGET_RECALL) -> AnnIndex:
        """Train on a sample, add every vector (in chunks), calibrate the search parameter.

        kind "auto": `approximate_kind(N, D, memory_budget_bytes)`; "exact" means a flat FAISS index.
        """
        faiss = _faiss()
        vectors = _check_vectors(vectors)
        num_rows, dim = vectors.shape
        if num_rows == 0:
            raise ValueError("cannot build an index over zero vectors")
        if kind == "auto":
            kind = approximate_kind(num_rows, dim, memory_budget_bytes)
        elif kind == "exact":
            kind = "Flat"
        base, rerank = _split_kind(kind)
        try:
            index = faiss.index_factory(dim, base, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise ValueError(f"FAISS cannot build index kind {kind!r}: {error}") from error
        rng = np.random.default_rng(seed)
        _train(index, vectors, rng, seed)
        calibration_queries = _calibration_queries(vectors, rng)
        truth = _add_and_find_truth(index, vectors, calibration_queries)
        built = cls(index, kind, dim, num_rows, _search_parameter(index), None, None,
                    vectors=vectors if rerank else None)
        built._calibrate(calibration_queries, truth, target_recall)
        logger.info("built %s over %d vectors (%d bytes of index)", built.description, num_rows, built.index_bytes())
        return built

    def _calibrate(self, queries: np.ndarray, truth: np.ndarray, target_recall: float) -> None:
        """The cheapest setting reaching target_recall: for re-ranking kinds the fewest candidates
        (RERANK_CANDIDATES), then the smallest parameter on a 1, 2, 3, 4, 6, 8, 12, ... ladder."""
        if self.parameter is None:
            self.calibrated_recall = recall_at_k(self.search(queries, 10)[1], truth, 10)
            return
        ceiling = self.index_lists() if self.parameter == "nprobe" else HNSW_MAX_EF_SEARCH
        start = 1 if self.parameter == "nprobe" else 16
        recall = 0.0
        for candidates in RERANK_CANDIDATES if self.rerank else (0,):
            self.rerank_candidates = candidates
            for value in _parameter_ladder(start, ceiling):
                self.parameter_value = value
                recall = recall_at_k(self.search(queries, 10)[1], truth, 10)
                if recall >= target_recall:
                    self.calibrated_recall = recall
                    return
        logger.warning("%s reaches recall@10 %.3f at most (target %.2f)", self.kind, recall, target_recall)
        self.calibrated_recall = recall

    def index_lists(self) -> int:
        return int(_faiss().extract_index_ivf(self.index).nlist)

    def index_bytes(self) -> int:
        """Bytes of the serialised FAISS index (about its size in memory)."""
        faiss = _faiss()
        writer = faiss.VectorIOWriter()
        faiss.write_index(self.index, writer)
        return int(writer.data.size())

    # -- searching -----------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """scores [Q, k] float32 and ids [Q, k] int64, best first, k clipped to N.

        A slot the index could not fill (IVF lists too few for k) holds id -1 and score -inf.
        Scores are exact for "+rerank" kinds and approximate (quantised vectors) otherwise.
        """
        queries = _check_queries(queries, self.dim)
        k = min(_check_k(k), self.num_vectors)
        if self.rerank and self.vectors is None:
            raise ValueError(f"index kind {self.kind} re-ranks against the original vectors: pass vectors= to load()")
        if self.parameter is not None:
            _faiss().ParameterSpace().set_index_parameter(self.index, self.parameter, max(self.parameter_value, 1))
        wanted = min(self.num_vectors, max(RERANK_FACTOR * k, self.rerank_candidates)) if self.rerank else k
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), wanted)
        if self.rerank:
            return _rescore(self.vectors, queries, ids, k)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids.astype(np.int64)

    # -- files ---------------------------------------------------------------------------------

    def save(self, path) -> None:
        """One file: magic, JSON header length (uint64 LE), JSON header, FAISS index. Written atomically."""
        faiss = _faiss()
        path = pathlib.Path(path)
        header = json.dumps({"kind": self.kind, "dim": self.dim, "num_vectors": self.num_vectors,
                             "parameter": self.parameter, "parameter_value": self.parameter_value,
                             "calibrated_recall": self.calibrated_recall,
                             "rerank_candidates": self.rerank_candidates}).encode()
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "wb") as handle:
            handle.write(FILE_MAGIC + struct.pack("<Q", len(header)) + header)
            faiss.write_index(self.index, faiss.PyCallbackIOWriter(handle.write))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    @classmethod
    def load(cls, path, vectors: np.ndarray | None = None) -> AnnIndex:
        """Read a file written by `save`. "+rerank" kinds need the same vectors (rows) they were built from."""
        faiss = _faiss()
        path = pathlib.Path(path)
        with open(path, "rb") as handle:
            magic = handle.read(len(FILE_MAGIC))
            if magic != FILE_MAGIC:
                raise ValueError(f"{path} is not an ANN index file written by search.ann (magic {magic!r})")
            (length,) = struct.unpack("<Q", handle.read(8))
            try:
                header = json.loads(handle.read(length))
                index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
            except (ValueError, RuntimeError) as error:
                raise ValueError(f"{path}: damaged ANN index file ({error})") from error
        loaded = cls(index, header["kind"], header["dim"], header["num_vectors"], header["parameter"],
                     header["parameter_value"], header["calibrated_recall"], header["rerank_candidates"])
        if index.ntotal != loaded.num_vectors or index.d != loaded.dim:
            raise ValueError(f"{path}: header says {loaded.num_vectors} x {loaded.dim}, index holds {index.ntotal} x {index.d}")
        if vectors is not None:
            vectors = _check_vectors(vectors)
            if vectors.shape != (loaded.num_vectors, loaded.dim):
                raise ValueError(f"{path} was built over {loaded.num_vectors} x {loaded.dim} vectors, "
                                 f"got vectors of shape {vectors.shape}")
            loaded.vectors = vectors if loaded.rerank else None
        return loaded


def _search_parameter(index) -> str | None:
    faiss = _faiss()
    if faiss.try_extract_index_ivf(index) is not None:
        return "nprobe"
    if "HNSW" in type(faiss.downcast_index(index)).__name__:
        return "efSearch"
    return None


def _parameter_ladder(start: int, ceiling: int) -> list[int]:
    values, value = [], start
    while value < ceiling:
        values += [value, value * 3 // 2] if value >= 2 else [value]
        value *= 2
    return sorted({v for v in values if v < ceiling} | {ceiling})


def _train(index, vectors: np.ndarray, rng: np.random.Generator, seed: int) -> None:
    """Train on an evenly random sample of rows (sorted, so a memmap is read forwards)."""
    if index.is_trained:
        return
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    lists = ivf.nlist if ivf is not None else 1
    if ivf is not None:
        ivf.cp.seed = seed
        ivf.cp.niter = KMEANS_ITERATIONS
    size = min(len(vectors), max(TRAIN_POINTS_PER_LIST * lists, MIN_TRAIN_POINTS))
    rows = np.sort(rng.choice(len(vectors), size, replace=False))
    sample = np.asarray(vectors[rows], dtype=np.float32)
    _check_normalised(sample, "vectors")
    index.train(sample)


def _calibration_queries(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Midpoints of random pairs of rows: their neighbours straddle IVF cells and HNSW regions, so a
    parameter reaching the target on them is conservative for queries close to stored vectors."""
    count = min(len(vectors), CALIBRATION_QUERIES)
    first, second = (np.sort(rng.choice(len(vectors), count, replace=False)) for _ in range(2))
    queries = np.asarray(vectors[first], dtype=np.float32) + np.asarray(vectors[rng.permutation(second)], dtype=np.float32)
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    return queries / np.where(norms > 0, norms, 1.0)   # a pair of opposite rows leaves a zero query


def _add_and_find_truth(index, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Add every row in float32 chunks (each checked for norm) and, on the same chunks, the exact top-k of `queries`."""
    best = _TopK(len(queries), k)
    query_tensor = torch.from_numpy(queries)
    for start, stop in _iter_chunks(len(vectors), ADD_CHUNK):
        chunk = np.ascontiguousarray(vectors[start:stop], dtype=np.float32)
        _check_normalised(chunk, "vectors", first_row=start)
        index.add(chunk)
        best.merge(query_tensor @ torch.from_numpy(chunk).T, start)
    return best.ids.numpy()
