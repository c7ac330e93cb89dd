"""Generated test videos whose frames carry their own frame number.

Each frame shows its index as a 4x4 grid of black/white cells (16 bits, most significant
first) over the frame's central square, on a grey background. The central square is what
CLIP's resize + centre crop keeps, so the number can be read back from raw decoded frames
(:func:`read_code`) and from normalised model input (:func:`read_code_normalized`). Cells
are at least 8x8 pixels and only their inner half is averaged, so the code survives
chroma subsampling and lossy coding.

Videos are written with PyAV in a child process: once decord is imported, PyAV's
libvpx-vp9 encoder fails to open (decord 0.6.0 bundles its own FFmpeg/libvpx, whose
symbols win), so encoding must not share a process with the video reader. The set is
generated once per test session into pytest's base temp folder (:func:`video_set`); test
modules share it through the module-level cache, whichever module asks first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pytest
    import torch

GRID = 4
BITS = GRID * GRID
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only


def _square(width: int, height: int) -> tuple[int, int, int]:
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def code_frame(index: int, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3] RGB frame showing ``index`` as a 4x4 binary grid."""
    if not 0 <= index < 2**BITS:
        raise ValueError(index)
    img = np.full((height, width, 3), 128, np.uint8)
    x0, y0, side = _square(width, height)
    edges = np.linspace(0, side, GRID + 1).round().astype(int)
    for bit in range(BITS):
        r, c = divmod(bit, GRID)
        value = 255 if (index >> (BITS - 1 - bit)) & 1 else 0
        img[y0 + edges[r] : y0 + edges[r + 1], x0 + edges[c] : x0 + edges[c + 1]] = value
    return img


def read_code(frame: np.ndarray | torch.Tensor) -> int:
    """The frame number drawn by :func:`code_frame`, from an [H, W, 3] frame (any scale 0..255)."""
    frame = np.asarray(frame, dtype=np.float64)
    height, width = frame.shape[:2]
    x0, y0, side = _square(width, height)
    cell = side / GRID
    value = 0
    for bit in range(BITS):
        r, c = divmod(bit, GRID)
        ya, yb = y0 + int(round((r + 0.25) * cell)), y0 + int(round((r + 0.75) * cell))
        xa, xb = x0 + int(round((c + 0.25) * cell)), x0 + int(round((c + 0.75) * cell))
        patch = frame[ya : max(yb, ya + 1), xa : max(xb, xa + 1)]
        value = (value << 1) | int(patch.mean() > 128)
    return value


def unnormalize(chw: torch.Tensor) -> np.ndarray:
    """Model input [3, S, S] (CLIP-normalised) -> float [S, S, 3] on the 0..255 scale."""
    import torch

    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return ((chw.float() * std + mean) * 255).permute(1, 2, 0).numpy()


def read_code_normalized(chw: torch.Tensor) -> int:
    return read_code(unnormalize(chw))


