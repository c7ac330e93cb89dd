"""Windows of a video, their frames, and merging hit windows into ranges (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataloaders.video_reader import FrameSampling, read_clip
from search.decode import VideoInfo, assemble_windows, decode_run, probe_video, split_runs
from search.windows import WindowPlan, interval_iou, merge_ranges, plan_windows, select_hits
from tests.search_helpers import FPS, write_coded
from tests.video_fixtures import read_code_normalized


def test_plan_windows_short_long_and_last_cut():
    plan = WindowPlan.create(max_frames=4, window=2.0)
    assert plan.stride == 1.0 and plan.frame_rate == 2.0
    assert plan_windows(1.5, plan) == [(0.0, 1.5)]
    assert plan_windows(2.0, plan) == [(0.0, 2.0)]
    assert plan_windows(5.0, plan) == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0)]
    assert plan_windows(5.5, plan)[-1] == (4.0, 5.5)  # the last window is cut at the end
    with pytest.raises(ValueError):
        plan_windows(0.0, plan)


def test_stride_is_rounded_to_whole_frame_periods():
    plan = WindowPlan.create(max_frames=7, window=3.5)  # a frame every 0.5 s; half a window is 1.75 s
    assert plan.stride == 2.0
    assert WindowPlan.create(max_frames=4, window=2.0, stride=0.1).stride == 0.5  # at least one period


def test_merge_overlapping_and_touching_hits_best_first():
    starts = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 9.0])
    ends = starts + 2.0
    scores = np.array([0.1, 0.5, 0.6, 0.2, 0.3, 0.9, 0.1])
    hits = np.array([False, True, True, False, True, True, False])
    ranges = merge_ranges(starts, ends, scores, hits)
    # windows 1-2 overlap; window 4 ends at 7.0 where window 5 starts: touching, merged
    assert [(r["start"], r["end"], r["window_id"]) for r in ranges] == [(5.0, 9.0, 5), (1.0, 4.0, 2)]
    assert ranges[0]["score"] == pytest.approx(0.9)


def test_select_hits_keeps_windows_near_the_best():
    hits = select_hits(np.array([0.0, 0.0, 0.1, 0.9, 1.0, 0.0]))
    assert hits.tolist() == [False, False, False, True, True, False]
    assert select_hits(np.array([0.3])).tolist() == [True]


def test_interval_iou():
    assert interval_iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    assert interval_iou((0, 1), (2, 3)) == 0.0


@pytest.mark.parametrize("grid", ["framerate", "segments"])
def test_window_frames_equal_read_clip(tmp_path, grid):
    """A run decoded in one pass gives every window exactly the frames read_clip gives it."""
    path = write_coded(tmp_path / "coded.mp4", seconds=7.25)
    info = probe_video(path)
    assert (info.num_frames, info.fps) == (58, FPS)
    plan = WindowPlan.create(max_frames=4, window=2.0)
    sampling = FrameSampling(max_frames=4, feature_framerate=plan.frame_rate, image_resolution=32,
                             grid=grid)
    windows = plan_windows(info.duration, plan)
    runs = split_runs(windows, sampling, info, max_windows=3)
    assert sum(len(r) for r in runs) == len(windows) == 7
    for run in runs:
        frames, index = decode_run(str(path), run, info, sampling)
        video, mask = assemble_windows(frames, index)
        for w, (start, end) in enumerate(run):
            expected, expected_mask = read_clip(path, start, end, sampling)
            assert torch.equal(mask[w], expected_mask)
            assert torch.equal(video[w], expected)
            if grid == "framerate":  # one frame every 0.5 s from the window's start
                codes = [read_code_normalized(video[w, t]) for t in range(int(mask[w].sum()))]
                assert codes == [round(start * FPS) + 4 * t for t in range(len(codes))]


def test_short_video_is_one_window_with_masked_slots(tmp_path):
    path = write_coded(tmp_path / "short.mp4", seconds=1.0)
    info = VideoInfo(*vars(probe_video(path)).values())
    plan = WindowPlan.create(max_frames=4, window=2.0)
    sampling = FrameSampling(max_frames=4, feature_framerate=plan.frame_rate, image_resolution=32)
    windows = plan_windows(info.duration, plan)
    assert windows == [(0.0, 1.0)]
    frames, index = decode_run(str(path), windows, info, sampling)
    _, mask = assemble_windows(frames, index)
    assert mask.tolist() == [[1, 1, 0, 0]]  # frames at 0 and 0.5 s; 1.0 s is past the last frame
