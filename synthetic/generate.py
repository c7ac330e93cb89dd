"""Synthetic temporal video-text benchmark written in MSR-VTT's exact file format.

``python -m synthetic.generate --out data/synthetic --seed 0`` writes::

    <out>/MSRVTT_data.json        MSR-VTT annotation json ("info", "videos", "sentences")
    <out>/synthetic_train.csv     train list, column ``video_id`` (like MSRVTT_train.9k.csv)
    <out>/synthetic_test.csv      JSFusion-style test list: key,vid_key,video_id,sentence
    <out>/synthetic_meta.json     generation config, every clip's spec, twin pairs (see below)
    <out>/videos/<video_id>.mp4   H.264 (lossless, qp 0), yuv420p, ``fps`` frames per second

so the MSR-VTT loader reads it unchanged. ``--datatype synthetic`` (same files: ``--data_path
<out>/MSRVTT_data.json --train_csv <out>/synthetic_train.csv --val_csv
<out>/synthetic_test.csv --features_path <out>/videos``) adds the twin pairs: the temporal
report and ``--twin_batches`` (:mod:`synthetic.dataset`). Read every frame with
``--feature_framerate <fps> --max_frames <2*event_frames>``, the ``recommended`` block of
the meta file.

A clip is two events of ``event_frames`` frames each; in each event one coloured shape
crosses the whole frame in one direction on a black-to-dark-grey background. Its caption
names both events in order: "a red circle moves left, then a blue square moves up".

Temporal twins. A *direction twin* plays one event's frames backwards (the caption flips
that event's direction word); an *order twin* plays the two events in swapped order (the
caption swaps the two event phrases). Both twins hold exactly the same set of frames as
their base clip, so a model that pools frames without their order must tie on them. The
encoding is lossless in YUV and the decoder maps each frame independently of its
neighbours, so the decoded frames keep that property bit for bit.

Train clips come in pairs (base, twin of a random kind) so a batch sampler can put twins
in one batch (:mod:`synthetic.twin_sampler`). Test clips come in triplets (base, direction
twin, order twin). Every clip in the dataset has a distinct event content (the caption
up to its template), and no test content appears in train.

``synthetic_meta.json`` holds ``config``, ``recommended`` loader settings, ``videos``
(per clip: video_id, split, role in {"base", "direction_twin", "order_twin"}, twin_of,
caption, the events and rendering parameters), ``twin_pairs`` per split (lists of
[video_id, twin_video_id, kind]) and ``test_video_ids`` (test csv row order: caption i of
the test split belongs to video ``test_video_ids[i]``). :mod:`synthetic.twin_metrics`
turns it into query groups and twin accuracies.

Determinism: the same arguments give the same bytes of every annotation file and the same
decoded frames (the mp4 bytes are expected to match too, but only frames are promised).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (40, 200, 50),
    "blue": (50, 80, 255),
    "yellow": (240, 225, 40),
    "purple": (170, 50, 225),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "up": "down", "down": "up"}
TEMPLATES: tuple[str, ...] = ("{a}, then {b}", "first {a}, then {b}", "{a} and then {b}")

META_FILE = "synthetic_meta.json"
TRAIN_CSV = "synthetic_train.csv"
TEST_CSV = "synthetic_test.csv"
DATA_JSON = "MSRVTT_data.json"
ROLES = ("base", "direction_twin", "order_twin")


@dataclass(frozen=True)
class Event:
    """One shape crossing the frame. Geometry is in fractions of the frame side.

    The shape's centre moves along the axis of ``direction`` between ``low`` and ``high``
    (``low < high``; left/up start at ``high``), at ``lane`` on the other axis.
    """

    colour: str
    shape: str
    direction: str
    lane: float
    radius: float
    low: float
    high: float

    def phrase(self) -> str:
        return f"a {self.colour} {self.shape} moves {self.direction}"

    def reversed(self) -> Event:
        """The same frames played backwards: only the direction word changes."""
        return replace(self, direction=OPPOSITE[self.direction])


@dataclass(frozen=True)
class ClipSpec:
    events: tuple[Event, Event]
    background: int
    template: int

    def caption(self) -> str:
        return TEMPLATES[self.template].format(a=self.events[0].phrase(), b=self.events[1].phrase())

    def content_key(self) -> tuple[tuple[str, str, str], ...]:
        """What the caption says, whatever the template: clips with equal keys are ambiguous."""
        return tuple((e.colour, e.shape, e.direction) for e in self.events)


def direction_twin(spec: ClipSpec, which: int) -> ClipSpec:
    events = list(spec.events)
    events[which] = events[which].reversed()
    return replace(spec, events=tuple(events))


def order_twin(spec: ClipSpec) -> ClipSpec:
    return replace(spec, events=(spec.events[1], spec.events[0]))


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    num_train: int = 2000  # train videos, in (base, twin) pairs: even
    num_test: int = 600  # test videos, in (base, direction twin, order twin) triplets
    size: int = 32  # frame side in pixels (even, 32..112)
    fps: int = 8
    event_frames: int = 4  # frames per event; a clip has two events

    def validate(self) -> None:
        if self.size % 2 or not 32 <= self.size <= 112:
            raise ValueError(f"size must be even and in [32, 112], got {self.size}")
        if self.fps < 1 or self.event_frames < 2:
            raise ValueError(f"need fps >= 1 and event_frames >= 2, got {self.fps}, {self.event_frames}")
        if self.num_train < 0 or self.num_train % 2:
            raise ValueError(f"num_train counts videos in (base, twin) pairs: even, got {self.num_train}")
        if self.num_test < 3 or self.num_test % 3:
            raise ValueError(f"num_test counts videos in triplets: a positive multiple of 3, got {self.num_test}")

    @property
    def num_frames(self) -> int:
        return 2 * self.event_frames


# ----------------------------------------------------------------------------- rendering


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` of radius ``r`` (pixels) given offsets from its centre."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = 0.85 * r
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # apex up, base at 0.8 r below the centre
        depth = dy + r
        return (depth >= 0) & (dy <= 0.8 * r) & (np.abs(dx) <= depth / 1.8)
    if shape == "cross":
        arm = 0.35 * r
        box = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        return box & ((np.abs(dx) <= arm) | (np.abs(dy) <= arm))
    raise ValueError(f"unknown shape {shape!r}")


def event_positions(event: Event, n: int) -> list[float]:
    """Centre coordinate along the motion axis for each of ``n`` frames (fractions).

    Opposite directions use the same list reversed, so an event and its ``reversed()``
    render exactly the same frames in opposite order.
    """
    ascending = [event.low + (event.high - event.low) * t / (n - 1) for t in range(n)]
    return ascending if event.direction in ("right", "down") else ascending[::-1]


def render_event(event: Event, size: int, n: int, background: int) -> np.ndarray:
    """uint8 frames [n, size, size, 3] of one event."""
    coords = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    frames = np.full((n, size, size, 3), background, dtype=np.uint8)
    colour = np.array(COLOURS[event.colour], dtype=np.uint8)
    horizontal = event.direction in ("left", "right")
    for t, pos in enumerate(event_positions(event, n)):
        cx, cy = (pos, event.lane) if horizontal else (event.lane, pos)
        dx = coords[None, :] - cx * size
        dy = coords[:, None] - cy * size
        frames[t][_shape_mask(event.shape, dx, dy, event.radius * size)] = colour
    return frames


def render_clip(spec: ClipSpec, size: int, event_frames: int) -> np.ndarray:
    """uint8 frames [2 * event_frames, size, size, 3]: the first event, then the second."""
    return np.concatenate([render_event(e, size, event_frames, spec.background) for e in spec.events])


# ----------------------------------------------------------------------------- video files


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """Lossless H.264 (qp 0, yuv420p) mp4 of uint8 RGB frames [T, H, W, 3].

    qp 0 keeps the YUV planes exactly, so decoding gives each frame back as a fixed
    function of that frame alone (the RGB->YUV420 rounding is the only loss).
    """
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "preset": "medium"}
        stream.codec_context.thread_count = 1  # one process per core does the parallelism
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def decode_mp4(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video as uint8 RGB [T, H, W, 3] (for tests and checks)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _write_videos(job: tuple[str, list[tuple[str, ClipSpec]], int, int, int]) -> int:
    """Worker: render, encode and write a chunk of clips (atomic rename per file)."""
    video_dir, items, size, event_frames, fps = job
    for video_id, spec in items:
        data = encode_mp4(render_clip(spec, size, event_frames), fps)
        path = Path(video_dir) / f"{video_id}.mp4"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return len(items)


# ----------------------------------------------------------------------------- sampling


def _round(x: float) -> float:
    return round(float(x), 4)


def sample_event(rng: np.random.Generator, colour: str, shape: str, direction: str) -> Event:
    radius = _round(rng.uniform(0.15, 0.2))
    margin = radius + 0.02  # the shape stays inside the frame at both ends of its path
    return Event(
        colour=colour,
        shape=shape,
        direction=direction,
        lane=_round(rng.uniform(margin, 1 - margin)),
        radius=radius,
        low=_round(margin + rng.uniform(0, 0.06)),
        high=_round(1 - margin - rng.uniform(0, 0.06)),
    )


def sample_spec(rng: np.random.Generator) -> ClipSpec:
    """A base clip: two events with different objects (colour or shape differ)."""
    colours, shapes = list(COLOURS), list(SHAPES)
    while True:
        objects = [(colours[rng.integers(len(colours))], shapes[rng.integers(len(shapes))]) for _ in range(2)]
        if objects[0] != objects[1]:
            break
    events = tuple(sample_event(rng, c, s, DIRECTIONS[rng.integers(len(DIRECTIONS))]) for c, s in objects)
    return ClipSpec(events=events, background=int(rng.integers(0, 41)), template=int(rng.integers(len(TEMPLATES))))


def sample_group(rng: np.random.Generator, used: set, kinds: Sequence[str]) -> list[tuple[str, ClipSpec]]:
    """A base clip and one twin per kind, all with contents not yet in ``used``."""
    for _ in range(10_000):
        base = sample_spec(rng)
        which = int(rng.integers(2))
        twins = {"direction": direction_twin(base, which), "order": order_twin(base)}
        group = [("base", base)] + [(f"{k}_twin", twins[k]) for k in kinds]
        keys = [spec.content_key() for _, spec in group]
        if len(set(keys)) == len(keys) and not used.intersection(keys):
            used.update(keys)
            return group
    raise ValueError("ran out of distinct clip contents: ask for fewer videos")


@dataclass(frozen=True)
class Clip:
    video_id: str
    split: str  # "train" | "test"
    role: str  # "base" | "direction_twin" | "order_twin"
    twin_of: str | None  # the base clip's video_id for twins
    spec: ClipSpec


def sample_clips(config: SyntheticConfig) -> list[Clip]:
    """All clips of the dataset: train pairs first, then test triplets (ids video0...)."""
    config.validate()
    rng = np.random.default_rng(config.seed)
    used: set = set()
    groups: list[tuple[str, list[tuple[str, ClipSpec]]]] = []
    for _ in range(config.num_test // 3):  # test first: its contents stay out of train
        groups.append(("test", sample_group(rng, used, ("direction", "order"))))
    test_groups, groups = groups, []
    for _ in range(config.num_train // 2):
        kind = ("direction", "order")[int(rng.integers(2))]
        groups.append(("train", sample_group(rng, used, (kind,))))
    clips: list[Clip] = []
    for split, group in groups + test_groups:
        base_id = f"video{len(clips)}"
        for role, spec in group:
            video_id = f"video{len(clips)}"
            clips.append(Clip(video_id, split, role, None if role == "base" else base_id, spec))
    return clips


# ----------------------------------------------------------------------------- annotation files


def msrvtt_json(clips: Sequence[Clip], config: SyntheticConfig) -> dict:
    duration = config.num_frames / config.fps
    info = {
        "contributor": "synthetic temporal benchmark (synthetic/generate.py)",
        "description": "coloured shapes moving; captions name colour, shape, direction and event order",
        "version": "1.0",
        "seed": config.seed,
    }
    videos = [
        {
            "category": 0,
            "url": f"synthetic:{c.video_id}",
            "video_id": c.video_id,
            "start time": 0.0,
            "end time": duration,
            "split": c.split,
            "id": i,
        }
        for i, c in enumerate(clips)
    ]
    sentences = [{"caption": c.spec.caption(), "video_id": c.video_id, "sen_id": i} for i, c in enumerate(clips)]
    return {"info": info, "videos": videos, "sentences": sentences}


def twin_pairs(clips: Iterable[Clip], split: str) -> list[list[str]]:
    """[base_id, twin_id, kind] for every twin of ``split``; kind in {"direction", "order"}."""
    return [[c.twin_of, c.video_id, c.role.removesuffix("_twin")] for c in clips if c.split == split and c.twin_of]


def meta_json(clips: Sequence[Clip], config: SyntheticConfig) -> dict:
    videos = [
        {
            "video_id": c.video_id,
            "split": c.split,
            "role": c.role,
            "twin_of": c.twin_of,
            "caption": c.spec.caption(),
            "background": c.spec.background,
            "template": c.spec.template,
            "events": [asdict(e) for e in c.spec.events],
        }
        for c in clips
    ]
    return {
        "format": "synthetic-temporal-v1",
        "config": asdict(config),
        "recommended": {
            "datatype": "synthetic",
            "feature_framerate": config.fps,
            "max_frames": config.num_frames,
            "slice_framepos": 0,
            "image_resolution": config.size,
        },
        "files": {"data_path": DATA_JSON, "train_csv": TRAIN_CSV, "val_csv": TEST_CSV, "features_path": "videos"},
        "test_video_ids": [c.video_id for c in clips if c.split == "test"],
        "twin_pairs": {"train": twin_pairs(clips, "train"), "test": twin_pairs(clips, "test")},
        "videos": videos,
    }


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="")


def _csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_annotations(out: Path, clips: Sequence[Clip], config: SyntheticConfig) -> None:
    _write_text(out / DATA_JSON, json.dumps(msrvtt_json(clips, config)))
    _write_text(out / META_FILE, json.dumps(meta_json(clips, config), indent=1))
    train_rows = [[c.video_id] for c in clips if c.split == "train"]
    _write_text(out / TRAIN_CSV, _csv_text(["video_id"], train_rows))
    test = [c for c in clips if c.split == "test"]
    rows = [[f"ret{i}", f"msr{c.video_id.removeprefix('video')}", c.video_id, c.spec.caption()]
            for i, c in enumerate(test)]
    _write_text(out / TEST_CSV, _csv_text(["key", "vid_key", "video_id", "sentence"], rows))


# ----------------------------------------------------------------------------- entry points


def generate(out: str | os.PathLike, config: SyntheticConfig, workers: int | None = None) -> Path:
    """Write the whole dataset under ``out``; returns ``out`` as a Path."""
    out = Path(out)
    video_dir = out / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    clips = sample_clips(config)
    write_annotations(out, clips, config)
    items = [(c.video_id, c.spec) for c in clips]
    workers = max(1, min(workers or os.cpu_count() or 1, len(items) // 64 + 1))
    chunk = max(1, -(-len(items) // (4 * workers)))
    jobs = [(str(video_dir), items[i : i + chunk], config.size, config.event_frames, config.fps)
            for i in range(0, len(items), chunk)]
    if workers == 1:
        done = sum(map(_write_videos, jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = sum(pool.map(_write_videos, jobs))
    logger.info("wrote %d videos (%d train, %d test) to %s", done, config.num_train, config.num_test, out)
    return out


def load_meta(path: str | os.PathLike) -> dict:
    """Read ``synthetic_meta.json`` (``path`` is the file or the dataset folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / META_FILE
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def loader_args(out: str | os.PathLike, config: SyntheticConfig) -> str:
    """Command-line arguments that point ``main_task_retrieval.py`` at the dataset."""
    out = Path(out)
    return (f"--datatype synthetic --data_path {out / DATA_JSON} --train_csv {out / TRAIN_CSV} "
            f"--val_csv {out / TEST_CSV} --features_path {out / 'videos'} "
            f"--feature_framerate {config.fps} --max_frames {config.num_frames} --slice_framepos 0")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = SyntheticConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/synthetic", help="output folder")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--num_train", type=int, default=defaults.num_train, help="train videos (even: base/twin pairs)")
    p.add_argument("--num_test", type=int, default=defaults.num_test, help="test videos (multiple of 3: triplets)")
    p.add_argument("--size", type=int, default=defaults.size, help="frame side in pixels (even, 32..112)")
    p.add_argument("--fps", type=int, default=defaults.fps)
    p.add_argument("--event_frames", type=int, default=defaults.event_frames, help="frames per event (2 events)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    config = SyntheticConfig(seed=args.seed, num_train=args.num_train, num_test=args.num_test,
                             size=args.size, fps=args.fps, event_frames=args.event_frames)
    config.validate()
    start = time.perf_counter()
    out = generate(args.out, config, workers=args.workers)
    logger.info("done in %.1f s; use: %s", time.perf_counter() - start, loader_args(out, config))


if __name__ == "__main__":
    main()