def write_video(
    path: Path,
    *,
    codec: str,
    fps: Fraction | int,
    width: int,
    height: int,
    num_frames: int,
    options: dict[str, str] | None = None,
    frame_fn=code_frame,
) -> Path:
    """Encode ``num_frames`` frames ``frame_fn(i, width, height)`` with PyAV; returns ``path``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = dict(options or {})
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_fn(i, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def solid_frame(color: tuple[int, int, int]):
    def fn(index: int, width: int, height: int) -> np.ndarray:
        return np.broadcast_to(np.array(color, np.uint8), (height, width, 3)).copy()

    return fn


@dataclass(frozen=True)
class VideoSpec:
    filename: str
    codec: str
    fps: Fraction
    width: int
    height: int
    num_frames: int
    options: dict[str, str] = field(default_factory=dict)
    color: tuple[int, int, int] | None = None  # solid colour instead of frame codes

    @property
    def duration(self) -> float:
        return self.num_frames / float(self.fps)


X264 = {"preset": "veryfast", "crf": "18"}  # veryfast keeps B-frames: tests frame reordering
# Short GOPs (g / keyint) so that seeking to key frames is exercised; x265 keeps its open GOPs.
SPECS: dict[str, VideoSpec] = {
    "h264_2997": VideoSpec("h264_2997.mp4", "libx264", Fraction(30000, 1001), 64, 48, 300, {**X264, "g": "40"}),
    "h264_24_portrait": VideoSpec("h264 24 portrait.mp4", "libx264", Fraction(24), 40, 72, 120, X264),
    "mpeg4_25_odd": VideoSpec("mpeg4_25_odd.avi", "mpeg4", Fraction(25), 65, 49, 125, {"qscale": "3"}),
    "mpeg4_bframes": VideoSpec("mpeg4_bframes.avi", "mpeg4", Fraction(25), 64, 48, 100, {"qscale": "3", "bf": "2"}),
    "h264_bframes_avi": VideoSpec("h264_bframes.avi", "libx264", Fraction(25), 64, 48, 100, {**X264, "g": "30"}),
    "vp9_24_odd": VideoSpec("vp9_24_odd.webm", "libvpx-vp9", Fraction(24), 49, 67, 72, {"crf": "20", "b": "0", "g": "20"}),
    "hevc_30": VideoSpec(
        "hevc_30.mp4",
        "libx265",
        Fraction(30),
        64,
        48,
        90,
        {"preset": "ultrafast", "x265-params": "log-level=error:keyint=20:min-keyint=20:bframes=3"},
    ),
    "av1_25": VideoSpec("av1_25.mkv", "libsvtav1", Fraction(25), 64, 48, 60, {"preset": "12", "crf": "20", "g": "16"}),
    "red": VideoSpec("red.mp4", "libx264", Fraction(25), 64, 48, 10, X264, color=(255, 0, 0)),
    "short_30": VideoSpec("short_30.mp4", "libx264", Fraction(30), 64, 64, 20, X264),
}
LONG = VideoSpec("long_30.mp4", "libx264", Fraction(30), 32, 32, 61 * 30, {"preset": "ultrafast", "crf": "12"})

ALL_SPECS = {**SPECS, "long": LONG}
_cache: dict[tuple[str, str], dict[str, Path]] = {}


def build(root: Path, names: list[str]) -> dict[str, Path]:
    """Write the named specs under ``root`` (skipping finished ones); in this process."""
    paths = {}
    for name in names:
        spec = ALL_SPECS[name]
        path = root / spec.filename
        done = path.with_name(path.name + ".done")
        if not done.exists():
            write_video(
                path,
                codec=spec.codec,
                fps=spec.fps,
                width=spec.width,
                height=spec.height,
                num_frames=spec.num_frames,
                options=spec.options,
                frame_fn=code_frame if spec.color is None else solid_frame(spec.color),
            )
            done.touch()
        paths[name] = path
    return paths


def build_in_child(root: Path, names: list[str]) -> dict[str, Path]:
    """:func:`build` in a fresh interpreter (see the module doc for why)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), str(root), *names]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"generating test videos failed:\n{result.stderr[-3000:]}")
    return {name: root / ALL_SPECS[name].filename for name in names}


def _cached(tmp_path_factory: pytest.TempPathFactory, names: list[str]) -> dict[str, Path]:
    root = tmp_path_factory.getbasetemp() / "video_fixtures"
    key = (str(root), ",".join(names))
    if key not in _cache:
        _cache[key] = build_in_child(root, names)
    return _cache[key]


def video_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every spec in :data:`SPECS` as a file, generated once per session."""
    return _cached(tmp_path_factory, list(SPECS))


def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """61 s, 30 fps, 32x32 H.264 with frame codes (generated once per session)."""
    return _cached(tmp_path_factory, ["long"])["long"]


if __name__ == "__main__":
    build(Path(sys.argv[1]), sys.argv[2:])
