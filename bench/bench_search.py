"""Search latency, recall and memory: exact search (float16, float32) and FAISS (search/ann.py).

Vectors: N normalised D-dim vectors with the structure of real embeddings (random vectors have
no neighbourhoods, and no approximate index beats chance on them): N // POINTS_PER_CLUSTER
cluster centres in a random SUBSPACE-dim subspace, each point its centre plus a Gaussian
spread in the subspace and isotropic noise in all D dims, normalised, stored as float16 (what
the search index keeps on disk). Queries are fresh draws of the same distribution, not stored.
Generated chunk by chunk from per-chunk seeds, so 4M x 512 float16 (4 GB) never exists in
float32; the float32 copy for exact float32 search is made only up to --fp32-max.

Per size, in one process: exact float16 search (the baseline: its ids are the ground truth
for recall@10), exact float32, and each FAISS kind (--kinds; "auto" is what
`search.ann.AnnIndex.build` picks without a memory budget, "budget:B" what it picks with B
bytes a vector). Latency: one query at a time, top 10, p50 and p95 over --queries queries (after
--warmup unmeasured ones). Memory: the index's own bytes (FAISS codes, ids, centroids; for exact
search the vector array) and the rise of the process's resident set while the index was built.

    python -m bench.bench_search [--sizes 100k,1M,4M] [--queries 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see search/ann.py

from search import ann  # noqa: E402

logger = logging.getLogger("bench_search")

POINTS_PER_CLUSTER = 1000
SUBSPACE = 64
SPREAD = 0.5        # per subspace dim, against centres drawn N(0, 1)
NOISE = 0.05        # per dim, all D dims
GENERATE_CHUNK = 65536
K = 10


def parse_size(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def structured_vectors(num: int, dim: int, seed: int, num_clusters: int, stream: int) -> np.ndarray:
    """[num, dim] float16 normalised rows; `stream` separates the stored rows (0) from queries (1)."""
    layout = np.random.default_rng([seed, 0])
    basis = np.linalg.qr(layout.standard_normal((dim, SUBSPACE)))[0].T.astype(np.float32)
    centres = layout.standard_normal((num_clusters, SUBSPACE)).astype(np.float32)
    out = np.empty((num, dim), np.float16)
    for index, start in enumerate(range(0, num, GENERATE_CHUNK)):
        stop = min(start + GENERATE_CHUNK, num)
        rng = np.random.default_rng([seed, stream, index])
        points = centres[rng.integers(0, num_clusters, stop - start)]
        points += SPREAD * rng.standard_normal(points.shape, dtype=np.float32)
        rows = points @ basis + NOISE * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed_queries(search, queries: np.ndarray, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids [Q, K], wall and CPU milliseconds [Q, 2] of `search(one_query)`, after `warmup` unmeasured calls.

    The CPU time (all threads of the process) is disturbed less than the wall time when other
    work shares the cores."""
    for row in queries[:warmup]:
        search(row[None])
    ids, millis = [], []
    for row in queries:
        wall, cpu = time.perf_counter(), time.process_time()
        ids.append(search(row[None])[1][0])
        millis.append((1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu)))
    return np.stack(ids), np.array(millis)


def faiss_kind(spec: str, num: int, dim: int) -> tuple[str, int | None]:
    if spec.startswith("budget:"):
        budget = int(float(spec.split(":", 1)[1]) * num)
        return "auto", budget
    return spec, None


def index_memory(index: ann.AnnIndex) -> int:
    """Bytes of codes, ids and centroids (IVF, from the lists) or of the serialised index."""
    import faiss
    ivf = faiss.try_extract_index_ivf(index.index)
    if ivf is None:
        return index.index_bytes()
    return ivf.invlists.compute_ntotal() * (ivf.code_size + 8) + ivf.nlist * index.dim * 4


def bench_size(num: int, args) -> list[dict]:
    rows = []
    clusters = max(num // POINTS_PER_CLUSTER, 16)
    start = time.perf_counter()
    vectors = structured_vectors(num, args.dim, args.seed, clusters, stream=0)
    queries = structured_vectors(args.queries, args.dim, args.seed, clusters, stream=1).astype(np.float32)
    logger.info("%d vectors generated in %.1f s", num, time.perf_counter() - start)
    load = os.getloadavg()[0]

    truth, millis = timed_queries(lambda q: ann.exact_search(vectors, q, K), queries, args.warmup)
    rows.append(row(num, "exact float16", 0.0, vectors.nbytes, 0, millis, 1.0, load))
    if num <= args.fp32_max:
        before = rss_bytes()
        vectors32 = vectors.astype(np.float32)
        ids, millis = timed_queries(lambda q: ann.exact_search(vectors32, q, K), queries, args.warmup)
        rows.append(row(num, "exact float32", 0.0, vectors32.nbytes, rss_bytes() - before, millis,
                        ann.recall_at_k(ids, truth), load))
        del vectors32
    for spec in args.kinds.split(","):
        kind, budget = faiss_kind(spec, num, args.dim)
        before, start = rss_bytes(), time.perf_counter()
        index = ann.AnnIndex.build(vectors, memory_budget_bytes=budget, kind=kind, seed=args.seed)
        build_s, grown = time.perf_counter() - start, rss_bytes() - before
        ids, millis = timed_queries(lambda q, index=index: index.search(q, K), queries, args.warmup)
        rows.append(row(num, index.description, build_s, index_memory(index), grown, millis,
                        ann.recall_at_k(ids, truth), load))
        logger.info("%s", rows[-1])
        del index
    return rows


def row(num, method, build_s, index_bytes, rss_rise, millis, recall, load) -> dict:
    return {"N": num, "method": method, "build_s": build_s, "index_mb": index_bytes / 2**20,
            "rss_rise_mb": rss_rise / 2**20, "p50_ms": float(np.percentile(millis[:, 0], 50)),
            "p95_ms": float(np.percentile(millis[:, 0], 95)), "cpu_p50_ms": float(np.percentile(millis[:, 1], 50)),
            "recall@10": recall, "load": load}


def print_table(rows: list[dict]) -> None:
    print("| N | method | build s | index MB | RSS rise MB | p50 ms | p95 ms | CPU p50 ms | p50 vs exact fp16 "
          "| recall@10 | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    baseline = {}
    for r in rows:
        baseline.setdefault(r["N"], r["p50_ms"])
        print(f"| {r['N']:,} | {r['method']} | {r['build_s']:.1f} | {r['index_mb']:.0f} | {r['rss_rise_mb']:.0f} | "
              f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['cpu_p50_ms']:.2f} | {r['p50_ms'] / baseline[r['N']]:.3f} | "
              f"{r['recall@10']:.3f} | {r['load']:.1f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100k,1M,4M", help="comma-separated numbers of vectors (k, M suffixes)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100, help="measured single queries per method")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--kinds", default="auto",
                        help="FAISS kinds: 'auto', 'budget:BYTES_PER_VECTOR' or a factory string (+rerank)")
    parser.add_argument("--fp32-max", type=parse_size, default=parse_size("2M"),
                        help="largest N for exact float32 search (it needs a float32 copy: 4M x 512 = 8 GB)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch
    print(f"torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, "
          f"EXACT_MAX_VECTORS {ann.EXACT_MAX_VECTORS}, command: python -m bench.bench_search {' '.join(argv or sys.argv[1:])}")
    rows = []
    for size in args.sizes.split(","):
        rows += bench_size(parse_size(size), args)
        print_table(rows)
        sys.stdout.flush()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of the process: {peak:.2f} GB")


if __name__ == "__main__":
    main()
