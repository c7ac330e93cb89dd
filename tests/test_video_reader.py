"""Video reader: which frames are sampled (read back from codes drawn in the frames), the
transform, decord/PyAV agreement and fallback, and the error cases."""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from dataloaders import video_reader as vr
from dataloaders.video_reader import FrameSampling, VideoDecodeError, read_clip, read_frames_uint8, sample_frame_indices
from tests import video_fixtures as vf

RES = 32  # small model input keeps the tests fast; cells stay >= 8 px


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    return vf.video_set(tmp_path_factory)


@pytest.fixture(scope="session")
def long_path(tmp_path_factory) -> Path:
    return vf.long_video(tmp_path_factory)


def spec_of(name: str) -> vf.VideoSpec:
    return vf.ALL_SPECS[name]


# ----------------------------------------------------------------------------- the definition


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def oracle(num_frames, fps, start=None, end=None, max_frames=12, rate=1, slice_framepos=0, fixed=False):
    """The sampling rule of the module doc, in exact arithmetic, one frame at a time."""
    fps, rate = Fraction(fps), Fraction(rate)
    duration = Fraction(num_frames) / fps
    s = max(Fraction(start or 0), Fraction(0))
    e = duration if end is None else min(Fraction(end), duration)
    if fixed:
        a, b = _round_half_up(s * fps), min(_round_half_up(e * fps), num_frames - 1)
        return [a + math.floor(Fraction(2 * i + 1, 2 * max_frames) * (b - a + 1)) for i in range(max_frames)]
    out, k = [], 0
    while s + k / rate <= e:
        index = _round_half_up((s + k / rate) * fps)
        if index < num_frames:
            out.append(index)
        k += 1
    if len(out) > max_frames:
        if slice_framepos == 0:
            out = out[:max_frames]
        elif slice_framepos == 1:
            out = out[-max_frames:]
        else:
            out = [out[int(j)] for j in np.linspace(0, len(out) - 1, max_frames)]
    return out


def test_hand_computed_indices():
    ntsc = 30000 / 1001
    assert sample_frame_indices(300, ntsc).tolist() == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]
    four = dict(max_frames=4)
    assert sample_frame_indices(300, ntsc, sampling=FrameSampling(**four)).tolist() == [0, 30, 60, 90]
    tail = FrameSampling(slice_framepos=1, **four)
    assert sample_frame_indices(300, ntsc, sampling=tail).tolist() == [180, 210, 240, 270]
    uniform = FrameSampling(slice_framepos=2, **four)
    assert sample_frame_indices(300, ntsc, sampling=uniform).tolist() == [0, 90, 180, 270]
    half = FrameSampling(feature_framerate=0.5)
    assert sample_frame_indices(300, 30.0, sampling=half).tolist() == [0, 60, 120, 180, 240]
    three = FrameSampling(feature_framerate=3, max_frames=100)
    assert sample_frame_indices(25, 25.0, sampling=three).tolist() == [0, 8, 17]
    assert sample_frame_indices(250, 25.0, 2.5, 5).tolist() == [63, 88, 113]  # 62.5 rounds up
    assert sample_frame_indices(250, 25.0, -3, 1.5).tolist() == [0, 25]
    fixed = FrameSampling(max_frames=4, grid="segments")
    assert sample_frame_indices(10, 10.0, sampling=fixed).tolist() == [1, 3, 6, 8]
    fixed6 = FrameSampling(max_frames=6, grid="segments")
    assert sample_frame_indices(3, 10.0, sampling=fixed6).tolist() == [0, 0, 1, 1, 2, 2]


CASES = [
    dict(num_frames=300, fps=Fraction(30000, 1001)),
    dict(num_frames=1830, fps=30, max_frames=12, slice_framepos=2),
    dict(num_frames=1830, fps=30, max_frames=12, slice_framepos=1, rate=Fraction(1, 2)),
    dict(num_frames=1830, fps=30, start=12.3, end=47.9, max_frames=7, slice_framepos=2, rate=3),
    dict(num_frames=125, fps=25, rate=Fraction(3, 10), max_frames=2, slice_framepos=1),
    dict(num_frames=72, fps=24, start=0.5, end=2.25, rate=4, max_frames=64),
    dict(num_frames=20, fps=30, max_frames=12),
    dict(num_frames=20, fps=30, max_frames=12, fixed=True),
    dict(num_frames=1830, fps=30, start=10, end=20, max_frames=8, fixed=True),
    dict(num_frames=90, fps=Fraction(24000, 1001), start=1, end=99, max_frames=5, fixed=True),
    dict(num_frames=300, fps=Fraction(30000, 1001), start=9.9, end=None, rate=10),
]


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_indices_follow_the_definition(case):
    case = dict(case)
    sampling = FrameSampling(
        max_frames=case.pop("max_frames", 12),
        feature_framerate=float(case.pop("rate", 1)),
        slice_framepos=case.pop("slice_framepos", 0),
        grid="segments" if case.pop("fixed", False) else "framerate",
    )
    expected = oracle(
        case["num_frames"],
        case["fps"],
        case.get("start"),
        case.get("end"),
        sampling.max_frames,
        Fraction(sampling.feature_framerate).limit_denominator(1000),
        sampling.slice_framepos,
        sampling.grid == "segments",
    )
    got = sample_frame_indices(case["num_frames"], float(case["fps"]), case.get("start"), case.get("end"), sampling)
    assert got.dtype == np.int64
    assert got.tolist() == expected


