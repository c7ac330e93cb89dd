"""What the CLI and the web page call: a read-only view of an index's last committed state.

    index = open_index("my_index")
    for hit in index.query("a red circle moves left", top=5):
        print(hit["path"], hit["ranges"])

A query is encoded with the index's own model (rebuilt from the spec it stores, checked
against its fingerprint), scored against every window (exact search; FAISS above
``search.ann.EXACT_MAX_VECTORS`` windows unless ``exact=True``), grouped by video, and each
video's hit windows (``search.windows.select_hits``) are merged into time ranges.
"""

from __future__ import annotations

import logging
import os
import pathlib
import threading
from dataclasses import dataclass

import numpy as np

from search import ann
from search.store import SearchIndexError, IndexStore
from search.windows import merge_ranges, select_hits

logger = logging.getLogger(__name__)

_OPEN_ATTEMPTS = 3


@dataclass
class _Video:
    video_id: str
    path: str
    duration: float
    first: int  # rows first:last of the window matrix
    last: int


def open_index(path: str | os.PathLike, device: str | None = None) -> SearchIndex:
    """The last committed state of the index at ``path`` (a query during indexing is fine)."""
    store = IndexStore(path)
    try:
        for attempt in range(_OPEN_ATTEMPTS):
            snapshot = store.snapshot()
            try:
                vectors = _load_vectors(store, snapshot["windows"])
                break
            except FileNotFoundError:  # a shard removed by an indexing run after our snapshot
                if attempt == _OPEN_ATTEMPTS - 1:
                    raise
        return SearchIndex(store.root, snapshot, vectors, device)
    finally:
        store.close()


def _load_vectors(store: IndexStore, windows: list) -> np.ndarray:
    if not windows:
        return np.zeros((0, 0), np.float16)
    names = sorted({w[2] for w in windows})
    shards = {name: np.load(store.shard_path(name), mmap_mode="r") for name in names}
    dim = next(iter(shards.values())).shape[1]
    out = np.empty((len(windows), dim), np.float16)
    by_shard: dict[str, tuple[list, list]] = {}
    for i, (_, _, name, row, _, _) in enumerate(windows):
        dest, rows = by_shard.setdefault(name, ([], []))
        dest.append(i)
        rows.append(row)
    for name, (dest, rows) in by_shard.items():
        out[dest] = shards[name][rows]
    return out


