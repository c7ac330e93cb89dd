"""`python -m search index`: find video files, cut them into windows, encode, commit.

One run (one process, or every rank of ``torchrun``):

1. rank 0, holding the index's writer lock: record or check the model and the windows, walk
   the folders, forget deleted files, remove unused shards, and list the files to encode
   (new, changed, never finished); the list goes to every rank, which takes a disjoint share
   (balanced by size);
2. per round of files: DataLoader workers probe and hash them, then decode runs of windows
   (``search.decode``); the main process encodes the windows and keeps each file's vectors
   until all its windows are in;
3. finished files are committed in groups (``IndexStore.commit``: a shard, then one
   transaction), so a kill at any point loses at most the uncommitted files, which the next
   run encodes again; nothing is ever half-recorded.

A file that cannot be read is recorded as bad with the reason; it is retried when it changes
(or with ``retry_bad``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dataloaders.base import VIDEO_EXTENSIONS
from dataloaders.video_reader import FrameSampling
from engine import distributed
from search import decode
from search.models import SearchModel, build_spec, describe, fingerprint, load_model
from search.store import FileRecord, SearchIndexError, IndexStore
from search.windows import WindowPlan, plan_windows

logger = logging.getLogger(__name__)

# Test hook: "STEP" or "STEP:N" kills this process (SIGKILL) the N-th time it reaches STEP.
FAIL_ENV = "SEARCH_INDEX_KILL_AT"
_reached: Counter = Counter()


def failure_point(step: str) -> None:
    wanted = os.environ.get(FAIL_ENV)
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name != step:
        return
    _reached[step] += 1
    if _reached[step] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class IndexOptions:
    roots: list[str]
    index: str
    model: dict = field(default_factory=dict)  # model options (None = not given)
    window: float | None = None
    stride: float | None = None
    workers: int = 2
    batch_windows: int = 16
    round_files: int = 1024
    commit_windows: int = 4096
    commit_seconds: float = 30.0
    device: str | None = None
    retry_bad: bool = False
    progress: bool = True


# ----------------------------------------------------------------------------- finding files


def find_videos(roots: list[str]) -> dict[str, os.stat_result]:
    """Video files (by extension) under the folders, absolute path -> stat; sorted by path."""
    found: dict[str, os.stat_result] = {}
    for root in roots:
        root = os.path.abspath(os.path.expanduser(root))
        if os.path.isfile(root):
            walk = [(os.path.dirname(root), [], [os.path.basename(root)])]
        elif os.path.isdir(root):
            walk = os.walk(root)
        else:
            raise FileNotFoundError(f"no such folder: {root}")
        for folder, subdirs, names in walk:
            subdirs.sort()
            for name in names:
                if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                    path = os.path.join(folder, name)
                    try:
                        found[path] = os.stat(path)
                    except OSError:  # vanished or a dangling link: not a file to index
                        continue
    return dict(sorted(found.items()))


def under_roots(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


@dataclass
class WorkList:
    todo: list[str]
    sizes: list[int]
    unchanged: int
    deleted: int
    skipped_bad: int


def plan_work(store: IndexStore, roots: list[str], retry_bad: bool) -> WorkList:
    """Compare the folders with the manifest: drop deleted files, list what to (re)encode."""
    on_disk = find_videos(roots)
    manifest = store.files()
    deleted = [p for p in manifest if under_roots(p, roots) and p not in on_disk]
    store.drop_files(deleted)
    failure_point("after_drop")
    todo, sizes, unchanged, skipped_bad = [], [], 0, 0
    for path, stat in on_disk.items():
        old = manifest.get(path)
        same = old is not None and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns
        if same and old["status"] == "done":
            unchanged += 1
        elif same and old["status"] == "bad" and not retry_bad:
            skipped_bad += 1
        else:
            todo.append(path)
            sizes.append(stat.st_size)
    return WorkList(todo, sizes, unchanged, len(deleted), skipped_bad)


def share_of(paths: list[str], sizes: list[int], rank: int, world: int) -> list[str]:
    """This rank's files: largest first to the least loaded rank (deterministic), in path order."""
    load = [0] * world
    mine = []
    for i in sorted(range(len(paths)), key=lambda i: (-sizes[i], paths[i])):
        r = min(range(world), key=lambda k: (load[k], k))
        load[r] += sizes[i] + 1
        if r == rank:
            mine.append(paths[i])
    return sorted(mine)