def test_frame_order_reverse_and_shuffle():
    base = sample_frame_indices(300, 30.0, sampling=FrameSampling(max_frames=8))
    rev = sample_frame_indices(300, 30.0, sampling=FrameSampling(max_frames=8, frame_order=1))
    assert rev.tolist() == base.tolist()[::-1]
    shuffled = FrameSampling(max_frames=8, frame_order=2)
    a = sample_frame_indices(300, 30.0, sampling=shuffled, rng=np.random.default_rng(3))
    b = sample_frame_indices(300, 30.0, sampling=shuffled, rng=np.random.default_rng(3))
    assert a.tolist() == b.tolist() and sorted(a.tolist()) == base.tolist() and a.tolist() != base.tolist()


@pytest.mark.parametrize("start,end", [(20.0, None), (5.0, 4.0), (10.1, 30.0)])
def test_no_frame_in_window_is_an_error(start, end):
    with pytest.raises(ValueError, match="no frame inside"):
        sample_frame_indices(300, 30.0, start, end)


@pytest.mark.parametrize("bad", [dict(max_frames=0), dict(feature_framerate=0), dict(slice_framepos=3), dict(frame_order=-1)])
def test_sampling_validation(bad):
    with pytest.raises(ValueError):
        FrameSampling(**bad)


# ----------------------------------------------------------------------------- decoded frames

CODED = [
    "h264_2997",
    "h264_24_portrait",
    "mpeg4_25_odd",
    "mpeg4_bframes",
    "h264_bframes_avi",
    "vp9_24_odd",
    "hevc_30",
    "av1_25",
    "short_30",
]
SAMPLINGS = [
    FrameSampling(max_frames=12),
    FrameSampling(max_frames=5, feature_framerate=4, slice_framepos=2),
    FrameSampling(max_frames=3, feature_framerate=0.5, slice_framepos=1),
    FrameSampling(max_frames=7, grid="segments"),
]


@pytest.fixture(params=["decord", "pyav"])
def backend(request, monkeypatch):
    monkeypatch.setattr(vr, "BACKEND", request.param)
    return request.param


@pytest.mark.parametrize("name", CODED)
def test_decoded_frames_are_the_named_ones(videos, name, backend):
    if backend == "decord" and name == "hevc_30":
        pytest.skip("decord mis-seeks in open-GOP HEVC: test_decord_mis_seeks_where_pyav_does_not")
    spec = spec_of(name)
    for sampling in SAMPLINGS:
        frames, indices = read_frames_uint8(videos[name], sampling=sampling)
        expected = oracle(
            spec.num_frames,
            spec.fps,
            None,
            None,
            sampling.max_frames,
            Fraction(sampling.feature_framerate),
            sampling.slice_framepos,
            sampling.grid == "segments",
        )
        assert frames.dtype == torch.uint8 and frames.shape[1:] == (spec.height, spec.width, 3)
        assert indices.tolist() == expected
        assert [vf.read_code(f) for f in frames] == expected


@pytest.mark.parametrize("name", CODED)
def test_read_clip_model_input(videos, name):
    spec = spec_of(name)
    sampling = FrameSampling(max_frames=12, feature_framerate=2, image_resolution=RES)
    video, mask = read_clip(videos[name], sampling=sampling)
    assert video.dtype == torch.float32 and video.shape == (12, 3, RES, RES)
    assert mask.dtype == torch.int64
    expected = oracle(spec.num_frames, spec.fps, rate=2, max_frames=12)
    n = len(expected)
    assert mask.tolist() == [1] * n + [0] * (12 - n)
    assert [vf.read_code_normalized(v) for v in video[:n]] == expected
    assert torch.count_nonzero(video[n:]) == 0


def test_short_clip_pads_with_masked_zeros(videos):
    video, mask = read_clip(videos["short_30"], sampling=FrameSampling(image_resolution=RES))
    assert mask.tolist() == [1] + [0] * 11  # 0.67 s at 1 fps: only t = 0
    assert torch.count_nonzero(video[1:]) == 0 and torch.count_nonzero(video[0]) > 0