class SearchIndex:
    def __init__(self, root: pathlib.Path, snapshot: dict, vectors: np.ndarray, device: str | None = None):
        self.root = root
        self.meta = snapshot["meta"]
        self.files = snapshot["files"]
        self.vectors = vectors
        windows = snapshot["windows"]
        self.window_ids = np.array([w[0] for w in windows], np.int64)
        self.starts = np.array([w[4] for w in windows], np.float64)
        self.ends = np.array([w[5] for w in windows], np.float64)
        self._row_of_window = {int(w): i for i, w in enumerate(self.window_ids)}
        by_id = {f["video_id"]: f for f in self.files}
        self.videos: list[_Video] = []
        self.row_video = np.zeros(len(windows), np.int64)
        for i, w in enumerate(windows):
            if not self.videos or self.videos[-1].video_id != w[1]:
                f = by_id[w[1]]
                self.videos.append(_Video(w[1], f["path"], float(f["duration"] or 0.0), i, i))
            self.videos[-1].last = i + 1
            self.row_video[i] = len(self.videos) - 1
        self._video_by_id = {v.video_id: v for v in self.videos}
        self._device = device
        self._model = None
        self._ann = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.window_ids)

    # ------------------------------------------------------------------ model
    @property
    def model(self):
        """The index's model, built on first use and checked against the recorded fingerprint."""
        with self._lock:
            if self._model is None:
                from search.models import fingerprint, load_model

                spec = self.meta.get("model_spec")
                if spec is None:
                    raise SearchIndexError(f"{self.root}: the index records no model (was it ever built?)")
                recorded, now = self.meta.get("model_fingerprint"), fingerprint(spec)
                if recorded != now:
                    raise SearchIndexError(f"{self.root}: the model files changed since the index was built "
                                      f"(fingerprint {recorded}, now {now}); rebuild the index")
                self._model = load_model(spec, self._device)
            return self._model

    def embed_text(self, text: str) -> np.ndarray:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the query text is empty")
        return self.model.encode_text(text)

    # ------------------------------------------------------------------ search
    def query(self, text: str, top: int = 10, per_video: int = 3, exact: bool = False,
              timeline: bool = False) -> list[dict]:
        """Videos best first, each with its best merged time ranges (see CONTRACTS.md)."""
        return self.search_vector(self.embed_text(text), top, per_video, exact, timeline)

    def query_by_window(self, window_id: int, top: int = 10, per_video: int = 3, exact: bool = False,
                        timeline: bool = False) -> list[dict]:
        """Videos whose windows look like window ``window_id`` (itself included)."""
        row = self._row_of_window.get(int(window_id))
        if row is None:
            raise KeyError(f"window {window_id} is not in the index {self.root}")
        return self.search_vector(self.vectors[row].astype(np.float32), top, per_video, exact, timeline)

    def search_vector(self, query: np.ndarray, top: int = 10, per_video: int = 3, exact: bool = False,
                      timeline: bool = False) -> list[dict]:
        if top < 1 or per_video < 1:
            raise ValueError(f"top and per_video must be >= 1, got {top} and {per_video}")
        if len(self) == 0:
            return []
        query = np.asarray(query, np.float32).reshape(-1)
        results = [self._video_result(self.videos[v], query, per_video, timeline)
                   for v in self._candidate_videos(query, top, exact)]
        results.sort(key=lambda r: (-r["score"], r["path"]))
        for rank, result in enumerate(results[:top], 1):
            result["rank"] = rank
        return results[:top]

    def _nearest(self, query: np.ndarray, k: int, exact: bool) -> np.ndarray:
        if not exact and len(self) > ann.EXACT_MAX_VECTORS and hasattr(ann, "AnnIndex"):
            _, ids = self._ann_index().search(query[None], k)
        else:
            _, ids = ann.exact_search(self.vectors, query[None], k)
        return ids[0]

    def _candidate_videos(self, query: np.ndarray, top: int, exact: bool) -> list[int]:
        """The videos of the best windows, enough of them for ``top`` results (exactly re-scored
        after). An approximate index that finds too few videos even when asked for every
        window (IVF lists it did not probe) is backed up by exact search."""
        k = min(len(self), max(64, 4 * top))
        while True:
            ids = self._nearest(query, k, exact)
            videos = list(dict.fromkeys(int(v) for v in self.row_video[ids[ids >= 0]]))
            if len(videos) >= top or (k >= len(self) and exact):
                return videos[: 2 * top]
            if k >= len(self):
                exact = True
            k = min(len(self), k * 4)

    def _ann_index(self):
        with self._lock:
            if self._ann is None:
                self._ann = self._load_or_build_ann()
            return self._ann

    def _load_or_build_ann(self):
        path = self.root / "ann" / f"generation-{self.meta.get('generation', 0)}.faiss"
        if path.is_file():
            return ann.AnnIndex.load(path)
        index = ann.AnnIndex.build(self.vectors)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        index.save(tmp)
        os.replace(tmp, path)
        for old in path.parent.glob("generation-*.faiss"):  # built for states the index has left
            if old != path:
                old.unlink(missing_ok=True)
        return index

    def _video_result(self, video: _Video, query: np.ndarray, per_video: int, timeline: bool) -> dict:
        rows = slice(video.first, video.last)
        scores = self.vectors[rows].astype(np.float32) @ query
        starts, ends = self.starts[rows], self.ends[rows]
        ranges = merge_ranges(starts, ends, scores, select_hits(scores))[:per_video]
        for r in ranges:
            r["window_id"] = int(self.window_ids[video.first + r["window_id"]])
        result = {"rank": 0, "video_id": video.video_id, "path": video.path, "duration": video.duration,
                  "score": ranges[0]["score"], "ranges": ranges}
        if timeline:
            result["timeline"] = [{"start": float(s), "end": float(e), "score": float(c)}
                                  for s, e, c in zip(starts, ends, scores, strict=True)]
        return result

    # ------------------------------------------------------------------ files and status
    def video_file(self, video_id: str) -> pathlib.Path:
        """The file of a video in the index; KeyError for anything the index does not hold."""
        video = self._video_by_id.get(video_id)
        if video is None:
            raise KeyError(f"no video {video_id!r} in the index {self.root}")
        return pathlib.Path(video.path)

    def status(self) -> dict:
        from search.status import index_status

        return index_status(self)
