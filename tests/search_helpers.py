"""Shared pieces of the search tests: a tiny random model, generated videos, in-process indexing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.video_fixtures import code_frame, write_video

REPO = Path(__file__).resolve().parent.parent

TINY_CLIP = {"embed_dim": 64, "image_resolution": 32, "vision_layers": 1, "vision_width": 64, "vision_patch_size": 16,
             "context_length": 77, "vocab_size": 49408, "transformer_width": 64, "transformer_heads": 1,
             "transformer_layers": 1}
TINY_MODEL = {"clip_config": json.dumps(TINY_CLIP), "sim_header": "seqTransf", "max_frames": 4,
              "cross_num_hidden_layers": 1}
FPS = 8
WINDOW = 2.0  # 4 frames over 2 s: one frame every 0.5 s, windows every 1 s

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 230), "green": (30, 200, 60), "white": (240, 240, 240)}


def segments_frame(segments: list[tuple[str, float]]):
    """A frame function: solid colour segments of the given lengths in seconds, at FPS."""
    bounds = np.cumsum([seconds for _, seconds in segments])

    def fn(index: int, width: int, height: int) -> np.ndarray:
        t = (index + 0.5) / FPS
        colour = segments[min(int(np.searchsorted(bounds, t, side="right")), len(segments) - 1)][0]
        return np.broadcast_to(np.array(COLOURS[colour], np.uint8), (height, width, 3)).copy()

    return fn


def write_segments(path: Path, segments: list[tuple[str, float]]) -> Path:
    frames = round(sum(s for _, s in segments) * FPS)
    return write_video(path, codec="libx264", fps=FPS, width=32, height=32, num_frames=frames,
                       options={"qp": "0"}, frame_fn=segments_frame(segments))


def write_coded(path: Path, seconds: float, width: int = 48, height: int = 32) -> Path:
    """Frames that show their own number (tests.video_fixtures.code_frame)."""
    return write_video(path, codec="libx264", fps=FPS, width=width, height=height, num_frames=round(seconds * FPS),
                       frame_fn=code_frame)


def index_options(roots, index, **overrides):
    from search.indexer import IndexOptions

    values = {"roots": [str(r) for r in roots], "index": str(index), "model": dict(TINY_MODEL), "window": WINDOW,
              "workers": 0, "batch_windows": 4, "progress": False}
    values.update(overrides)
    return IndexOptions(**values)


def run_index(roots, index, **overrides) -> dict:
    from search.indexer import run_index as run

    return run(index_options(roots, index, **overrides))


def snapshot_rows(index_dir) -> dict:
    """(path, start, end) -> float16 vector of every committed window of an index."""
    from search.api import open_index

    index = open_index(index_dir)
    out = {}
    for video in index.videos:
        for row in range(video.first, video.last):
            key = (video.path, round(float(index.starts[row]), 4), round(float(index.ends[row]), 4))
            assert key not in out, f"duplicate window {key}"
            out[key] = index.vectors[row]
    return out


def python_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def index_in_subprocess(roots, index, env_extra=None, timeout=600, **overrides) -> subprocess.CompletedProcess:
    """Run indexing in a child process (so it can be killed at a failure point)."""
    options = index_options(roots, index, **overrides)
    code = ("import json, sys; from search.indexer import IndexOptions, run_index; "
            f"s = run_index(IndexOptions(**json.loads({json.dumps(json.dumps(options.__dict__))}))); "
            "print(json.dumps(s))")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=python_env(**(env_extra or {})),
                          capture_output=True, text=True, timeout=timeout)
