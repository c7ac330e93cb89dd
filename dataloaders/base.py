"""The shared dataset layer: parsed splits, video lookup, and text/video -> tensors.

A dataset module (``msrvtt.py`` ...) only parses annotation files into a
:class:`RetrievalSplit`: a list of unique videos, a list of captions, and for every caption
the index of its video. Everything else lives here:

- finding video files (a one-pass index of a folder tree, cached per root), the rule that
  no video id or path may leave the video folder (checked lexically: symbolic links inside
  it are followed), the missing-video policy (one clear error, or
  ``--allow_missing_videos`` to drop and log) and the empty-split error;
- annotation-reading helpers (every text file read as UTF-8, a BOM accepted) that raise
  :class:`AnnotationError` naming the file and the line, row or key;
- the torch datasets: :class:`TrainPairDataset` (caption/video pairs for training),
  :class:`TextDataset` and :class:`VideoDataset` (evaluation: every caption once, every
  video decoded once; CLIP4Clip decoded a video again for each of its captions).

Multi-caption bookkeeping follows CLIP4Clip's loaders: ``cut_off_points`` holds, for each
video, the number of captions up to and including that video's (CLIP4Clip's eval loop uses
``cut_off_points - 1`` as the last caption of each video); ``sentence_num`` and
``video_num`` are the totals.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dataloaders.video_reader import VideoDecodeError, read_clip
from modules.tokenization_clip import get_tokenizer, tokenize_caption

logger = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")
# Preferred extensions when one stem has several files (e.g. ``x.mp4`` and ``x.webm``).
VIDEO_EXTENSIONS = (
    ".mp4", ".avi", ".webm", ".mkv", ".m4v", ".mov", ".mpg", ".mpeg", ".3gp", ".3gpp",
    ".wmv", ".flv", ".mts", ".m2ts", ".ts", ".ogv", ".dv", ".vob",
)
MAX_IDS_IN_MESSAGE = 10
MAX_REPLACEMENT_ATTEMPTS = 10


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and the row or key."""


class MissingVideosError(FileNotFoundError):
    """Videos referenced by the annotations are not on disk (message: count, first ids)."""


# --------------------------------------------------------------------------- data model


@dataclass
class VideoItem:
    """One video (or clip of a video) to encode. ``start``/``end`` in seconds; None = bound of the file."""

    video_id: str
    path: Path
    start: float | None = None
    end: float | None = None


class SplitReport(Protocol):
    """Extra metrics only the dataset knows how to compute (the synthetic benchmark's temporal twins).

    The engine calls ``report(sim)`` with the split's [captions, videos] score matrix (rows
    and columns in the split's order) and, when it returns a dict, stores it in the results
    JSON under ``name`` and logs ``format(that dict)``. None means nothing to report.
    """

    name: str

    def __call__(self, sim: np.ndarray) -> dict | None: ...

    def format(self, report: dict) -> str: ...


class BatchSamplerFactory(Protocol):
    """A dataset's own batch sampler for training (``--twin_batches``): yields lists of item
    indices, ``batch_size`` per rank, given the video id of every training item."""

    def __call__(self, item_videos: Sequence[str], *, batch_size: int, num_replicas: int, rank: int,
                 seed: int) -> Sampler[list[int]]: ...


