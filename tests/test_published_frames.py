"""The published frame grids of the video reader against the published loaders' rules.

The oracles below restate, one frame at a time, how InternVideo's decord loaders
(``_get_rawvideo_dec`` in its MSR-VTT, LSMDC, DiDeMo and VATEX loaders) and CLIP4Clip's
OpenCV extractor (``RawVideoExtractorCV2``, used by InternVideo for MSVD and ActivityNet)
choose frames; they share no code with ``dataloaders.video_reader``. Most checks need only a
frame count and a frame rate; one decodes a generated video.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from dataloaders.video_reader import (
    GRIDS,
    PUBLISHED_GRIDS,
    FrameSampling,
    published_grid,
    read_clip,
    sample_frame_indices,
)
from tests import video_fixtures as vf

DURATIONS = (0.5, 1.0, 2.9, 3.0, 7.3, 15.0, 31.2, 60.0, 200.0)
FPS = (Fraction(24000, 1001), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(60))
MAX_FRAMES = (6, 8, 12, 32, 64)
# (start, end) as the dataset modules pass them: whole video, DiDeMo's [0, 31], odd,
# reversed, empty and negative windows
WINDOWS = ((None, None), (0, 31), (2.7, 9.2), (5, 2), (3, 3), (-1.5, 4.0))


def _whole_second_window(start, end):
    """The window of the published loaders: whole seconds, clamped at 0, ordered, never empty."""
    if start is None:
        return None, None
    lo, hi = int(start), int(end)
    lo = lo if lo >= 0 else 0
    hi = hi if hi >= 0 else 0
    if lo > hi:
        return hi, lo
    return (lo, lo + 1) if lo == hi else (lo, hi)


def _uniform(frames: list[int], max_frames: int) -> list[int]:
    return [frames[int(i)] for i in np.linspace(0, len(frames) - 1, num=max_frames, dtype=int)]


def internvideo_decord(num_frames, fps, start, end, max_frames, framerate=1):
    """InternVideo's decord loaders: a stride of round(fps / int(framerate)) frames from the
    window's first frame, uniformly subsampled when too many (slice_framepos is not read)."""
    lo, hi = _whole_second_window(start, end)
    first = 0 if lo is None else int(lo * fps)
    last = num_frames - 1 if hi is None else int(min(hi * fps, num_frames - 1))
    if last < first:
        return []
    frames = list(range(first, last + 1, int(round(float(fps) / int(framerate)))))
    return _uniform(frames, max_frames) if len(frames) > max_frames else frames


def opencv_extractor(num_frames, fps, start, end, max_frames, slice_framepos, framerate=1):
    """CLIP4Clip's OpenCV extractor: int(fps), one seek per wanted frame, second by second,
    until a read fails (a seek past the last frame), then the slice_framepos reduction."""
    whole = int(fps)
    per_second = int(framerate)
    step = whole // per_second or 1
    offsets = [j for j in range(0, whole, step)][:per_second]
    duration = (num_frames + whole - 1) // whole
    lo, hi = _whole_second_window(start, end)
    first_sec, last_sec = (0, duration) if lo is None else (lo, min(hi, duration))
    frames, readable = [], True
    sec = first_sec
    while readable and sec <= last_sec:
        for j in offsets:
            position = sec * whole + j
            readable = position < num_frames
            if not readable:
                break
            frames.append(position)
        sec += 1
    if len(frames) > max_frames:
        if slice_framepos == 0:
            frames = frames[:max_frames]
        elif slice_framepos == 1:
            frames = frames[-max_frames:]
        else:
            frames = _uniform(frames, max_frames)
    return frames


def _ours(grid, num_frames, fps, start, end, max_frames, slice_framepos=2, framerate=1):
    sampling = FrameSampling(max_frames=max_frames, slice_framepos=slice_framepos, grid=grid,
                             feature_framerate=float(framerate))
    try:
        return sample_frame_indices(num_frames, float(fps), start, end, sampling).tolist()
    except ValueError:
        return []  # the published loaders return zero frames here; ours refuses


@pytest.mark.parametrize("fps", FPS, ids=lambda f: f"{float(f):.3f}")
def test_decord_grid_matches_internvideo(fps):
    checked = 0
    for duration, max_frames, (start, end), slice_framepos in itertools.product(
            DURATIONS, MAX_FRAMES, WINDOWS, (0, 1, 2)):
        num_frames = max(1, round(duration * fps))
        expected = internvideo_decord(num_frames, fps, start, end, max_frames)
        got = _ours("published_decord", num_frames, fps, start, end, max_frames, slice_framepos)
        assert got == expected, (duration, max_frames, start, end, slice_framepos)
        checked += bool(expected)
    assert checked > 500


@pytest.mark.parametrize("fps", FPS, ids=lambda f: f"{float(f):.3f}")
def test_cv2_grid_matches_clip4clip_extractor(fps):
    # MSVD: whole video; ActivityNet: [0, ceil(duration)] from the annotation
    checked = 0
    for duration, max_frames, slice_framepos in itertools.product(DURATIONS, MAX_FRAMES, (0, 1, 2)):
        num_frames = max(1, round(duration * fps))
        for start, end in (*WINDOWS, (0, math.ceil(duration)), (0, math.ceil(duration) - 2)):
            expected = opencv_extractor(num_frames, fps, start, end, max_frames, slice_framepos)
            got = _ours("published_cv2", num_frames, fps, start, end, max_frames, slice_framepos)
            assert got == expected, (duration, max_frames, start, end, slice_framepos)
            checked += bool(expected)
    assert checked > 500


