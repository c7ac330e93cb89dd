"""Generated clips for the end-to-end evaluation, in MSR-VTT's file format, made in parallel
and cached.

Each clip is bench/bench_video.py's synthetic footage (pans over textured scenes, a moving
box, a cut every 3-8 s: real decoding work, unlike flat shapes) at `size` x `size` and `fps`
frames a second, in H.264 (libx264, crf 23, yuv420p) like CLIP4Clip's compressed MSR-VTT
videos. Captions come from the synthetic benchmark's sampler (their words do not matter
here). Written: `MSRVTT_data.json`, `test.csv` (JSFusion columns key,vid_key,video_id,
sentence; one caption per clip) and `videos/<id>.mp4`. A folder per configuration; `complete.json` is
written last, so an interrupted generation is redone, never half-used.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.bench_video import make_clip
from synthetic.generate import sample_spec

COMPLETE = "complete.json"


@dataclass(frozen=True)
class ClipSet:
    count: int = 1000
    size: int = 224
    seconds: int = 10
    fps: int = 3
    seed: int = 0

    @property
    def folder_name(self) -> str:
        return f"clips_{self.count}x{self.size}px_{self.seconds}s_{self.fps}fps_seed{self.seed}"


def _write_chunk(job: tuple[str, ClipSet, int, int]) -> int:
    """Worker: render, encode and write clips [start, stop) (each from its own seed)."""
    folder, clipset, start, stop = job
    for index in range(start, stop):
        make_clip(Path(folder, f"video{index}.mp4"), clipset.seconds, seed=clipset.seed * 1_000_003 + index,
                  width=clipset.size, height=clipset.size, fps=clipset.fps)
    return stop - start


def _write_annotations(out: Path, clipset: ClipSet) -> None:
    captions = [sample_spec(np.random.default_rng((clipset.seed, i))).caption() for i in range(clipset.count)]
    videos = [{"video_id": f"video{i}", "category": 0, "url": "generated", "start time": 0.0,
               "end time": float(clipset.seconds), "split": "test", "id": i} for i in range(clipset.count)]
    sentences = [{"caption": c, "video_id": f"video{i}", "sen_id": i} for i, c in enumerate(captions)]
    (out / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["key", "vid_key", "video_id", "sentence"])
    writer.writerows([f"ret{i}", f"msr{i}", f"video{i}", c] for i, c in enumerate(captions))
    (out / "test.csv").write_text(buffer.getvalue())


def ensure_clips(root: Path, clipset: ClipSet, workers: int) -> tuple[Path, float | None]:
    """The clip folder (made if missing) and the seconds generation took (None: cached)."""
    out = root / clipset.folder_name
    if (out / COMPLETE).is_file():
        return out, None
    started = time.perf_counter()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    _write_annotations(out, clipset)
    chunk = max(1, -(-clipset.count // (4 * workers)))
    jobs = [(str(out / "videos"), clipset, s, min(s + chunk, clipset.count)) for s in range(0, clipset.count, chunk)]
    if workers <= 1:
        written = sum(map(_write_chunk, jobs))
    else:
        # spawn: a process forked after PyAV ran in its parent can hang in swscale, and the
        # forkserver is left to the DataLoaders (it preloads torch for them)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            written = sum(pool.map(_write_chunk, jobs))
    seconds = time.perf_counter() - started
    (out / COMPLETE).write_text(json.dumps({**asdict(clipset), "written": written, "seconds": round(seconds, 1),
                                            "workers": workers, "pid": os.getpid()}))
    return out, seconds


def loader_args(folder: Path) -> list[str]:
    """`main_task_retrieval.py` arguments that evaluate on the clip folder (MSR-VTT loader)."""
    return ["--datatype", "msrvtt", "--data_path", str(folder / "MSRVTT_data.json"),
            "--val_csv", str(folder / "test.csv"), "--features_path", str(folder / "videos")]
