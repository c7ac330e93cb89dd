"""Long synthetic videos for moment retrieval: segment boundaries match the frames exactly."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from synthetic.generate import SyntheticConfig, decode_mp4, encode_mp4, render_clip
from synthetic.long_videos import GROUND_TRUTH_FILE, long_video_specs, write_long_videos

CONFIG = SyntheticConfig(size=32, fps=4, event_frames=3)  # 6 frames = 1.5 s per clip


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("long")
    return out, write_long_videos(out, n_videos=2, clips_per_video=3, seed=5, config=CONFIG)


def test_ground_truth_file_and_return_value_agree(written):
    out, videos = written
    truth = json.loads((out / GROUND_TRUTH_FILE).read_text())
    assert truth["config"]["seed"] == 5 and truth["config"]["fps"] == 4
    assert [v["path"] for v in truth["videos"]] == ["long0.mp4", "long1.mp4"]
    for saved, video in zip(truth["videos"], videos, strict=True):
        assert (out / saved["path"]).resolve() == Path(video["path"]) and saved["segments"] == video["segments"]
    segments = videos[0]["segments"]
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5)]
    assert videos[0]["duration"] == 4.5
    captions = [s["caption"] for v in videos for s in v["segments"]]
    assert len(set(captions)) == len(captions) == 6


def test_segments_hold_their_clips_frames(written):
    out, videos = written
    specs = long_video_specs(2, 3, seed=5)
    for video, clips in zip(videos, specs, strict=True):
        with av.open(video["path"]) as container:
            decoded = list(container.decode(video=0))
        frames = np.stack([f.to_ndarray(format="rgb24") for f in decoded])
        times = [float(f.time) for f in decoded]
        assert len(frames) == 3 * CONFIG.num_frames
        for segment, spec in zip(video["segments"], clips, strict=True):
            first = times.index(segment["start"])  # a frame starts exactly at the boundary
            inside = [i for i, t in enumerate(times) if segment["start"] <= t < segment["end"]]
            assert inside == list(range(first, first + CONFIG.num_frames))
            # the same clip encoded alone decodes to the same frames (lossless, frame by frame)
            alone = out / "alone.mp4"
            alone.write_bytes(encode_mp4(render_clip(spec, CONFIG.size, CONFIG.event_frames), CONFIG.fps))
            assert np.array_equal(frames[inside], decode_mp4(alone))


def test_same_seed_same_specs_and_bad_sizes():
    assert long_video_specs(2, 3, seed=5) == long_video_specs(2, 3, seed=5)
    assert long_video_specs(2, 3, seed=5) != long_video_specs(2, 3, seed=6)
    with pytest.raises(ValueError, match="at least one"):
        long_video_specs(0, 3, seed=0)
