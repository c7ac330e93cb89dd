"""Long videos made of several synthetic clips, with exact segment boundaries: ground truth
for moment retrieval (find *when* in a long video a caption happens).

    python -m synthetic.long_videos --out data/synthetic_long --videos 4 --clips 6

Video ``long<i>.mp4`` plays ``clips_per_video`` clips of :mod:`synthetic.generate` one after
the other (same rendering and lossless encoding); clip k fills frames
``[k * F, (k + 1) * F)`` with F = ``config.num_frames``, i.e. seconds
``[k * F / fps, (k + 1) * F / fps)``. Every clip in the set has a distinct content (colour,
shape, direction and order of both events), so each caption matches exactly one segment.

``long_videos.json`` beside the videos holds ``config`` and ``videos``: per video its
``video_id``, ``path`` (relative to the JSON's folder), ``duration`` and ``segments``
(``start``, ``end`` in seconds, ``caption``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from synthetic.generate import ClipSpec, SyntheticConfig, encode_mp4, render_clip, sample_group

logger = logging.getLogger(__name__)

GROUND_TRUTH_FILE = "long_videos.json"


def long_video_specs(n_videos: int, clips_per_video: int, seed: int) -> list[list[ClipSpec]]:
    """The clips of every long video, all with distinct contents (deterministic in ``seed``)."""
    if n_videos < 1 or clips_per_video < 1:
        raise ValueError(f"need at least one video and one clip per video, got {n_videos}, {clips_per_video}")
    rng = np.random.default_rng(seed)
    used: set = set()
    return [[sample_group(rng, used, ())[0][1] for _ in range(clips_per_video)] for _ in range(n_videos)]


def segments_of(specs: Sequence[ClipSpec], config: SyntheticConfig) -> list[dict]:
    seconds = config.num_frames / config.fps
    return [{"start": round(k * seconds, 6), "end": round((k + 1) * seconds, 6), "caption": spec.caption()}
            for k, spec in enumerate(specs)]


def write_long_videos(out_dir: str | os.PathLike, n_videos: int, clips_per_video: int, seed: int = 0,
                      config: SyntheticConfig | None = None) -> list[dict]:
    """Write ``long<i>.mp4`` and ``long_videos.json`` under ``out_dir``.

    ``config`` gives the frame size, fps and frames per event (its seed is replaced by
    ``seed``; its counts of train and test clips are not used). Returns one dict per video: ``video_id``, ``path`` (absolute),
    ``duration`` and ``segments`` (``start``, ``end`` in seconds, ``caption``).
    """
    config = replace(config or SyntheticConfig(), seed=seed)
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos = []
    for i, specs in enumerate(long_video_specs(n_videos, clips_per_video, seed)):
        frames = np.concatenate([render_clip(s, config.size, config.event_frames) for s in specs])
        path = out / f"long{i}.mp4"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(encode_mp4(frames, config.fps))
        os.replace(tmp, path)
        videos.append({"video_id": path.stem, "path": str(path.resolve()), "duration": len(frames) / config.fps,
                       "segments": segments_of(specs, config)})
    relative = [{**v, "path": Path(v["path"]).name} for v in videos]
    ground_truth = {"format": "synthetic-long-videos-v1", "config": asdict(config), "videos": relative}
    (out / GROUND_TRUTH_FILE).write_text(json.dumps(ground_truth, indent=1), encoding="utf-8")
    logger.info("wrote %d long videos of %d clips to %s", n_videos, clips_per_video, out)
    return videos


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    defaults = SyntheticConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/synthetic_long", help="output folder")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--clips", type=int, default=6, help="clips per video")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=defaults.size, help="frame side in pixels (even, 32..112)")
    p.add_argument("--fps", type=int, default=defaults.fps)
    p.add_argument("--event_frames", type=int, default=defaults.event_frames, help="frames per event (2 events)")
    args = p.parse_args(argv)
    config = SyntheticConfig(size=args.size, fps=args.fps, event_frames=args.event_frames)
    write_long_videos(args.out, args.videos, args.clips, args.seed, config)


if __name__ == "__main__":
    main()
