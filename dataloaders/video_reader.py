"""Video decoding, frame sampling and the CLIP image transform.

One call, :func:`read_clip`, turns a video file (or a time window of it) into the tensor the
model eats: ``float32 [max_frames, 3, S, S]`` plus an ``int64 [max_frames]`` frame mask.

Decoding (only the sampled frames). PyAV decodes by default: it indexes frames as decord
does (frame i = i-th packet in timestamp order), seeks to the key frame before a wanted
frame when needed, has the decoder skip non-reference frames nobody asked for, and converts
only wanted frames to RGB. Without usable timestamps (AVI, missing or repeated pts) it
decodes forward from the start and counts frames.

``VIDEO_READER_BACKEND=decord`` selects decord (``get_batch`` on the sorted indices), which
CLIP4Clip/InternVideo use; where decord is not installed or fails on a file (decord 0.6.0
cannot open AV1, for one), PyAV decodes that file and a warning names it. PyAV is the
default because decord 0.6.0 returns wrong frames, silently, after seeking in HEVC with open
GOPs (x265's default: asked for frame 60, it gives 63) and in AVI with B-frames (MPEG-4
part 2 and H.264; AVI files go to PyAV under either backend), and because PyAV takes about
0.7x decord's CPU time on H.264 with B-frames (``bench/RESULTS.md``). Both backends give
the same frames where decord is right (tests).

Sampling (:func:`sample_frame_indices`), with ``fps`` the stream's average frame rate, ``N``
its frame count and ``r = feature_framerate``. ``FrameSampling.grid`` picks the rule:

* ``"framerate"`` (ours, plain CLIP towers): window ``s = max(start or 0, 0)``,
  ``e = min(end or N / fps, N / fps)`` in seconds; candidate times ``t_k = s + k / r`` while
  ``t_k <= e`` (``r`` may be fractional, e.g. 0.5); frame of a time ``round(t * fps)`` (half
  rounds up), frames ``>= N`` dropped. One frame per ``1 / r`` seconds without the published
  decord grid's drift on 29.97 fps (its stride is a whole number of frames).
* ``"segments"`` (ours, InternVideo's encoder): the window's frames ``a = round(s * fps) ..
  b = min(round(e * fps), N - 1)`` cut into ``max_frames`` equal segments, the centre frame
  of each, ``a + floor((i + 0.5) * (b - a + 1) / max_frames)``; short windows repeat
  frames, so the mask is all ones.
* ``"published_decord"``: InternVideo's decord loaders (MSR-VTT, LSMDC, DiDeMo, VATEX)
  exactly. Window in whole seconds as published (``int(start)``, ``int(end)``, negatives 0,
  swapped when reversed, ``end = start + 1`` when equal); ``f_start = int(start * fps)``
  (0 without a window), ``f_end = int(min(end * fps, N - 1))``; frames
  ``range(f_start, f_end + 1, int(round(fps / int(r))))``. The published code always
  subsamples these uniformly and keeps their order: ``slice_framepos`` and ``frame_order``
  are ignored on this grid, as there.
* ``"published_cv2"``: CLIP4Clip's OpenCV reader (all CLIP4Clip datasets; InternVideo's MSVD
  and ActivityNet) exactly. With ``F = int(fps)`` and the same whole-second window:
  seconds ``start .. min(end, ceil(N / F))`` inclusive (``0 .. ceil(N / F)`` without a
  window); in each second ``sec`` the frames ``sec * F + j * (F // int(r))`` for the first
  ``int(r)`` values of j; sampling stops at the first frame ``>= N``.
* ``"framerate"`` and ``"published_cv2"`` then reduce more than ``max_frames`` frames by
  ``slice_framepos`` (0 keeps the first, 1 the last, 2 ``np.linspace(0, L - 1,
  max_frames)`` truncated to int, CLIP4Clip's rule); every grid but ``"published_decord"``
  applies ``frame_order`` (0 keeps time order, 1 reverses, 2 shuffles with ``rng``).

Fewer frames than ``max_frames`` leave zero slots with mask 0 (:func:`read_clip`); the
published protocol of InternVideo's encoder feeds those zero frames to the model, which is
the model's business, not the reader's. :data:`PUBLISHED_GRIDS` names the grid each
published codebase used for each ``--datatype``.

No frame inside the window is an error (:class:`VideoDecodeError`), never a tensor of zeros.

Transform (:func:`transform_clip`), on the whole clip at once: resize the short side to
``image_resolution`` (bicubic, antialiased, back to uint8 as PIL does), centre crop,
``/255``, CLIP mean/std.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Decoder threads (decord and PyAV). 1 keeps DataLoader workers from oversubscribing the
# CPU; the loader's parallelism is its workers.
DECODE_THREADS = int(os.environ.get("VIDEO_READER_THREADS", "1"))
# "pyav" (default) or "decord" (PyAV where decord fails or for AVI); see the module doc.
BACKEND = os.environ.get("VIDEO_READER_BACKEND", "pyav").lower()

_EPS = 1e-6  # absorbs float error in t * fps and (e - s) * r


GRIDS = ("framerate", "segments", "published_decord", "published_cv2")

# The grid each published codebase used, by ``--datatype``: InternVideo's retrieval loaders
# (every InternVideo script, `--clip_evl` or not) and CLIP4Clip's (OpenCV everywhere; it has
# no VATEX loader, so VATEX gets the reader CLIP4Clip uses for every other dataset).
PUBLISHED_GRIDS: dict[str, dict[str, str]] = {
    "internvideo": {
        "msrvtt": "published_decord",
        "lsmdc": "published_decord",
        "didemo": "published_decord",
        "vatex": "published_decord",
        "msvd": "published_cv2",
        "activity": "published_cv2",
    },
    "clip4clip": dict.fromkeys(("msrvtt", "msvd", "lsmdc", "activity", "didemo", "vatex"), "published_cv2"),
}


def published_grid(datatype: str, codebase: str = "internvideo") -> str:
    """The grid ``codebase`` ("internvideo" or "clip4clip") sampled ``datatype`` with."""
    try:
        table = PUBLISHED_GRIDS[codebase]
    except KeyError:
        raise ValueError(f"unknown codebase {codebase!r}; choose from {sorted(PUBLISHED_GRIDS)}") from None
    try:
        return table[datatype]
    except KeyError:
        raise ValueError(f"{codebase} has no published frame grid for datatype {datatype!r}; "
                         f"known: {sorted(table)}") from None


@dataclass
class FrameSampling:
    """Which frames of a clip the model sees and at what size (CLIP4Clip's arguments).

    ``grid`` is one of :data:`GRIDS` (see the module doc). ``fixed_frames=True`` is the old
    spelling of ``grid="segments"``.
    """

    max_frames: int = 12
    feature_framerate: float = 1.0
    slice_framepos: int = 0  # 0 head, 1 tail, 2 uniform
    frame_order: int = 0  # 0 keep, 1 reverse, 2 shuffle
    image_resolution: int = 224
    grid: str = "framerate"
    fixed_frames: bool = False

    def __post_init__(self) -> None:
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if not self.feature_framerate > 0:
            raise ValueError(f"feature_framerate must be > 0, got {self.feature_framerate}")
        if self.slice_framepos not in (0, 1, 2):
            raise ValueError(f"slice_framepos must be 0, 1 or 2, got {self.slice_framepos}")
        if self.frame_order not in (0, 1, 2):
            raise ValueError(f"frame_order must be 0, 1 or 2, got {self.frame_order}")
        if self.image_resolution < 1:
            raise ValueError(f"image_resolution must be >= 1, got {self.image_resolution}")
        if self.grid not in GRIDS:
            raise ValueError(f"grid must be one of {GRIDS}, got {self.grid!r}")
        if self.fixed_frames:
            if self.grid not in ("framerate", "segments"):
                raise ValueError(f"fixed_frames=True means grid='segments', not {self.grid!r}")
            self.grid = "segments"
        self.fixed_frames = self.grid == "segments"
        if self.grid.startswith("published_") and self.feature_framerate < 1:
            raise ValueError(f"the published grids take a whole number of frames per second "
                             f"(the published code casts it to int); got feature_framerate={self.feature_framerate}")


class VideoDecodeError(RuntimeError):
    """A video that cannot give the frames asked for; the message names file and reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path}: {reason}")