# ----------------------------------------------------------------------------- set-up (rank 0)


MODEL_GIVEN_KEYS = ("pretrained_clip_name", "clip_config", "init_model", "clip_evl", "pretrained_path", "sim_header")


def resolve_model_and_plan(store: IndexStore, opts: IndexOptions) -> tuple[dict, WindowPlan]:
    """The spec and windows of this run; an existing index keeps its own when none are given,
    and refuses a different model or different windows."""
    stored_spec, stored_plan = store.get_meta("model_spec"), store.get_meta("plan")
    given = any(opts.model.get(k) not in (None, False) for k in MODEL_GIVEN_KEYS)
    spec = build_spec(opts.model) if given or stored_spec is None else stored_spec
    max_frames = int(spec["max_frames"])
    stored_plan_ = stored_plan or {}
    if opts.window:
        window, stride = opts.window, opts.stride
    else:
        window = stored_plan_.get("window") or max_frames / float(spec["feature_framerate"])
        stride = opts.stride or stored_plan_.get("stride")
    plan = WindowPlan.create(max_frames, window, stride)
    new_print = fingerprint(spec)
    old_print = store.get_meta("model_fingerprint") if store.files() else None  # an empty index takes any model
    if old_print is not None and old_print != new_print:
        raise SearchIndexError(
            f"{store.root} was built with another model:\n  index: {store.get_meta('model_description')} "
            f"(fingerprint {old_print})\n  this run: {describe(spec)} (fingerprint {new_print})\n"
            f"Vectors of different models cannot be compared: use a new --index folder for this model.")
    if old_print is not None and stored_plan is not None and stored_plan != plan.to_dict():
        raise SearchIndexError(
            f"{store.root} holds windows of {stored_plan['window']:g} s every {stored_plan['stride']:g} s "
            f"({stored_plan['max_frames']} frames); this run asks for {plan.window:g} s every {plan.stride:g} s "
            f"({plan.max_frames} frames). Use the same --window/--stride, or a new --index folder.")
    roots = sorted(set(store.get_meta("roots") or []) | {os.path.abspath(os.path.expanduser(r)) for r in opts.roots})
    store.set_meta(model_spec=spec, model_fingerprint=new_print, model_description=describe(spec),
                   plan=plan.to_dict(), roots=roots)
    return spec, plan


def prepare(opts: IndexOptions) -> dict:
    """Rank 0's set-up; returns what every rank needs (or the error that stops them all)."""
    store = IndexStore(opts.index, create=True)
    try:
        spec, plan = resolve_model_and_plan(store, opts)
        roots = [os.path.abspath(os.path.expanduser(r)) for r in opts.roots]
        work = plan_work(store, roots, opts.retry_bad)
        store.remove_unused_shards()
        return {"spec": spec, "plan": plan.to_dict(), "work": work, "error": None}
    except (SearchIndexError, ValueError, FileNotFoundError) as err:
        return {"error": str(err)}
    finally:
        store.close()


# ----------------------------------------------------------------------------- encoding


@dataclass
class Progress:
    files_done: int = 0
    touched: int = 0
    windows: int = 0
    decode_s: float = 0.0
    model_s: float = 0.0
    bad: list = field(default_factory=list)


