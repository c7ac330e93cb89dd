"""Long synthetic videos for moment retrieval: clips of the synthetic benchmark's test split,
played one after the other, with the time range of every clip.

Stop-gap until the synthetic generator has its own ``write_long_videos`` (arch-data); then
this module shrinks to a call of it.

The test split comes in triplets (base, direction twin, order twin); the three members of a
triplet always go to three different long videos, so a model that cannot tell twins apart
(meanP) cannot tell those videos apart either. Every frame is rendered again from the clip's
spec in ``synthetic_meta.json`` (``render_clip``) and encoded losslessly (``encode_mp4``), so a
clip inside a long video has exactly the frames of its own file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dataloaders.synthetic import ClipSpec, Event, encode_mp4, load_meta, render_clip

LONG_META = "long_videos.json"


def _spec(video: dict) -> ClipSpec:
    return ClipSpec(events=tuple(Event(**e) for e in video["events"]), background=int(video["background"]),
                    template=int(video["template"]))


def arrange(test_videos: list[dict], clips_per_video: int, seed: int) -> list[list[dict]]:
    """Test clips grouped into long videos: bases first, then direction twins, then order
    twins, cut into runs of ``clips_per_video`` (so a triplet's members land in different
    videos when ``clips_per_video`` <= the number of triplets), each run shuffled."""
    by_role = {role: [v for v in test_videos if v["role"] == role] for role in ("base", "direction_twin", "order_twin")}
    ordered = by_role["base"] + by_role["direction_twin"] + by_role["order_twin"]
    if clips_per_video > len(by_role["base"]):
        raise ValueError(f"clips_per_video {clips_per_video} > {len(by_role['base'])} triplets: twins would share a video")
    rng = np.random.default_rng(seed)
    groups = [ordered[i:i + clips_per_video] for i in range(0, len(ordered), clips_per_video)]
    return [[group[j] for j in rng.permutation(len(group))] for group in groups]


def write_long_videos(data_dir: str | os.PathLike, out_dir: str | os.PathLike, clips_per_video: int = 10,
                      seed: int = 0) -> dict:
    """Write ``out_dir/videos/long_NNN.mp4`` and ``out_dir/long_videos.json`` (per video: file,
    duration, clips with video_id, caption, role, start, end); returns that description."""
    meta = load_meta(data_dir)
    config = meta["config"]
    fps, event_frames, size = int(config["fps"]), int(config["event_frames"]), int(config["size"])
    clip_seconds = 2 * event_frames / fps
    test = [v for v in meta["videos"] if v["split"] == "test"]
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    described = []
    for n, clips in enumerate(arrange(test, clips_per_video, seed)):
        frames = np.concatenate([render_clip(_spec(c), size, event_frames) for c in clips])
        path = out / "videos" / f"long_{n:03d}.mp4"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(encode_mp4(frames, fps))
        os.replace(tmp, path)
        described.append({
            "file": str(path.resolve()), "duration": len(clips) * clip_seconds,
            "clips": [{"video_id": c["video_id"], "caption": c["caption"], "role": c["role"],
                       "start": i * clip_seconds, "end": (i + 1) * clip_seconds} for i, c in enumerate(clips)],
        })
    description = {"source": str(Path(data_dir).resolve()), "fps": fps, "clip_seconds": clip_seconds,
                   "clips_per_video": clips_per_video, "seed": seed, "videos": described}
    (out / LONG_META).write_text(json.dumps(description, indent=1))
    return description
