"""Probing files and decoding runs of windows (in DataLoader worker processes).

* :func:`probe_files` (threads of the main process): per file, its size, mtime, SHA-256, frame
  count and frame rate (counted as the video reader counts them: video packets, the stream's
  average rate);
* :class:`ChunkDataset` (a map-style dataset, so the loader's workers share the work evenly
  and deliver it in order): per run of consecutive windows of one file, the frames of all those
  windows decoded in one pass of the video reader and transformed once, plus an index
  ``[windows, max_frames]`` into them (-1: masked slot).

Neither raises: a file that cannot be read comes back with ``error`` set (the reason), so one
bad file never stops indexing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dataloaders.video_reader import FrameSampling, VideoDecodeError, read_frames_uint8, sample_frame_indices, transform_clip
from modules.weights import sha256_of

# A decoded run of a video holds at most this many frames before the transform (bounds the
# memory of InternVideo's fixed-frame sampling, which decodes every frame of the run).
MAX_RUN_FRAMES = 256


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count and rate as the video reader sees them; VideoDecodeError if unreadable."""
    import av

    path = Path(path)
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise VideoDecodeError(path, "unknown frame rate")
            packets = sum(1 for packet in container.demux(stream) if packet.size)
            num_frames = packets or int(stream.frames or 0)
    except VideoDecodeError:
        raise
    except Exception as err:  # av.error.*, OSError, ...
        raise VideoDecodeError(path, f"not a readable video ({_short(err)})") from err
    if num_frames < 1:
        raise VideoDecodeError(path, "video stream holds no frames")
    return VideoInfo(num_frames=num_frames, fps=float(rate))


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def failure_reason(err: BaseException) -> str:
    if isinstance(err, VideoDecodeError):
        return err.reason
    return f"{type(err).__name__}: {_short(err)}"


def probe_file(index: int, path: str) -> dict:
    """Size, mtime, SHA-256, frame count and rate of one file, or ``error`` with the reason."""
    item = {"index": index, "path": path, "error": None}
    try:
        stat = os.stat(path)
        item.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=sha256_of(path))
        info = probe_video(path)
        item.update(num_frames=info.num_frames, fps=info.fps)
    except Exception as err:
        item["error"] = failure_reason(err)
    return item


def probe_files(paths: list[str], threads: int) -> Iterator[dict]:
    """:func:`probe_file` over the paths in order, on threads (hashing and demuxing wait on I/O
    and release the GIL; a loader's worker processes would cost more to start than this work)."""
    if threads <= 1:
        yield from (probe_file(i, p) for i, p in enumerate(paths))
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        yield from pool.map(probe_file, range(len(paths)), paths)


# ----------------------------------------------------------------------------- window runs


def decode_rate(sampling: FrameSampling, info: VideoInfo) -> float:
    """Rate at which a run is decoded: the window's grid, or every frame for fixed-frame sampling."""
    return info.fps if sampling.grid == "segments" else sampling.feature_framerate


def split_runs(windows: list[tuple[float, float]], sampling: FrameSampling, info: VideoInfo,
               max_windows: int) -> list[list[tuple[float, float]]]:
    """Consecutive windows grouped into runs of at most ``max_windows`` windows, fewer when a
    run would decode more than :data:`MAX_RUN_FRAMES` frames."""
    runs: list[list[tuple[float, float]]] = []
    rate = decode_rate(sampling, info)
    for window in windows:
        if runs and len(runs[-1]) < max_windows and (window[1] - runs[-1][0][0]) * rate <= MAX_RUN_FRAMES:
            runs[-1].append(window)
        else:
            runs.append([window])
    return runs


def decode_run(path: str, windows: list[tuple[float, float]], info: VideoInfo,
               sampling: FrameSampling) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames float32 [F, 3, S, S], index int64 [len(windows), max_frames]) for a run of windows.

    Window ``w`` is ``frames[index[w]]`` with -1 slots masked; its frames are exactly those
    ``read_clip(path, start, end, sampling)`` would give (a window whose frames the run did
    not decode is read on its own).
    """
    run_sampling = replace(sampling, max_frames=10**9, feature_framerate=decode_rate(sampling, info),
                           slice_framepos=0, frame_order=0, grid="framerate", fixed_frames=False)
    decoded, indices = read_frames_uint8(path, windows[0][0], windows[-1][1], run_sampling)
    position = {int(frame): i for i, frame in enumerate(indices)}
    extra: list[torch.Tensor] = []
    index = torch.full((len(windows), sampling.max_frames), -1, dtype=torch.int64)
    for w, (start, end) in enumerate(windows):
        wanted = sample_frame_indices(info.num_frames, info.fps, start, end, sampling)
        if not all(int(f) in position for f in wanted):
            own, _ = read_frames_uint8(path, start, end, sampling)
            base = len(indices) + sum(len(e) for e in extra)
            extra.append(own)
            index[w, : len(own)] = torch.arange(base, base + len(own))
            continue
        index[w, : len(wanted)] = torch.tensor([position[int(f)] for f in wanted])
    frames = torch.cat([decoded, *extra]) if extra else decoded
    used = torch.unique(index[index >= 0])
    remap = torch.full((len(frames),), -1, dtype=torch.int64)
    remap[used] = torch.arange(len(used))
    index = torch.where(index >= 0, remap[index.clamp(min=0)], index)
    return transform_clip(frames[used], sampling.image_resolution), index


@dataclass(frozen=True)
class Run:
    file_no: int
    path: str
    windows: list
    info: VideoInfo


class ChunkDataset(Dataset):
    """Item i: ``{"file_no", "frames", "index", "error", "decode_s"}`` for ``runs[i]``."""

    def __init__(self, runs: list[Run], sampling: FrameSampling):
        self.runs = runs
        self.sampling = sampling

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, i: int) -> dict:
        run = self.runs[i]
        start = time.perf_counter()
        item = {"file_no": run.file_no, "frames": None, "index": None, "error": None}
        try:
            item["frames"], item["index"] = decode_run(run.path, run.windows, run.info, self.sampling)
        except Exception as err:
            item["error"] = failure_reason(err)
        item["decode_s"] = time.perf_counter() - start
        return item


def assemble_windows(frames: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Model input (video [W, T, 3, S, S], mask [W, T]) from a decoded run."""
    mask = (index >= 0).to(torch.int64)
    video = frames[index.clamp(min=0)]
    video[~mask.bool()] = 0
    return video, mask