class Committer:
    """Collects finished files and commits them in groups (by window count or age)."""

    def __init__(self, store: IndexStore, commit_windows: int, commit_seconds: float):
        self.store, self.commit_windows, self.commit_seconds = store, commit_windows, commit_seconds
        self.pending: list[FileRecord] = []
        self.last = time.monotonic()

    def add(self, record: FileRecord) -> None:
        self.pending.append(record)
        failure_point("after_encode")
        windows = sum(len(r.windows) for r in self.pending)
        if windows >= self.commit_windows or time.monotonic() - self.last >= self.commit_seconds:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.store.commit(self.pending, before_transaction=lambda: failure_point("after_shard_write"))
            failure_point("after_commit")
            self.pending = []
        self.last = time.monotonic()


def _loader(dataset, workers: int) -> DataLoader:
    workers = min(workers, len(dataset))
    return DataLoader(dataset, batch_size=None, num_workers=workers,
                      multiprocessing_context=distributed.worker_context(workers),
                      prefetch_factor=2 if workers else None)


class _FileBuffer:
    def __init__(self, probe: dict, windows: list, runs: int):
        self.probe, self.windows, self.runs_left = probe, windows, runs
        self.vectors: list[np.ndarray] = []
        self.error: str | None = None


def _record(probe: dict, status: str, error: str | None = None, duration=None, windows=(), vectors=None) -> FileRecord:
    return FileRecord(path=probe["path"], size=probe.get("size"), mtime_ns=probe.get("mtime_ns"),
                      sha256=probe.get("sha256"), status=status, error=error, duration=duration,
                      windows=list(windows), vectors=vectors)


def encode_round(paths: list[str], manifest: dict, model: SearchModel, sampling: FrameSampling, plan: WindowPlan,
                 opts: IndexOptions, committer: Committer, progress: Progress, bar) -> None:
    buffers: dict[int, _FileBuffer] = {}
    runs: list[decode.Run] = []
    for probe in decode.probe_files(paths, max(1, opts.workers)):
        old = manifest.get(probe["path"])
        if probe["error"] is not None:
            progress.bad.append((probe["path"], probe["error"]))
            committer.add(_record(probe, "bad", probe["error"]))
            bar.update(1)
        elif old is not None and old["status"] == "done" and old["sha256"] == probe["sha256"]:
            committer.store.update_stat(probe["path"], probe["size"], probe["mtime_ns"])
            progress.touched += 1
            bar.update(1)
        else:
            info = decode.VideoInfo(probe["num_frames"], probe["fps"])
            windows = plan_windows(info.duration, plan)
            file_runs = decode.split_runs(windows, sampling, info, opts.batch_windows)
            buffers[probe["index"]] = _FileBuffer(probe, windows, len(file_runs))
            runs += [decode.Run(probe["index"], probe["path"], run, info) for run in file_runs]
    for item in _loader(decode.ChunkDataset(runs, sampling), opts.workers):
        buffer = buffers[item["file_no"]]
        progress.decode_s += item["decode_s"]
        if item["error"] is not None:
            buffer.error = buffer.error or item["error"]
        elif buffer.error is None:
            start = time.perf_counter()
            video, mask = decode.assemble_windows(item["frames"], item["index"])
            buffer.vectors.append(model.encode_windows(video, mask))
            progress.model_s += time.perf_counter() - start
        buffer.runs_left -= 1
        if buffer.runs_left == 0:
            _finish(buffers.pop(item["file_no"]), committer, progress, bar)


def _finish(buffer: _FileBuffer, committer: Committer, progress: Progress, bar) -> None:
    probe = buffer.probe
    if buffer.error is not None:
        progress.bad.append((probe["path"], buffer.error))
        committer.add(_record(probe, "bad", buffer.error))
    else:
        vectors = np.concatenate(buffer.vectors)
        duration = probe["num_frames"] / probe["fps"]
        committer.add(_record(probe, "done", duration=duration, windows=buffer.windows, vectors=vectors))
        progress.files_done += 1
        progress.windows += len(buffer.windows)
    bar.update(1)
    bar.set_postfix(windows=progress.windows, bad=len(progress.bad), refresh=False)


