"""`torchrun --nproc_per_node 2 -m search index` (gloo, CPU) builds the same index as one process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from search.api import open_index
from tests.search_helpers import REPO, TINY_MODEL, WINDOW, python_env, run_index, snapshot_rows, write_coded, write_segments


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_videos")
    write_segments(root / "a.mp4", [("red", 2.0), ("blue", 3.0)])
    write_coded(root / "b.mp4", seconds=3.0)
    write_segments(root / "c" / "c.mp4", [("green", 1.5)])
    write_coded(root / "c" / "d.mp4", seconds=2.5)
    (root / "e.mp4").write_bytes(b"\x00" * 64)
    return root


def torchrun_index(roots, index, nproc: int = 2) -> subprocess.CompletedProcess:
    model_args = []
    for key, value in TINY_MODEL.items():
        model_args += [f"--{key}", str(value)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "search", "index", *map(str, roots), "--index", str(index), "--window", str(WINDOW),
           "--workers", "0", "--batch_windows", "4", "--no_progress", "--json", *model_args]
    return subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=600)


def test_two_ranks_equal_one_process(videos, tmp_path):
    single = tmp_path / "single"
    run_index([videos], single)
    double = tmp_path / "double"
    done = torchrun_index([videos], double)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = snapshot_rows(single), snapshot_rows(double)  # each asserts no duplicate window
    assert one.keys() == two.keys() and len(one) > 0
    for key in one:
        assert np.allclose(one[key].astype(np.float32), two[key].astype(np.float32), atol=2e-3), key
    status = open_index(double).status()
    assert [b["path"] for b in status["bad_files"]] == [str(videos / "e.mp4")]
    assert status["files"] == 4
