"""Kill -9 during indexing at named steps, then resume: complete, no duplicate, no lost window;
a reader in between sees the last committed state."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from search.api import open_index
from search.store import IndexStore
from tests.search_helpers import index_in_subprocess, run_index, snapshot_rows, write_coded, write_segments


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_videos")
    write_segments(root / "a.mp4", [("red", 3.0), ("blue", 3.0)])
    write_coded(root / "b.mp4", seconds=4.0)
    write_segments(root / "c.mp4", [("green", 2.5)])
    (root / "d.mp4").write_bytes(b"not a video at all" * 100)
    return root


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    index = tmp_path_factory.mktemp("reference") / "idx"
    run_index([videos], index, commit_windows=1)
    return snapshot_rows(index)


def _shards_on_disk_match_manifest(index) -> bool:
    store = IndexStore(index)
    try:
        named = {n for (n,) in store.conn.execute("SELECT name FROM shards")}
    finally:
        store.close()
    on_disk = {p.name.split(".")[0] for p in (index / "shards").iterdir()}
    return on_disk == named


# commit_windows=1: files are handed over as bad d.mp4 (found when probing), then a, b, c (in path
# order); a commit follows each good file, the bad one rides along with a.
@pytest.mark.parametrize("step, committed", [
    ("after_encode:3", 1),  # b encoded, not committed
    ("after_shard_write:2", 1),  # second shard on disk, its transaction never ran
    ("after_commit:2", 2),  # two commits done
])
def test_kill_then_resume(videos, reference, tmp_path, step, committed):
    index = tmp_path / "idx"
    killed = index_in_subprocess([videos], index, env_extra={"SEARCH_INDEX_KILL_AT": step}, commit_windows=1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    seen = open_index(index)  # a reader after the crash: exactly the committed files
    assert len({v.path for v in seen.videos}) == committed
    partial = snapshot_rows(index)
    assert all(np.array_equal(partial[k], reference[k]) for k in partial)

    summary = run_index([videos], index, commit_windows=1)
    assert summary["encoded_files"] == 3 - committed
    assert len(summary["bad_files"]) + summary["skipped_bad_files"] == 1
    assert [b["path"].rsplit("/", 1)[1] for b in open_index(index).status()["bad_files"]] == ["d.mp4"]
    resumed = snapshot_rows(index)  # asserts no duplicate window
    assert resumed.keys() == reference.keys()
    assert all(np.allclose(resumed[k].astype(np.float32), reference[k].astype(np.float32), atol=2e-3) for k in resumed)
    assert _shards_on_disk_match_manifest(index)  # the orphan shard of the crash is gone