@pytest.mark.parametrize("framerate", [2, 3])
def test_published_grids_at_more_frames_per_second(framerate):
    for fps, duration, max_frames in itertools.product(FPS, (2.9, 15.0), (8, 64)):
        num_frames = round(duration * fps)
        assert (_ours("published_decord", num_frames, fps, None, None, max_frames, framerate=framerate)
                == internvideo_decord(num_frames, fps, None, None, max_frames, framerate))
        assert (_ours("published_cv2", num_frames, fps, None, None, max_frames, 0, framerate)
                == opencv_extractor(num_frames, fps, None, None, max_frames, 0, framerate))


def test_issue_examples():
    """The worked examples of the comparison with InternVideo (issue 10, item 1)."""
    decord = FrameSampling(max_frames=8, slice_framepos=2, grid="published_decord")
    assert sample_frame_indices(450, 30.0, sampling=decord).tolist() == list(range(0, 421, 60))
    segments = FrameSampling(max_frames=8, grid="segments")
    assert sample_frame_indices(450, 30.0, sampling=segments).tolist() == [28, 84, 140, 196, 253, 309, 365, 421]
    lsmdc = FrameSampling(max_frames=6, slice_framepos=2, grid="published_decord")
    assert sample_frame_indices(72, 24.0, sampling=lsmdc).tolist() == [0, 24, 48]  # 3 real + 3 zero frames
    anet = FrameSampling(max_frames=64, slice_framepos=2, grid="published_cv2")
    assert len(sample_frame_indices(40 * 30, 30.0, 0, 40, sampling=anet)) == 40


def test_decord_grid_ignores_slice_and_order_as_published():
    base = FrameSampling(max_frames=4, grid="published_decord", slice_framepos=2)
    other = FrameSampling(max_frames=4, grid="published_decord", slice_framepos=0, frame_order=1)
    assert (sample_frame_indices(300, 30.0, sampling=base).tolist()
            == sample_frame_indices(300, 30.0, sampling=other).tolist() == [0, 90, 180, 270])


def test_cv2_grid_honours_frame_order():
    rev = FrameSampling(max_frames=4, grid="published_cv2", slice_framepos=1, frame_order=1)
    assert sample_frame_indices(300, 30.0, sampling=rev).tolist() == [270, 240, 210, 180]
    shuffled = FrameSampling(max_frames=10, grid="published_cv2", frame_order=2)
    got = sample_frame_indices(300, 30.0, sampling=shuffled, rng=np.random.default_rng(0))
    assert sorted(got.tolist()) == list(range(0, 300, 30))


def test_grid_validation():
    with pytest.raises(ValueError, match="grid must be one of"):
        FrameSampling(grid="uniform")
    with pytest.raises(ValueError, match="whole number of frames per second"):
        FrameSampling(grid="published_cv2", feature_framerate=0.5)
    with pytest.raises(ValueError, match="fixed_frames=True means"):
        FrameSampling(grid="published_decord", fixed_frames=True)
    assert FrameSampling(fixed_frames=True).grid == "segments"
    assert FrameSampling(grid="segments").fixed_frames
    with pytest.raises(ValueError, match="cannot take 30 frames per second"):
        sample_frame_indices(100, 25.0, sampling=FrameSampling(grid="published_cv2", feature_framerate=30))


def test_published_grid_table():
    assert set(GRIDS) >= set(itertools.chain(*(t.values() for t in PUBLISHED_GRIDS.values())))
    assert {d: published_grid(d) for d in ("msrvtt", "lsmdc", "didemo", "vatex", "msvd", "activity")} == {
        "msrvtt": "published_decord", "lsmdc": "published_decord", "didemo": "published_decord",
        "vatex": "published_decord", "msvd": "published_cv2", "activity": "published_cv2"}
    assert published_grid("didemo", "clip4clip") == "published_cv2"
    with pytest.raises(ValueError, match="no published frame grid"):
        published_grid("synthetic")
    with pytest.raises(ValueError, match="unknown codebase"):
        published_grid("msrvtt", "frozen")


@pytest.fixture(scope="module")
def ntsc_video(tmp_path_factory) -> Path:
    return vf.video_set(tmp_path_factory)["h264_2997"]  # 300 frames at 29.97 fps, frame codes


@pytest.mark.parametrize("grid", ["published_decord", "published_cv2"])
def test_decoded_published_clip_is_padded_with_masked_zero_frames(ntsc_video, grid):
    spec = vf.ALL_SPECS["h264_2997"]
    sampling = FrameSampling(max_frames=16, slice_framepos=2, grid=grid, image_resolution=32)
    video, mask = read_clip(ntsc_video, sampling=sampling)
    if grid == "published_decord":
        expected = internvideo_decord(spec.num_frames, spec.fps, None, None, 16)
    else:
        expected = opencv_extractor(spec.num_frames, spec.fps, None, None, 16, 2)
    n = len(expected)
    assert n == (10 if grid == "published_decord" else 11)  # stride 30 vs int(29.97) = 29
    assert [vf.read_code_normalized(frame) for frame in video[:n]] == expected
    assert mask.tolist() == [1] * n + [0] * (16 - n)
    assert torch.count_nonzero(video[n:]) == 0  # zeros after normalisation, as the published loaders fill
