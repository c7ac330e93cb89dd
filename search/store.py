"""The index on disk: a SQLite manifest plus immutable shards of window vectors.

Layout of an index folder::

    index.sqlite           manifest (WAL mode): meta, files, shards, windows
    shards/<name>.npy      float16 [rows, dim], L2-normalised window vectors
    shards/<name>.csv      the same rows' metadata: row, video_id, path, start, end (pandas reads it)
    indexer.lock           held by the one indexing job that may write

Atomicity. A shard's two files are written under temporary names, fsynced and renamed into
place first; then one SQLite transaction records the shard, the windows of its files (old
windows of a changed file go in the same transaction) and the files' status. A crash before
the transaction leaves an orphan shard that no row names (removed by the next indexing run);
a crash after it leaves a complete commit. Readers take every row from one read transaction
(WAL gives them a consistent snapshot) and only ever open shards that a committed row names,
so a query running during indexing sees the last committed state.

Window ids are SQLite row ids: stable across runs, never reused for another window.
"""

from __future__ import annotations

import csv
import datetime as _dt
import fcntl
import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
DB_FILE = "index.sqlite"
SHARDS_DIR = "shards"
LOCK_FILE = "indexer.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    video_id TEXT PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER, mtime_ns INTEGER, sha256 TEXT,
    status TEXT NOT NULL, error TEXT, duration REAL, num_windows INTEGER NOT NULL DEFAULT 0, indexed_at TEXT);
CREATE TABLE IF NOT EXISTS shards (
    shard_id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL, rows INTEGER NOT NULL, created TEXT);
CREATE TABLE IF NOT EXISTS windows (
    window_id INTEGER PRIMARY KEY AUTOINCREMENT, video_id TEXT NOT NULL, shard_id INTEGER NOT NULL,
    row INTEGER NOT NULL, start_s REAL NOT NULL, end_s REAL NOT NULL);