@dataclass
class RetrievalSplit:
    """A parsed split: unique videos, captions, and ``caption_video[i]`` = video of caption i.

    ``sample_unit`` says what one training item is: ``"caption"`` (one item per caption,
    the usual case) or ``"video"`` (one item per video with a caption drawn at random each
    time; MSR-VTT training without ``--expand_msrvtt_sentences``, as CLIP4Clip does).
    Evaluation ignores it. ``report`` and ``batch_sampler`` are optional hooks a dataset
    attaches (see :class:`SplitReport`, :class:`BatchSamplerFactory`); the engine uses them
    without knowing what they are.
    """

    name: str
    videos: list[VideoItem]
    captions: list[str]
    caption_video: np.ndarray
    sample_unit: str = "caption"
    report: SplitReport | None = field(default=None, repr=False, compare=False)
    batch_sampler: BatchSamplerFactory | None = field(default=None, repr=False, compare=False)
    _by_video: list[np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.caption_video = np.asarray(self.caption_video, dtype=np.int64).reshape(-1)
        if len(self.caption_video) != len(self.captions):
            raise ValueError(
                f"{self.name}: {len(self.captions)} captions but {len(self.caption_video)} caption_video entries"
            )
        if len(self.caption_video) and (self.caption_video.min() < 0 or self.caption_video.max() >= len(self.videos)):
            raise ValueError(f"{self.name}: caption_video holds indices outside [0, {len(self.videos)})")
        if self.sample_unit not in ("caption", "video"):
            raise ValueError(f"{self.name}: sample_unit must be 'caption' or 'video', got {self.sample_unit!r}")

    @property
    def video_ids(self) -> list[str]:
        return [v.video_id for v in self.videos]

    @property
    def video_num(self) -> int:
        return len(self.videos)

    @property
    def sentence_num(self) -> int:
        return len(self.captions)

    @property
    def captions_per_video(self) -> np.ndarray:
        return np.bincount(self.caption_video, minlength=len(self.videos))

    @property
    def multi_sentence_per_video(self) -> bool:
        """True unless every video has exactly one caption (then eval is 1:1)."""
        return bool(np.any(self.captions_per_video != 1))

    @property
    def is_grouped(self) -> bool:
        """Captions of each video are contiguous and videos appear in order."""
        return bool(np.all(np.diff(self.caption_video) >= 0))

    @property
    def cut_off_points(self) -> list[int]:
        """CLIP4Clip's ``cut_off_points``: cumulative caption count after each video."""
        if not self.is_grouped:
            raise ValueError(f"{self.name}: captions are not grouped by video; cut_off_points undefined")
        return np.cumsum(self.captions_per_video).tolist()

    def captions_of(self, video_index: int) -> np.ndarray:
        """Indices of the captions of one video."""
        if self._by_video is None:
            order = np.argsort(self.caption_video, kind="stable")
            bounds = np.cumsum(self.captions_per_video)[:-1]
            self._by_video = np.split(order, bounds) if len(self.videos) else []
        return self._by_video[video_index]


@dataclass
class VideoGroup:
    """A video as a dataset module found it, before the missing-video check.

    ``path`` is None when the lookup found no file.
    """

    video_id: str
    path: Path | None
    captions: list[str]
    start: float | None = None
    end: float | None = None


def finalize_split(
    name: str,
    groups: Sequence[VideoGroup],
    *,
    root: Path,
    source: Path | str,
    allow_missing: bool,
    searched: str,
    sample_unit: str = "caption",
) -> RetrievalSplit:
    """Check the split is safe, not empty and complete, then build it (captions grouped by video).

    ``root`` is the video folder (``--features_path``) and ``source`` the annotation file that
    names the split's videos: a video id or path leaving ``root`` is refused
    (:func:`refuse_escaping_videos`), and an empty split is an :class:`AnnotationError` naming
    ``source`` (it would otherwise fail much later, inside the model's loops). Missing videos
    raise one :class:`MissingVideosError` with their count and first ids, or with
    ``allow_missing`` are dropped together with their captions and the count is logged.
    ``searched`` says where videos were looked for (for the message).
    """
    refuse_escaping_videos(groups, root, source)
    if not groups:
        raise AnnotationError(f"{source}: no captions for the {name} split")
    missing = [g for g in groups if g.path is None or not g.path.is_file()]
    if missing:
        ids = ", ".join(g.video_id for g in missing[:MAX_IDS_IN_MESSAGE])
        more = " ..." if len(missing) > MAX_IDS_IN_MESSAGE else ""
        summary = f"{name}: {len(missing)} of {len(groups)} videos not found in {searched} (first: {ids}{more})"
        if not allow_missing:
            raise MissingVideosError(summary + "; pass --allow_missing_videos to drop them and their captions")
        if len(missing) == len(groups):
            raise MissingVideosError(summary + "; no video is left to use")
        dropped_captions = sum(len(g.captions) for g in missing)
        logger.warning("%s; dropped with their %d captions (--allow_missing_videos)", summary, dropped_captions)
        missing_ids = {id(g) for g in missing}
        groups = [g for g in groups if id(g) not in missing_ids]
    return build_split(name, groups, sample_unit=sample_unit)


def build_split(name: str, groups: Sequence[VideoGroup], *, sample_unit: str = "caption") -> RetrievalSplit:
    videos: list[VideoItem] = []
    captions: list[str] = []
    caption_video: list[int] = []
    for g in groups:
        if g.path is None:
            raise ValueError(f"{name}: video {g.video_id} has no path")
        caption_video.extend([len(videos)] * len(g.captions))
        captions.extend(g.captions)
        videos.append(VideoItem(g.video_id, g.path, g.start, g.end))
    split = RetrievalSplit(name, videos, captions, np.asarray(caption_video, dtype=np.int64), sample_unit)
    logger.info("%s: %d videos, %d captions", name, split.video_num, split.sentence_num)
    return split


def warn_uncaptioned(name: str, ids: Sequence[str], source: Path | str) -> None:
    """Ids listed in a split file that have no annotation are skipped, but never silently."""
    if ids:
        first = ", ".join(ids[:MAX_IDS_IN_MESSAGE])
        more = " ..." if len(ids) > MAX_IDS_IN_MESSAGE else ""
        logger.warning("%s: %d listed videos have no captions in %s and are skipped (first: %s%s)",
                       name, len(ids), source, first, more)


def check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")


# --------------------------------------------------------------------------- video lookup


class VideoIndex:
    """Files under a root, looked up by stem or by full name (one ``os.walk`` pass).

    When one stem names several files the one with the most preferred extension
    (:data:`VIDEO_EXTENSIONS` order, unknown extensions last) wins, then the shortest path.
    Hidden files are ignored. Symbolic links to folders are followed.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._by_stem: dict[str, list[Path]] = {}
        self._by_name: dict[str, list[Path]] = {}
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in filenames:
                if fname.startswith("."):
                    continue
                path = Path(dirpath, fname)
                stem, _ = os.path.splitext(fname)
                self._by_stem.setdefault(stem, []).append(path)
                self._by_name.setdefault(fname, []).append(path)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_name.values())

    @staticmethod
    def _best(paths: list[Path] | None) -> Path | None:
        if not paths:
            return None

        def rank(p: Path) -> tuple[int, int, str]:
            ext = p.suffix.lower()
            pref = VIDEO_EXTENSIONS.index(ext) if ext in VIDEO_EXTENSIONS else len(VIDEO_EXTENSIONS)
            return pref, len(p.parts), str(p)

        return min(paths, key=rank)

    def by_stem(self, stem: str) -> Path | None:
        return self._best(self._by_stem.get(stem))

    def by_name(self, name: str) -> Path | None:
        return self._best(self._by_name.get(name))

    def find(self, *keys: str) -> Path | None:
        """First hit over ``keys``, each tried as a full file name, then as a stem."""
        for key in keys:
            hit = self.by_name(key) or self.by_stem(key)
            if hit is not None:
                return hit
        return None


def escapes_folder(root: Path, path: Path | str) -> bool:
    """True when ``path`` (taken relative to ``root``) lies outside ``root``.

    Lexical: ``..`` components are collapsed and an absolute path is taken as it is, but
    symbolic links are not followed. So an annotation cannot name a file outside the video
    folder, while links the folder's owner put inside it (a symlinked file or sub-folder
    pointing to another disk, a common way to assemble a dataset) keep working.
    """
    base = os.path.abspath(root)
    target = os.path.abspath(os.path.join(base, path))
    return os.path.commonpath([base, target]) != base


def refuse_escaping_videos(groups: Sequence[VideoGroup], root: Path, source: Path | str) -> None:
    """An :class:`AnnotationError` naming ``source`` and the id when a video id, or the path
    it was turned into, leaves the video folder ``root`` (``../../x``, ``/etc/x``)."""
    for g in groups:
        if escapes_folder(root, g.video_id):
            raise AnnotationError(f"{source}: video id {g.video_id!r} leaves the video folder {root} "
                                  "(--features_path); refused")
        if g.path is not None and escapes_folder(root, g.path):
            raise AnnotationError(f"{source}: the path {str(g.path)!r} of video {g.video_id!r} is outside the "
                                  f"video folder {root} (--features_path); refused")


_INDEX_CACHE: dict[str, VideoIndex] = {}
_INDEX_LOCK = threading.Lock()


def video_index(root: Path | str) -> VideoIndex:
    """The :class:`VideoIndex` of ``root``, built once per process and root.

    Files added after the first call are not seen; call :func:`clear_video_index_cache`.
    """
    key = os.path.realpath(os.fspath(root))
    with _INDEX_LOCK:
        index = _INDEX_CACHE.get(key)
        if index is None:
            index = VideoIndex(root)
            _INDEX_CACHE[key] = index
            logger.info("indexed %d files under %s", len(index), root)
        return index


def clear_video_index_cache() -> None:
    with _INDEX_LOCK:
        _INDEX_CACHE.clear()


def first_existing(*paths: Path) -> Path | None:
    for p in paths:
        if p.is_file():
            return p
    return None


# --------------------------------------------------------------------------- annotation helpers


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_text(path: Path, what: str) -> str:
    """A UTF-8 annotation file's text, a leading byte-order mark dropped.

    Every CSV, TXT and JSON reader goes through here, so a file in another encoding is one
    :class:`AnnotationError` naming the file, line and byte (not a bare UnicodeDecodeError),
    and a BOM (spreadsheet exports) never becomes part of the first header or id.
    """
    require_file(path, what)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raw = e.object  # the bytes after the BOM, if there was one
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - raw.rfind(b"\n", 0, e.start)
        raise AnnotationError(
            f"{path}: line {line}, byte {column}: not UTF-8 (0x{raw[e.start]:02x}); save the file as UTF-8"
        ) from None


def text_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (``\\n``, ``\\r\\n`` or ``\\r`` ends, removed)."""
    return [line.rstrip("\n") for line in io.StringIO(read_text(path, what), newline=None)]