def test_segments_repeat_frames_on_short_clip(videos):
    sampling = FrameSampling(max_frames=32, grid="segments", image_resolution=RES)
    video, mask = read_clip(videos["short_30"], sampling=sampling)
    assert mask.tolist() == [1] * 32
    codes = [vf.read_code_normalized(v) for v in video]
    assert codes == [math.floor((i + 0.5) * 20 / 32) for i in range(32)]


def test_reverse_and_shuffle_on_decoded_clip(videos):
    path = videos["h264_2997"]
    forward = [vf.read_code_normalized(v) for v in read_clip(path, sampling=FrameSampling(image_resolution=RES))[0][:10]]
    rev_video, rev_mask = read_clip(path, sampling=FrameSampling(image_resolution=RES, frame_order=1))
    assert rev_mask.tolist() == [1] * 10 + [0] * 2
    assert [vf.read_code_normalized(v) for v in rev_video[:10]] == forward[::-1]
    shuffled = FrameSampling(image_resolution=RES, frame_order=2)
    a, _ = read_clip(path, sampling=shuffled, rng=np.random.default_rng(0))
    b, _ = read_clip(path, sampling=shuffled, rng=np.random.default_rng(0))
    codes = [vf.read_code_normalized(v) for v in a[:10]]
    assert torch.equal(a, b) and sorted(codes) == forward and codes != forward


@pytest.mark.parametrize(
    "start,end,sampling",
    [
        (None, None, FrameSampling(max_frames=12, slice_framepos=0)),
        (None, None, FrameSampling(max_frames=12, slice_framepos=1)),
        (None, None, FrameSampling(max_frames=12, slice_framepos=2)),
        (None, None, FrameSampling(max_frames=64, slice_framepos=2)),
        (30.0, 40.0, FrameSampling(max_frames=12, slice_framepos=2)),
        (55.5, 70.0, FrameSampling(max_frames=12, feature_framerate=0.5)),
        (12.0, 48.0, FrameSampling(max_frames=8, grid="segments")),
    ],
)
def test_long_video_windows(long_path, start, end, sampling, backend):
    spec = vf.LONG
    sampling.image_resolution = RES
    expected = oracle(
        spec.num_frames,
        spec.fps,
        start,
        end,
        sampling.max_frames,
        Fraction(sampling.feature_framerate),
        sampling.slice_framepos,
        sampling.grid == "segments",
    )
    video, mask = read_clip(long_path, start, end, sampling)
    n = len(expected)
    assert mask.tolist() == [1] * n + [0] * (sampling.max_frames - n)
    assert [vf.read_code_normalized(v) for v in video[:n]] == expected


def test_channel_order_is_rgb(videos):
    video, _ = read_clip(videos["red"], sampling=FrameSampling(max_frames=1, image_resolution=RES))
    rgb = vf.unnormalize(video[0]).reshape(-1, 3).mean(0)
    assert rgb[0] > 230 and rgb[1] < 25 and rgb[2] < 25


def test_transform_matches_clip4clip_pil_pipeline():
    from PIL import Image
    from torchvision import transforms as T

    pil = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(vr.CLIP_MEAN, vr.CLIP_STD),
        ]
    )
    rng = np.random.default_rng(0)
    for h, w in [(360, 640), (101, 77)]:
        frames = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        ours = vr.transform_clip(torch.from_numpy(frames), 224)
        ref = torch.stack([pil(Image.fromarray(f)) for f in frames])
        levels = (ours - ref).abs() * torch.tensor(vr.CLIP_STD).view(1, 3, 1, 1) * 255
        assert ours.shape == (2, 3, 224, 224) and ours.dtype == torch.float32
        assert levels.max() <= 2.01 and levels.mean() < 0.02  # PIL and torch bicubic differ by rounding


# ----------------------------------------------------------------------------- backends


@pytest.fixture
def decord_backend(monkeypatch):
    monkeypatch.setattr(vr, "BACKEND", "decord")


def test_pyav_is_the_default():
    assert vr.BACKEND == "pyav" or os.environ.get("VIDEO_READER_BACKEND")


@pytest.mark.parametrize("name", ["h264_2997", "mpeg4_25_odd", "vp9_24_odd", "short_30"])
def test_decord_and_pyav_agree(videos, name):
    path = videos[name]
    decord_src, pyav_src = vr._DecordSource(path), vr._PyAVSource(path)
    assert decord_src.num_frames == pyav_src.num_frames == spec_of(name).num_frames
    assert decord_src.fps == pytest.approx(pyav_src.fps)
    idx = np.arange(0, decord_src.num_frames, 5)
    a, b = decord_src.get(idx).astype(int), pyav_src.get(idx).astype(int)
    pyav_src.close()
    assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() < 0.1