CREATE INDEX IF NOT EXISTS windows_video ON windows(video_id);
CREATE INDEX IF NOT EXISTS windows_shard ON windows(shard_id);
"""


_FILES_QUERY = "SELECT video_id, path, size, mtime_ns, sha256, status, error, duration, num_windows, indexed_at FROM files"


def _dicts(cursor: sqlite3.Cursor) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class SearchIndexError(RuntimeError):
    """An index folder that cannot be used as asked (the message says why)."""


class IndexBusyError(SearchIndexError):
    """Another indexing job holds the index."""


def video_id_of(path: str | os.PathLike) -> str:
    """Stable id of a file in an index: a hash of its absolute path."""
    return hashlib.sha1(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class FileRecord:
    """One file's outcome, committed with its windows (status "done") or its reason ("bad")."""

    path: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    status: str
    error: str | None = None
    duration: float | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)
    vectors: np.ndarray | None = None

    @property
    def video_id(self) -> str:
        return video_id_of(self.path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def connect(db_path: Path, timeout: float = 60.0) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db_path), timeout=timeout, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE"):
    conn.execute(f"BEGIN {mode}")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class IndexStore:
    """Read and write access to one index folder."""

    def __init__(self, root: str | os.PathLike, create: bool = False):
        self.root = Path(root).expanduser().resolve()
        self.db_path = self.root / DB_FILE
        if not self.db_path.is_file():
            if not create:
                raise SearchIndexError(f"{self.root} is not a search index (no {DB_FILE}); build one with "
                                  f"`python -m search index DIR --index {self.root}`")
            (self.root / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        self.conn = connect(self.db_path)
        if create:
            self.conn.executescript(_SCHEMA)
            with transaction(self.conn):
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
        self._check_version()

    def _check_version(self) -> None:
        version = self.get_meta("format_version")
        if version is None or int(version) != FORMAT_VERSION:
            raise SearchIndexError(f"{self.root}: index format {version}, this code reads {FORMAT_VERSION}")

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row and key != "format_version" else (row[0] if row else default)

    def set_meta(self, **values) -> None:
        with transaction(self.conn):
            for key, value in values.items():
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------------ locking (writers)
    @contextmanager
    def writer_lock(self):
        """Exclusive right to index this folder (released when the process dies)."""
        handle = open(self.root / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise IndexBusyError(f"{self.root}: another `search index` run is writing this index; wait for it "
                                 f"to finish (a query is always allowed)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # ------------------------------------------------------------------ manifest
    def files(self) -> dict[str, dict]:
        """Every file in the manifest (done and bad), by path."""
        return {row["path"]: row for row in _dicts(self.conn.execute(_FILES_QUERY))}

    def update_stat(self, path: str, size: int, mtime_ns: int) -> None:
        """A touched file whose content hash did not change: keep its windows."""
        with transaction(self.conn):
            self.conn.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def drop_files(self, paths: Iterable[str]) -> int:
        """Forget deleted files and their windows (one transaction)."""
        paths = list(paths)
        with transaction(self.conn):
            for path in paths:
                vid = video_id_of(path)
                self.conn.execute("DELETE FROM windows WHERE video_id = ?", (vid,))
                self.conn.execute("DELETE FROM files WHERE video_id = ?", (vid,))
            if paths:
                self._bump_generation()
        return len(paths)

    def _bump_generation(self) -> None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(int(row[0]) + 1 if row else 1),))

    # ------------------------------------------------------------------ commit
    def _write_shard(self, records: list[FileRecord]) -> tuple[str, int]:
        name = f"shard-{uuid.uuid4().hex[:16]}"
        folder = self.root / SHARDS_DIR
        vectors = np.concatenate([r.vectors for r in records]).astype(np.float16)
        tmp_npy, tmp_csv = folder / f".{name}.npy.tmp", folder / f".{name}.csv.tmp"
        with open(tmp_npy, "wb") as f:
            np.save(f, vectors)
        with open(tmp_csv, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "video_id", "path", "start", "end"])
            row = 0
            for record in records:
                for start, end in record.windows:
                    writer.writerow([row, record.video_id, record.path, f"{start:.6f}", f"{end:.6f}"])
                    row += 1
        for tmp in (tmp_npy, tmp_csv):
            _fsync(tmp)
        os.replace(tmp_csv, folder / f"{name}.csv")
        os.replace(tmp_npy, folder / f"{name}.npy")
        _fsync(folder)
        return name, len(vectors)

    def commit(self, records: list[FileRecord], before_transaction=None) -> None:
        """Write the done files' vectors as one shard, then record everything in one transaction."""
        done = [r for r in records if r.status == "done"]
        shard = self._write_shard(done) if done else None
        if before_transaction is not None:
            before_transaction()
        now = _now()
        with transaction(self.conn):
            shard_id = None
            if shard is not None:
                cur = self.conn.execute("INSERT INTO shards (name, rows, created) VALUES (?, ?, ?)", (*shard, now))
                shard_id = cur.lastrowid
            row = 0
            for r in records:
                self.conn.execute("DELETE FROM windows WHERE video_id = ?", (r.video_id,))
                self.conn.execute(
                    "INSERT OR REPLACE INTO files (video_id, path, size, mtime_ns, sha256, status, error, duration, "
                    "num_windows, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.video_id, r.path, r.size, r.mtime_ns, r.sha256, r.status, r.error, r.duration,
                     len(r.windows) if r.status == "done" else 0, now))
                if r.status != "done":
                    continue
                self.conn.executemany(
                    "INSERT INTO windows (video_id, shard_id, row, start_s, end_s) VALUES (?, ?, ?, ?, ?)",
                    [(r.video_id, shard_id, row + i, s, e) for i, (s, e) in enumerate(r.windows)])
                row += len(r.windows)
            self._bump_generation()

    # ------------------------------------------------------------------ housekeeping (under the writer lock)
    def remove_unused_shards(self) -> int:
        """Delete shard files no committed row needs: orphans of a crash, and shards whose
        windows all belong to deleted or re-indexed files."""
        removed = 0
        with transaction(self.conn):
            dead = self.conn.execute("SELECT shard_id, name FROM shards WHERE shard_id NOT IN "
                                     "(SELECT DISTINCT shard_id FROM windows)").fetchall()
            self.conn.executemany("DELETE FROM shards WHERE shard_id = ?", [(d[0],) for d in dead])
        known = {name for (name,) in self.conn.execute("SELECT name FROM shards")}
        for path in (self.root / SHARDS_DIR).iterdir():
            stem = path.name.lstrip(".").split(".")[0]
            if stem not in known:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> dict:
        """Everything a reader needs, from one read transaction: meta, done files, and every
        window (ordered by video, then start) with the shard row that holds its vector."""
        with transaction(self.conn, "DEFERRED"):
            meta = {k: (json.loads(v) if k != "format_version" else v)
                    for k, v in self.conn.execute("SELECT key, value FROM meta")}
            files = _dicts(self.conn.execute(_FILES_QUERY + " ORDER BY path"))
            windows = self.conn.execute(
                "SELECT w.window_id, w.video_id, s.name, w.row, w.start_s, w.end_s FROM windows w "
                "JOIN shards s ON s.shard_id = w.shard_id JOIN files f ON f.video_id = w.video_id "
                "ORDER BY f.path, w.start_s").fetchall()
        return {"meta": meta, "files": files, "windows": windows}

    def shard_path(self, name: str) -> Path:
        return self.root / SHARDS_DIR / f"{name}.npy"

    def size_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
