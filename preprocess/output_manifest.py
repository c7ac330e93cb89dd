"""Which outputs of ``compress_video`` are proven complete, so a rerun skips exactly those.

A file that merely exists at an output name proves nothing: another tool, an older run or a
crash may have left it truncated, and a truncated MP4 with its index up front still opens and
decodes its first frames. So every finished output gets one JSON line in
``<output_root>/.compress_video_manifest.jsonl``, appended and fsynced right after the output
got its final name::

    {"src": "a/b.webm", "src_size": 123, "src_mtime_ns": 1700000000000000000,
     "dst": "a/b.mp4", "size": 456, "sha256": "...", "settings": {"fps": 3, ...}}

An output is done only when its line matches the source as it is now (size and mtime), the
settings asked for, and the output as it is now (size and SHA-256). Anything else is redone:
no line (never finished, or finished by something else), a torn last line (a crash while
appending), a changed source, other settings, a truncated or replaced output. Later lines win;
:meth:`OutputManifest.compact` rewrites the file atomically with one line per source.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger("compress_video")

MANIFEST_NAME = ".compress_video_manifest.jsonl"


@dataclass(frozen=True)
class Record:
    src: str
    src_size: int
    src_mtime_ns: int
    dst: str
    size: int
    sha256: str
    settings: dict


def sha256_of(path: Path) -> str:
    """Not ``modules.state_dict_utils.sha256_of``: importing that pulls in torch (seconds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse(line: str) -> Record | None:
    try:
        return Record(**json.loads(line))
    except (ValueError, TypeError):  # a torn or foreign line
        return None


class OutputManifest:
    """The manifest of one output folder; :meth:`record` may be called from several threads."""

    def __init__(self, output_root: Path, input_root: Path):
        self.output_root = output_root
        self.input_root = input_root
        self.path = output_root / MANIFEST_NAME
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._untidy = False  # torn, foreign or superseded lines, or no final newline
        if self.path.is_file():
            self._load(self.path.read_text(encoding="utf-8", errors="replace"))

    def _load(self, text: str) -> None:
        lines = [line for line in text.splitlines() if line.strip()]
        unreadable = 0
        for line in lines:
            record = _parse(line)
            if record is None:
                unreadable += 1
            else:
                self._records[record.src] = record
        self._untidy = bool(unreadable) or len(self._records) < len(lines) or not text.endswith("\n")
        if unreadable:
            logger.warning(
                "%s: ignored %d unreadable line(s) (an interrupted write?); their outputs are redone", self.path, unreadable
            )

    def _key(self, src: Path) -> str:
        return src.relative_to(self.input_root).as_posix()

    def is_done(self, src: Path, dst: Path, settings: dict) -> bool:
        record = self._records.get(self._key(src))
        if record is None or record.dst != dst.relative_to(self.output_root).as_posix():
            return False
        try:
            src_stat, dst_stat = src.stat(), dst.stat()
        except OSError:
            return False
        return (
            record.settings == settings
            and (record.src_size, record.src_mtime_ns) == (src_stat.st_size, src_stat.st_mtime_ns)
            and record.size == dst_stat.st_size
            and record.sha256 == sha256_of(dst)
        )

    def record(self, src: Path, dst: Path, settings: dict) -> None:
        """Append the line proving ``dst`` (already at its final name) complete, and fsync it."""
        src_stat = src.stat()
        record = Record(
            src=self._key(src),
            src_size=src_stat.st_size,
            src_mtime_ns=src_stat.st_mtime_ns,
            dst=dst.relative_to(self.output_root).as_posix(),
            size=dst.stat().st_size,
            sha256=sha256_of(dst),
            settings=settings,
        )
        line = json.dumps(asdict(record)) + "\n"  # ASCII: names that are not UTF-8 round-trip
        with self._lock:
            self._records[record.src] = record
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())

    def compact(self) -> None:
        """Rewrite the file with one line per source, atomically, when it holds torn or superseded
        lines (a torn last line would otherwise swallow the next appended one)."""
        if not self._untidy:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with self._lock:
            with open(tmp, "w", encoding="utf-8") as handle:
                for record in self._records.values():
                    handle.write(json.dumps(asdict(record)) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            self._untidy = False