def csv_text(path: Path, what: str) -> io.StringIO:
    """A UTF-8 CSV file as the text stream the ``csv`` module wants (``newline=""``)."""
    return io.StringIO(read_text(path, what), newline="")


def load_json(path: Path, what: str) -> Any:
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from e


def read_id_list(path: Path, what: str) -> list[str]:
    """One id per line; blank lines skipped; duplicates kept once (first position)."""
    return list(dict.fromkeys(vid for vid in (line.strip() for line in text_lines(path, what)) if vid))


def require_string_id(value: Any, where: str, listed: Sequence[str], list_file: Path | str) -> str:
    """A video id read from JSON (or a pickle) that must match the string ids of ``list_file``.

    A JSON number never equals a text id (``7 != "7"``): without this check every entry is
    silently unmatched and the split comes out empty ("no training pairs").
    """
    if isinstance(value, str):
        return value
    kind = "a number" if isinstance(value, (int, float)) else f"of type {type(value).__name__}"
    example = f" such as {listed[0]!r}" if listed else ""
    raise AnnotationError(
        f"{where}: video ids differ in type: the id {value!r} here is {kind}, while the ids in {list_file} "
        f"are strings{example}; write the ids as strings"
    )


def captions_by_id(entries: Any, path: Path, where: str, keys: tuple[str, str], listed: Sequence[str],
                   list_file: Path) -> dict[str, list[str]]:
    """Captions per video id from a JSON list of entries (``keys`` = (id key, caption key)),
    keeping only the ids ``listed`` in ``list_file``, in the JSON's order."""
    if not isinstance(entries, list):
        raise AnnotationError(f"{path}: expected a JSON list of annotations ({where.strip()})")
    id_key, caption_key = keys
    keep = set(listed)
    out: dict[str, list[str]] = {}
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        video = require_string_id(get_key(entry, id_key, path, at), f"{path}: {at}", listed, list_file)
        caption = get_key(entry, caption_key, path, at)
        if video in keep:
            out.setdefault(video, []).append(clean_caption(caption, path, at))
    return out