def encode_files(paths: list[str], spec: dict, plan: WindowPlan, opts: IndexOptions, info) -> Progress:
    progress = Progress()
    store = IndexStore(opts.index)
    try:
        model = load_model(spec, info.device)
        grid = "segments" if spec["model"]["internvideo"] is not None else "framerate"  # as the entry point samples
        sampling = FrameSampling(max_frames=plan.max_frames, feature_framerate=plan.frame_rate,
                                 image_resolution=model.image_resolution, grid=grid)
        manifest = store.files()
        committer = Committer(store, opts.commit_windows, opts.commit_seconds)
        with tqdm(total=len(paths), unit="video", desc="indexing", disable=not (opts.progress and info.is_main),
                  dynamic_ncols=True) as bar:
            for start in range(0, len(paths), opts.round_files):
                encode_round(paths[start:start + opts.round_files], manifest, model, sampling, plan, opts,
                             committer, progress, bar)
        committer.flush()
    finally:
        store.close()
    return progress


# ----------------------------------------------------------------------------- the command


def _broadcast(payload: dict | None, info) -> dict:
    if not info.enabled:
        return payload
    box = [payload]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _gather(progress: Progress, info) -> list[Progress]:
    if not info.enabled:
        return [progress]
    out = [None] * info.world_size
    torch.distributed.all_gather_object(out, progress)
    return out


def run_index(opts: IndexOptions) -> dict:
    """Index the folders; returns the summary (the same on every rank)."""
    info = distributed.init_distributed(opts.device)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if info.is_main:  # the writer lock, held by rank 0 for the whole job
            lock_store = IndexStore(opts.index, create=True)
            stack.callback(lock_store.close)
            stack.enter_context(lock_store.writer_lock())
        payload = _broadcast(prepare(opts) if info.is_main else None, info)
        if payload["error"]:
            raise SearchIndexError(payload["error"])
        work, plan = payload["work"], WindowPlan(**payload["plan"])
        mine = share_of(work.todo, work.sizes, info.rank, info.world_size)
        progress = encode_files(mine, payload["spec"], plan, opts, info)
        everyone = _gather(progress, info)
        distributed.barrier()
    return summarize(everyone, work, payload["spec"], plan, time.perf_counter() - started, opts.index)


def summarize(parts: list[Progress], work, spec: dict, plan: WindowPlan, seconds: float, index: str) -> dict:
    files = sum(p.files_done for p in parts)
    windows = sum(p.windows for p in parts)
    bad = sorted(b for p in parts for b in p.bad)
    return {
        "index": str(Path(index).expanduser().resolve()), "model": describe(spec),
        "window": plan.window, "stride": plan.stride, "max_frames": plan.max_frames,
        "encoded_files": files, "encoded_windows": windows, "touched_files": sum(p.touched for p in parts),
        "unchanged_files": work.unchanged, "deleted_files": work.deleted, "skipped_bad_files": work.skipped_bad,
        "bad_files": [{"path": p, "error": e} for p, e in bad],
        "seconds": seconds, "videos_per_s": files / seconds if seconds > 0 else 0.0,
        "windows_per_s": windows / seconds if seconds > 0 else 0.0,
        "decode_s": sum(p.decode_s for p in parts), "model_s": sum(p.model_s for p in parts),
    }


def format_summary(s: dict) -> str:
    lines = [
        f"index {s['index']}: {s['model']}; windows {s['window']:g} s every {s['stride']:g} s",
        f"encoded {s['encoded_files']} files ({s['encoded_windows']} windows) in {s['seconds']:.1f} s: "
        f"{s['videos_per_s']:.2f} videos/s, {s['windows_per_s']:.1f} windows/s "
        f"(decoding {s['decode_s']:.1f} s in workers, model {s['model_s']:.1f} s)",
        f"unchanged {s['unchanged_files']}, touched {s['touched_files']}, deleted {s['deleted_files']}, "
        f"bad skipped (unchanged) {s['skipped_bad_files']}",
    ]
    if s["bad_files"]:
        lines.append(f"{len(s['bad_files'])} bad files (not indexed):")
        lines += [f"  {b['path']}: {b['error']}" for b in s["bad_files"]]
    return "\n".join(lines)