@pytest.mark.parametrize("name,asked", [("hevc_30", [0, 60]), ("h264_bframes_avi", [0, 25, 50, 75])])
def test_decord_mis_seeks_where_pyav_does_not(videos, name, asked):
    """Why PyAV is the default (and AVI never goes to decord): decord 0.6.0 silently returns
    other frames after seeking in open-GOP HEVC (60 -> 63 here) and in AVI with B-frames."""
    decord_src, pyav_src = vr._DecordSource(videos[name]), vr._PyAVSource(videos[name])
    assert [vf.read_code(f) for f in decord_src.get(np.array(asked))] != asked
    assert [vf.read_code(f) for f in pyav_src.get(np.array(asked))] == asked
    pyav_src.close()


def test_av1_falls_back_to_pyav_with_warning(videos, caplog, decord_backend):
    path = videos["av1_25"]
    with caplog.at_level(logging.WARNING, logger=vr.__name__):
        frames, indices = read_frames_uint8(path, sampling=FrameSampling(max_frames=3))
    assert [vf.read_code(f) for f in frames] == indices.tolist() == [0, 25, 50]
    assert any("PyAV" in r.message and str(path) in r.message for r in caplog.records)


def test_decord_read_failure_falls_back(videos, caplog, monkeypatch, decord_backend):
    def broken(self, indices):
        raise RuntimeError("simulated decord failure")

    monkeypatch.setattr(vr._DecordSource, "get", broken)
    with caplog.at_level(logging.WARNING, logger=vr.__name__):
        frames, indices = read_frames_uint8(videos["h264_2997"])
    assert [vf.read_code(f) for f in frames] == indices.tolist()
    assert any("simulated decord failure" in r.message for r in caplog.records)


def test_without_decord_pyav_decodes(videos, caplog, monkeypatch, decord_backend):
    monkeypatch.setattr(vr, "load_decord", lambda: None)
    monkeypatch.setattr(vr, "_warned_no_decord", False)
    sampling = FrameSampling(max_frames=2, slice_framepos=2, image_resolution=RES)
    with caplog.at_level(logging.WARNING, logger=vr.__name__):
        video, mask = read_clip(videos["vp9_24_odd"], sampling=sampling)
        read_clip(videos["vp9_24_odd"], sampling=sampling)
    assert [vf.read_code_normalized(v) for v in video] == oracle(72, 24, max_frames=2, slice_framepos=2) == [0, 48]
    assert sum("not installed" in r.message for r in caplog.records) == 1


def test_pyav_resamples_when_header_overstates_frames(videos, monkeypatch, caplog):
    original = vr._PyAVSource.__init__

    def lying_header(self, path):
        original(self, path)
        self.pts = None  # no timestamps: frames are counted
        self.num_frames += 2  # within the slack a header may overstate

    monkeypatch.setattr(vr._PyAVSource, "__init__", lying_header)
    # 92 claimed frames: t = 3 s -> frame 90 is sampled, but the stream ends at 89
    with caplog.at_level(logging.WARNING, logger=vr.__name__):
        frames, indices = read_frames_uint8(videos["hevc_30"], sampling=FrameSampling(max_frames=3, slice_framepos=1))
    assert indices.tolist() == [0, 30, 60]
    assert [vf.read_code(f) for f in frames] == indices.tolist()
    assert any("sampling again" in r.message for r in caplog.records)


# ----------------------------------------------------------------------------- errors


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _faststart_h264(path: Path) -> Path:
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("h264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(100):  # noise: the bytes spread evenly over the frames
            img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_error_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoDecodeError, match="not found") as info:
        read_clip(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_error_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(VideoDecodeError, match=r"empty file") as info:
        read_clip(path)
    assert str(path) in str(info.value)


def test_error_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match="not a readable video") as info:
        read_clip(path)
    assert str(path) in str(info.value)


def test_error_directory(tmp_path):
    with pytest.raises(VideoDecodeError, match="not a regular file"):
        read_clip(tmp_path)


def test_error_truncated_moov_at_end(videos, tmp_path):
    path = _truncate(videos["h264_2997"], tmp_path / "cut.mp4", 0.5)
    with pytest.raises(VideoDecodeError, match="not a readable video") as info:
        read_clip(path)
    assert str(path) in str(info.value)


def test_error_truncated_faststart(tmp_path):
    full = _faststart_h264(tmp_path / "full.mp4")
    path = _truncate(full, tmp_path / "cut_fast.mp4", 0.5)
    with pytest.raises(VideoDecodeError, match="truncated or corrupt") as info:
        read_clip(path, sampling=FrameSampling(max_frames=4, slice_framepos=1, image_resolution=RES))
    assert str(path) in str(info.value)


def test_error_no_frame_in_window(videos):
    path = videos["h264_2997"]
    with pytest.raises(VideoDecodeError, match="no frame inside") as info:
        read_clip(path, start=11.0, end=20.0)
    assert str(path) in str(info.value)