# ----------------------------------------------------------------------------- sampling


def _window(num_frames: int, fps: float, start: float | None, end: float | None) -> tuple[float, float]:
    duration = num_frames / fps
    s = 0.0 if start is None else max(float(start), 0.0)
    e = duration if end is None else min(float(end), duration)
    return s, e


def _no_frame(num_frames: int, fps: float, start: float | None, end: float | None) -> ValueError:
    return ValueError(
        f"no frame inside [start={start}, end={end}] s (video: {num_frames} frames at {fps:.3f} fps, {num_frames / fps:.3f} s)"
    )


def _candidate_indices(num_frames: int, fps: float, s: float, e: float, rate: float) -> np.ndarray:
    count = math.floor((e - s) * rate + _EPS) + 1
    times = s + np.arange(count, dtype=np.float64) / rate
    idx = np.floor(times * fps + 0.5 + _EPS).astype(np.int64)
    return idx[idx < num_frames]


def _fixed_indices(num_frames: int, fps: float, s: float, e: float, n: int) -> np.ndarray:
    a = math.floor(s * fps + 0.5 + _EPS)
    b = min(math.floor(e * fps + 0.5 + _EPS), num_frames - 1)
    if a > b:
        return np.zeros(0, dtype=np.int64)
    span = b - a + 1
    return a + np.floor((np.arange(n) + 0.5) * span / n).astype(np.int64)


