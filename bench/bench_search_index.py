"""Indexing throughput of ``python -m search index`` on CPU, split between decoding and the model.

    python -m bench.bench_search_index [--videos 6] [--seconds 30] [--model vitb32|tiny]

Videos: ``--videos`` H.264 files of ``--seconds`` s, 640x360 at 25 fps (a gradient with a
moving square; libx264 defaults). Windows: 12 frames over 4 s every 2 s. Model: a random CLIP
with ViT-B/32's shapes at 224 px and meanP (``vitb32``; the compute of the released model), or
the synthetic demo's 32 px CLIP (``tiny``: decoding dominates).

Measured in this one process:

1. decoding the windows of every video, DataLoader-free: the baseline reads each window on
   its own with ``read_clip`` (what a simple script does); ours decodes runs of windows once
   (``search.decode.decode_run``). Windows per second and the ratio to the baseline;
2. ``run_index`` with 0 workers (decoding and model in turn: their split) and with
   ``--workers`` workers (decoding overlaps the model): videos/s and windows/s, wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

VITB32 = {"embed_dim": 512, "image_resolution": 224, "vision_layers": 12, "vision_width": 768, "vision_patch_size": 32,
          "context_length": 77, "vocab_size": 49408, "transformer_width": 512, "transformer_heads": 8,
          "transformer_layers": 12}
TINY = {"embed_dim": 128, "image_resolution": 32, "vision_layers": 3, "vision_width": 128, "vision_patch_size": 32,
        "context_length": 77, "vocab_size": 49408, "transformer_width": 128, "transformer_heads": 2,
        "transformer_layers": 3}
MAX_FRAMES, WINDOW = 12, 4.0


def write_videos(folder: Path, count: int, seconds: float, fps: int = 25, width: int = 640, height: int = 360) -> list[Path]:
    import av

    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    paths = []
    for n in range(count):
        path = folder / f"video_{n:02d}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(int(seconds * fps)):
                frame = np.broadcast_to((ramp + 7 * n + i) % 256, (height, width, 3)).astype(np.uint8)
                x = (i * 9) % (width - 60)
                frame[100:160, x:x + 60] = (255, 40 * n % 256, 0)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths


def decode_comparison(paths: list[Path], image_resolution: int) -> dict:
    from dataloaders.video_reader import FrameSampling, read_clip
    from search.decode import decode_run, probe_video, split_runs
    from search.windows import WindowPlan, plan_windows

    plan = WindowPlan.create(MAX_FRAMES, WINDOW)
    sampling = FrameSampling(max_frames=MAX_FRAMES, feature_framerate=plan.frame_rate, image_resolution=image_resolution)
    jobs = [(str(p), probe_video(p)) for p in paths]
    windows = {path: plan_windows(info.duration, plan) for path, info in jobs}
    count = sum(len(w) for w in windows.values())
    start = time.perf_counter()
    for path, _ in jobs:
        for s, e in windows[path]:
            read_clip(path, s, e, sampling)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    for path, info in jobs:
        for run in split_runs(windows[path], sampling, info, max_windows=16):
            decode_run(path, run, info, sampling)
    ours = time.perf_counter() - start
    return {"windows": count, "baseline_s": baseline, "ours_s": ours}


def index_run(folder: Path, index: Path, clip_config: dict, workers: int) -> dict:
    from search.indexer import IndexOptions, run_index

    model = {"clip_config": json.dumps(clip_config), "sim_header": "meanP", "max_frames": MAX_FRAMES}
    return run_index(IndexOptions(roots=[str(folder)], index=str(index), model=model, window=WINDOW,
                                  workers=workers, progress=False))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--model", choices=["vitb32", "tiny"], default="vitb32")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    config = VITB32 if args.model == "vitb32" else TINY
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        paths = write_videos(folder, args.videos, args.seconds)
        decode = decode_comparison(paths, config["image_resolution"])
        runs = {w: index_run(folder, Path(tmp) / f"index{w}", config, w) for w in (0, args.workers)}
    print(f"{args.videos} videos x {args.seconds:g} s (640x360, 25 fps H.264); {MAX_FRAMES} frames per {WINDOW:g} s "
          f"window, stride {WINDOW / 2:g} s; model {args.model} meanP; torch threads {torch.get_num_threads()}; "
          f"load {os.getloadavg()[0]:.1f}")
    print()
    print("| decoding windows (one process, no loader) | windows/s | ratio |")
    print("|---|---|---|")
    base = decode["windows"] / decode["baseline_s"]
    print(f"| baseline: read_clip per window | {base:.1f} | 1.00 |")
    print(f"| ours: runs of windows decoded once | {decode['windows'] / decode['ours_s']:.1f} | "
          f"{decode['baseline_s'] / decode['ours_s']:.2f} |")
    print()
    print("| run_index | wall s | videos/s | windows/s | decode s (workers) | model s |")
    print("|---|---|---|---|---|---|")
    for workers, s in runs.items():
        print(f"| {workers} workers | {s['seconds']:.1f} | {s['videos_per_s']:.2f} | {s['windows_per_s']:.1f} | "
              f"{s['decode_s']:.1f} | {s['model_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