def get_key(obj: Any, key: str, path: Path, where: str) -> Any:
    """``obj[key]``, or an AnnotationError naming the file, the entry and the key."""
    if not isinstance(obj, dict):
        raise AnnotationError(f"{path}: {where} should be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise AnnotationError(f"{path}: {where} has no key '{key}'")
    return obj[key]


def clean_caption(text: Any, path: Path, where: str) -> str:
    """A non-empty caption string, or an AnnotationError naming the file and entry."""
    if not isinstance(text, str):
        raise AnnotationError(f"{path}: {where}: caption should be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise AnnotationError(f"{path}: {where}: empty caption")
    return text


# --------------------------------------------------------------------------- torch datasets


def _text_tensors(tokenizer: Any, text: str, max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = tokenize_caption(tokenizer, text, max_words)
    return torch.as_tensor(ids, dtype=torch.int64), torch.as_tensor(mask, dtype=torch.int64)


def _default_tokenizer(tokenizer: Any) -> Any:
    return tokenizer if tokenizer is not None else get_tokenizer()


def _default_reader(reader: Callable | None) -> Callable:
    return reader if reader is not None else read_clip


def _video_tensors(reader: Callable, item: VideoItem, sampling: Any, rng: np.random.Generator):
    video, mask = reader(item.path, start=item.start, end=item.end, sampling=sampling, rng=rng)
    return torch.as_tensor(video, dtype=torch.float32), torch.as_tensor(mask, dtype=torch.int64)


class TrainPairDataset(Dataset):
    """Training pairs: item i -> one caption and its video as tensors.

    Items are indexed by *pair*: with ``split.sample_unit == "caption"`` pair i is caption
    i; with ``"video"`` pair i is video i with one of its captions drawn at random each
    time (torch's global generator, which DataLoader seeds per worker: CLIP4Clip's MSR-VTT
    behaviour without ``--expand_msrvtt_sentences``). ``pair_video_ids``,
    ``pair_video_index`` and ``pair_captions`` describe every pair so a batch sampler can
    group pairs (e.g. the synthetic benchmark's "twin" hard negatives).

    Decode failures: by default a :class:`~dataloaders.video_reader.VideoDecodeError`
    propagates. With ``skip_bad_videos=True`` the pair is replaced by another one, chosen
    deterministically by ``numpy.random.default_rng((seed, index, attempt))``, up to
    ``MAX_REPLACEMENT_ATTEMPTS`` tries. The item's ``replaced`` entry counts the failed
    decodes behind it (0 normally), so the training loop can sum ``batch["replaced"]`` over
    an epoch: this works with any number of DataLoader workers, unlike a counter on the
    dataset object would.

    Item: ``input_ids``, ``input_mask`` int64 [max_words]; ``video`` float32
    [max_frames, 3, S, S]; ``video_mask`` int64 [max_frames]; ``video_index`` (into
    ``split.videos``), ``index`` (the pair actually returned), ``replaced``: int64 scalars.
    """

    def __init__(
        self,
        split: RetrievalSplit,
        tokenizer: Any,
        sampling: Any,
        max_words: int,
        *,
        skip_bad_videos: bool = False,
        seed: int = 0,
        reader: Callable | None = None,
    ):
        if split.sentence_num == 0:
            raise ValueError(f"{split.name}: no training pairs")
        self.split = split
        self.tokenizer = _default_tokenizer(tokenizer)
        self.sampling = sampling
        self.max_words = max_words
        self.skip_bad_videos = skip_bad_videos
        self.seed = seed
        self.reader = _default_reader(reader)
        if split.sample_unit == "video":
            counts = split.captions_per_video
            if np.any(counts == 0):
                raise ValueError(f"{split.name}: video {split.video_ids[int(np.argmin(counts))]} has no caption")
            self.pair_video_index = np.arange(split.video_num, dtype=np.int64)
        else:
            self.pair_video_index = split.caption_video.copy()

    def __len__(self) -> int:
        return len(self.pair_video_index)

    @property
    def pair_video_ids(self) -> list[str]:
        ids = self.split.video_ids
        return [ids[i] for i in self.pair_video_index]

    @property
    def pair_captions(self) -> list[list[str]]:
        """The caption(s) pair i may use: one, or all of its video's in "video" mode."""
        caps = self.split.captions
        if self.split.sample_unit == "caption":
            return [[c] for c in caps]
        return [[caps[j] for j in self.split.captions_of(v)] for v in range(self.split.video_num)]

    def _caption(self, index: int) -> str:
        if self.split.sample_unit == "caption":
            return self.split.captions[index]
        options = self.split.captions_of(index)
        pick = int(torch.randint(len(options), ()).item()) if len(options) > 1 else 0
        return self.split.captions[options[pick]]

    def _load(self, index: int) -> dict[str, torch.Tensor]:
        vidx = int(self.pair_video_index[index])
        item = self.split.videos[vidx]
        # A fresh per-call seed keeps frame_order=2 (shuffle) random across epochs.
        rng = np.random.default_rng(int(torch.randint(2**62, ()).item()))
        video, video_mask = _video_tensors(self.reader, item, self.sampling, rng)
        input_ids, input_mask = _text_tensors(self.tokenizer, self._caption(index), self.max_words)
        return {
            "input_ids": input_ids,
            "input_mask": input_mask,
            "video": video,
            "video_mask": video_mask,
            "video_index": torch.tensor(vidx, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def replacement_index(self, index: int, attempt: int) -> int:
        """The pair that stands in for ``index`` after its ``attempt``-th failure (never itself)."""
        n = len(self)
        if n < 2:
            raise RuntimeError(f"{self.split.name}: cannot replace a bad video in a one-pair dataset")
        rng = np.random.default_rng((self.seed, index, attempt))
        j = int(rng.integers(n - 1))
        return j if j < index else j + 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        current, failures = int(index), 0
        while True:
            try:
                out = self._load(current)
            except VideoDecodeError as e:
                if not self.skip_bad_videos:
                    raise
                failures += 1
                logger.warning("skipping undecodable video (pair %d): %s", current, e)
                if failures > MAX_REPLACEMENT_ATTEMPTS:
                    raise RuntimeError(
                        f"{self.split.name}: {failures} undecodable videos in a row while replacing pair {index}"
                    ) from e
                current = self.replacement_index(int(index), failures)
                continue
            out["replaced"] = torch.tensor(failures, dtype=torch.int64)
            return out


class TextDataset(Dataset):
    """Every caption of a split once: ``input_ids``, ``input_mask`` [max_words], ``index``, ``video_index``."""

    def __init__(self, split: RetrievalSplit, tokenizer: Any, max_words: int):
        self.split = split
        self.tokenizer = _default_tokenizer(tokenizer)
        self.max_words = max_words

    def __len__(self) -> int:
        return self.split.sentence_num

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        input_ids, input_mask = _text_tensors(self.tokenizer, self.split.captions[index], self.max_words)
        return {
            "input_ids": input_ids,
            "input_mask": input_mask,
            "index": torch.tensor(index, dtype=torch.int64),
            "video_index": torch.tensor(int(self.split.caption_video[index]), dtype=torch.int64),
        }


class VideoDataset(Dataset):
    """Every video of a split once: ``video`` [max_frames, 3, S, S], ``video_mask``, ``index``.

    Never skips: a decode failure raises, since a dropped video would silently change the
    metric. ``frame_order=2`` shuffles with a generator seeded by ``(seed, index)``, so
    evaluation is reproducible.
    """

    def __init__(self, split: RetrievalSplit, sampling: Any, *, seed: int = 0, reader: Callable | None = None):
        self.split = split
        self.sampling = sampling
        self.seed = seed
        self.reader = _default_reader(reader)

    def __len__(self) -> int:
        return self.split.video_num

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        video, video_mask = _video_tensors(self.reader, self.split.videos[index], self.sampling, rng)
        return {"video": video, "video_mask": video_mask, "index": torch.tensor(index, dtype=torch.int64)}