def _published_seconds(start: float | None, end: float | None) -> tuple[int | None, int | None]:
    """The published loaders' window: whole seconds (``int`` truncates), negatives to 0,
    swapped when reversed, one second long when empty; (None, None) for the whole video."""
    if start is None and end is None:
        return None, None
    s = max(int(start), 0) if start is not None else 0
    if end is None:
        return s, None
    e = max(int(end), 0)
    if s > e:
        s, e = e, s
    elif s == e:
        e = s + 1
    return s, e


def _published_decord_indices(num_frames: int, fps: float, start, end, rate: int) -> np.ndarray:
    s, e = _published_seconds(start, end)
    f_start = 0 if s is None else int(s * fps)
    f_end = int(min(num_frames - 1 if e is None else e * fps, num_frames - 1))
    stride = int(round(float(fps) / rate))  # Python's round: halves go to even, as published
    if stride < 1:
        raise ValueError(f"a {fps:.3f} fps video has no frame stride for {rate} frames per second")
    return np.arange(f_start, f_end + 1, stride, dtype=np.int64)


def _published_cv2_indices(num_frames: int, fps: float, start, end, rate: int) -> np.ndarray:
    whole_fps = int(fps)
    if whole_fps < 1:
        raise ValueError(f"the OpenCV grid needs at least 1 fps (int(fps) = 0 at {fps:.3f} fps)")
    offsets = list(range(0, whole_fps, max(whole_fps // rate, 1)))[:rate]
    if len(offsets) < rate:
        raise ValueError(f"cannot take {rate} frames per second from a {whole_fps} fps video")
    seconds = math.ceil(num_frames / whole_fps)
    s, e = _published_seconds(start, end)
    first, last = (0, seconds) if s is None else (s, seconds if e is None else min(e, seconds))
    frames = [sec * whole_fps + j for sec in range(first, last + 1) for j in offsets]
    stop = next((i for i, f in enumerate(frames) if f >= num_frames), len(frames))
    return np.asarray(frames[:stop], dtype=np.int64)


def _slice(idx: np.ndarray, max_frames: int, slice_framepos: int) -> np.ndarray:
    if len(idx) <= max_frames:
        return idx
    if slice_framepos == 0:
        return idx[:max_frames]
    if slice_framepos == 1:
        return idx[-max_frames:]
    return idx[np.linspace(0, len(idx) - 1, num=max_frames, dtype=int)]


def _order(idx: np.ndarray, frame_order: int, rng: np.random.Generator | None) -> np.ndarray:
    if frame_order == 1:
        return idx[::-1].copy()
    if frame_order == 2:
        return (rng if rng is not None else np.random.default_rng()).permutation(idx)
    return idx


def sample_frame_indices(
    num_frames: int,
    fps: float,
    start: float | None = None,
    end: float | None = None,
    sampling: FrameSampling | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Frame indices (int64, in the order the model sees them) for a clip; see the module doc.

    Raises ValueError when no frame lies inside the window.
    """
    sampling = sampling or FrameSampling()
    if num_frames < 1 or not fps > 0:
        raise ValueError(f"video has no frames (frames={num_frames}, fps={fps})")
    grid, n = sampling.grid, sampling.max_frames
    if grid == "published_decord":
        idx = _slice(_published_decord_indices(num_frames, fps, start, end, int(sampling.feature_framerate)), n, 2)
    elif grid == "published_cv2":
        idx = _published_cv2_indices(num_frames, fps, start, end, int(sampling.feature_framerate))
        idx = _slice(idx, n, sampling.slice_framepos)
    else:
        s, e = _window(num_frames, fps, start, end)
        if e < s:
            raise _no_frame(num_frames, fps, start, end)
        if grid == "segments":
            idx = _fixed_indices(num_frames, fps, s, e, n)
        else:
            idx = _slice(_candidate_indices(num_frames, fps, s, e, sampling.feature_framerate), n, sampling.slice_framepos)
    if len(idx) == 0:
        raise _no_frame(num_frames, fps, start, end)
    return idx if grid == "published_decord" else _order(idx, sampling.frame_order, rng)


# ----------------------------------------------------------------------------- decoding


class _DecordSource:
    """decord.VideoReader: frame count from the container, get_batch (see the module doc for where it is wrong)."""

    name = "decord"

    def __init__(self, path: Path):
        decord = load_decord()
        self.reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=DECODE_THREADS)
        self.num_frames = len(self.reader)
        self.fps = float(self.reader.get_avg_fps())

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self.reader.get_batch(indices.tolist()).asnumpy()

    def close(self) -> None:
        self.reader = None


class _ShortStream(Exception):
    """The stream ended before a frame the header promised."""

    def __init__(self, decoded: int):
        super().__init__(decoded)
        self.decoded = decoded


class _NoTimestamps(Exception):
    """Frames or packets without usable timestamps: index frames by counting instead."""


def _header_slack(promised: int) -> int:
    """Frames a header may overstate (AVI indexes, edit lists) before the file counts as truncated."""
    return max(2, promised // 100)


# Decoders that honour AVCodecContext.skip_frame packet by packet (the frame-code tests
# check each): non-reference frames nobody asked for are not decoded.
_SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "mpeg4", "vp9"})


def _scan_packets(path: Path) -> tuple[list, list, int, float, str]:
    """(pts of each video packet in decode order, their key-frame flags, header frame count, fps,
    container format name)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise ValueError("unknown frame rate")
        pts, keys = [], []
        for packet in container.demux(stream):
            if packet.size:
                pts.append(packet.pts)
                keys.append(packet.is_keyframe)
        return pts, keys, stream.frames, float(rate), container.format.name


_reformatters = threading.local()


def _to_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as uint8 RGB [H, W, 3]. ``VideoFrame.to_ndarray(format="rgb24")``
    builds a new swscale context for every frame (0.8 ms for a 32x32 frame, most of the
    decoding time of small clips); one reformatter per thread keeps its context between
    frames of the same size and format (0.15 ms), with identical pixels."""
    owner, reformatter = getattr(_reformatters, "rgb", (None, None))
    if owner != os.getpid():  # never reuse a context inherited through fork (DataLoader workers hung in it)
        from av.video.reformatter import VideoReformatter

        reformatter = VideoReformatter()
        _reformatters.rgb = (os.getpid(), reformatter)
    return reformatter.reformat(frame, format="rgb24").to_ndarray()


class _PyAVSource:
    """PyAV, indexing frames the way decord does: frame i is the i-th packet in pts order.

    A first pass demuxes the packets (no decoding) for their timestamps and key-frame flags.
    To reach a wanted frame it seeks to the key frame before it, unless the frames decoded
    so far already lead there, then decodes forward; the decoder skips non-reference frames
    that are not wanted (h264, hevc, mpeg4, vp9: in B-frame-heavy H.264 half the frames).
    Only wanted frames are converted to RGB. Without usable timestamps (missing or repeated
    pts) it decodes forward from the start and counts frames.
    """

    name = "PyAV"

    def __init__(self, path: Path):
        import av

        pts, keys, self.header_frames, self.fps, container_format = _scan_packets(path)
        self.num_frames = len(pts) if pts else self.header_frames
        self.pts = None
        # AVI stores no presentation timestamps (its packet times are decode order), so with
        # B-frames the pts of AVI frames name the wrong frames: count decoded frames instead.
        usable = "avi" not in container_format.split(",")
        if usable and pts and None not in pts and len(set(pts)) == len(pts):
            order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
            self.pts = np.asarray(pts, dtype=np.int64)[order]  # rank -> pts
            self.rank = {int(p): r for r, p in enumerate(self.pts)}
            self.keys = np.flatnonzero(np.asarray(keys)[order])  # ranks of key frames
        self.path = path
        self._open = av.open
        self.container = av.open(str(path))

    def _stream(self):
        stream = self.container.streams.video[0]
        stream.codec_context.thread_count = DECODE_THREADS
        return stream

    def _key_before(self, rank: int) -> int:
        i = int(np.searchsorted(self.keys, rank, side="right")) - 1
        return int(self.keys[i]) if i >= 0 else 0

    def get(self, indices: np.ndarray) -> np.ndarray:
        if self.pts is not None:
            try:
                return self._get_by_pts(indices)
            except _NoTimestamps:
                self.container.close()
                self.container = self._open(str(self.path))
        return self._get_counting(indices)

    def _get_by_pts(self, indices: np.ndarray) -> np.ndarray:
        stream = self._stream()
        context = stream.codec_context
        skip = context.name in _SKIP_NONREF_CODECS
        wanted = set(indices.tolist())
        frames: dict[int, np.ndarray] = {}
        packets, frontier, shown = None, -1, -1
        for target in indices.tolist():
            key = self._key_before(target)
            if packets is None or frontier < key:  # nothing decoded so far leads to target
                if packets is not None or key > 0:
                    self.container.seek(int(self.pts[key]), stream=stream)
                packets, frontier, shown = self.container.demux(stream), -1, -1
            for packet in packets:
                if packet.pts is not None:
                    rank = self.rank.get(packet.pts)
                    if rank is None:
                        raise _NoTimestamps
                    frontier = max(frontier, rank)
                    if skip:
                        context.skip_frame = "DEFAULT" if rank in wanted else "NONREF"
                for frame in packet.decode():
                    rank = self.rank.get(frame.pts) if frame.pts is not None else None
                    if rank is None or rank <= shown:  # frames come out in presentation order
                        raise _NoTimestamps
                    shown = rank
                    if rank in wanted and rank not in frames:
                        frames[rank] = _to_rgb(frame)
                if target in frames:
                    break
            if target not in frames:
                raise VideoDecodeError(self.path, f"truncated or corrupt stream (frame {target} could not be decoded)")
        return np.stack([frames[i] for i in indices.tolist()])

    def _get_counting(self, indices: np.ndarray) -> np.ndarray:
        wanted = set(indices.tolist())
        last = max(wanted)
        frames: dict[int, np.ndarray] = {}
        position = -1
        for position, frame in enumerate(self.container.decode(self._stream())):
            if position in wanted:
                frames[position] = _to_rgb(frame)
            if position >= last:
                break
        if position < last:
            raise _ShortStream(position + 1)
        return np.stack([frames[i] for i in indices.tolist()])

    def close(self) -> None:
        self.container.close()


_decord_state: dict[str, object] = {}


def load_decord():
    """The decord module, or None when it is not installed.

    Imported on first use only: decord 0.6.0 bundles its own FFmpeg and libvpx, and once it
    is loaded PyAV's libvpx-vp9 encoder fails to open in the same process.
    """
    if "module" not in _decord_state:
        try:
            import decord
        except ImportError:
            decord = None
        _decord_state["module"] = decord
    return _decord_state["module"]


_warned_no_decord = False


def _warn_no_decord() -> None:
    global _warned_no_decord
    if not _warned_no_decord:
        logger.warning("VIDEO_READER_BACKEND=decord but decord is not installed; videos are decoded with PyAV")
        _warned_no_decord = True


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _is_avi(path: Path) -> bool:
    """An AVI file (by its RIFF header, whatever its name).

    decord 0.6.0 returns wrong frames after seeking in AVI files with B-frames (MPEG-4 part 2
    and H.264 alike; see tests), so AVI goes to PyAV, which counts frames, under either backend.
    """
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] == b"RIFF" and head[8:12] == b"AVI "


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _decode(source, path: Path, start, end, sampling, rng) -> tuple[np.ndarray, np.ndarray]:
    try:
        indices = sample_frame_indices(source.num_frames, source.fps, start, end, sampling, rng)
    except ValueError as err:
        raise VideoDecodeError(path, str(err)) from err
    if np.all(np.diff(indices) > 0):  # the usual case: in time order, no repeats
        return source.get(indices), indices
    unique, inverse = np.unique(indices, return_inverse=True)
    return source.get(unique)[inverse], indices


def _decode_with_pyav(path: Path, start, end, sampling, rng, first_error: BaseException | None):
    try:
        source = _PyAVSource(path)
    except Exception as err:
        reason = f"not a readable video ({_short(err)})"
        if first_error is not None:
            reason += f"; decord: {_short(first_error)}"
        raise VideoDecodeError(path, reason) from err
    try:
        promised = source.header_frames
        if promised and promised - source.num_frames > _header_slack(promised):
            raise VideoDecodeError(
                path, f"truncated or corrupt stream (header says {promised} frames, file holds {source.num_frames})"
            )
        try:
            return _decode(source, path, start, end, sampling, rng)
        except _ShortStream as short:
            promised = source.num_frames
            if promised - short.decoded > _header_slack(promised):
                raise VideoDecodeError(
                    path,
                    f"truncated or corrupt stream (header says {promised} frames, stream ends after {short.decoded})",
                ) from None
            logger.warning("%s: header says %d frames, stream has %d; sampling again", path, source.num_frames, short.decoded)
            source.close()
            source = _PyAVSource(path)
            source.pts, source.num_frames = None, short.decoded
            return _decode(source, path, start, end, sampling, rng)
    except VideoDecodeError:
        raise
    except Exception as err:
        raise VideoDecodeError(path, f"truncated or corrupt stream ({_short(err)})") from err
    finally:
        source.close()


def read_frames_uint8(
    path: str | os.PathLike,
    start: float | None = None,
    end: float | None = None,
    sampling: FrameSampling | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Decode the sampled frames: (uint8 [T, H, W, 3] RGB, frame indices int64 [T]).

    T <= sampling.max_frames (== with ``grid="segments"``). Raises :class:`VideoDecodeError`.
    """
    path = Path(path)
    sampling = sampling or FrameSampling()
    _check_file(path)
    source = None
    decord_error: BaseException | None = None
    if BACKEND != "decord" or _is_avi(path):
        pass
    elif load_decord() is not None:
        try:
            source = _DecordSource(path)
        except Exception as err:  # decord raises RuntimeError and its own DECORDError
            decord_error = err
            logger.warning("decord cannot open %s (%s); decoding it with PyAV", path, _short(err))
    else:
        _warn_no_decord()
    if source is not None:
        try:
            frames, indices = _decode(source, path, start, end, sampling, rng)
            return torch.from_numpy(frames), indices
        except VideoDecodeError:
            raise
        except Exception as err:
            decord_error = err
            logger.warning("decord failed on %s (%s); decoding it with PyAV", path, _short(err))
        finally:
            source.close()
    frames, indices = _decode_with_pyav(path, start, end, sampling, rng, decord_error)
    return torch.from_numpy(frames), indices


# ----------------------------------------------------------------------------- transform


def _normalize_constants(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    std = torch.tensor(CLIP_STD, dtype=torch.float64)
    scale = (1.0 / (255.0 * std)).to(dtype).view(1, 3, 1, 1)
    shift = (torch.tensor(CLIP_MEAN, dtype=torch.float64) / std).to(dtype).view(1, 3, 1, 1)
    return scale, shift


def transform_clip(frames: torch.Tensor, size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [T, 3, size, size]: CLIP's Resize(bicubic), CenterCrop, Normalize.

    The resize runs on uint8 and returns uint8 (rounded, clamped), as PIL's does in
    CLIP4Clip's per-frame transform; the whole clip goes through each op at once. The
    float result is written into ``out`` (a fresh tensor when None) in place: one
    conversion copy and two in-place passes, no temporaries.
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2)  # a channels-last view: no copy
    if min(x.shape[-2:]) != size:
        x = TF.resize(x, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = TF.center_crop(x, [size, size])
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32)
    scale, shift = _normalize_constants(torch.float32)
    return out.copy_(x).mul_(scale).sub_(shift)


def read_clip(
    path: str | os.PathLike,
    start: float | None = None,
    end: float | None = None,
    sampling: FrameSampling | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip as model input: (float32 [max_frames, 3, S, S], int64 mask [max_frames]).

    Slots past the sampled frames are zeros with mask 0. ``start``/``end`` in seconds
    (None: whole video). Raises :class:`VideoDecodeError` naming the file and the reason.
    """
    sampling = sampling or FrameSampling()
    frames, _ = read_frames_uint8(path, start, end, sampling, rng)
    size = sampling.image_resolution
    video = torch.empty(sampling.max_frames, 3, size, size, dtype=torch.float32)
    n = frames.shape[0]
    transform_clip(frames, size, out=video[:n])
    video[n:] = 0
    mask = torch.zeros(sampling.max_frames, dtype=torch.int64)
    mask[:n] = 1
    return video, mask


def probe_video(path: str | os.PathLike) -> None:
    """Check that a file opens as a video with a known frame rate, from its header alone (no
    demuxing, no decoding: milliseconds). Raises :class:`VideoDecodeError` naming the file.
    Whether a time window holds frames is left to decoding (a header's frame count or duration
    may be off by a few frames)."""
    import av

    path = Path(path)
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            if not (stream.average_rate or stream.guessed_rate):
                raise ValueError("unknown frame rate")
    except Exception as err:
        raise VideoDecodeError(path, f"not a readable video ({_short(err)})") from err


__all__: Sequence[str] = (
    "CLIP_MEAN",
    "CLIP_STD",
    "FrameSampling",
    "GRIDS",
    "PUBLISHED_GRIDS",
    "VideoDecodeError",
    "probe_video",
    "published_grid",
    "read_clip",
    "read_frames_uint8",
    "sample_frame_indices",
    "transform_clip",
)
