"""Indexing and querying on generated videos with a tiny random model (in-process, no workers
unless said): ranges on known content, incremental updates, bad files, model mismatch, CLI."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from search.api import open_index
from search.models import SearchModelError, build_spec
from search.store import SearchIndexError
from tests.search_helpers import TINY_MODEL, run_index, snapshot_rows, write_coded, write_segments

# red 0-4 s, blue 4-8 s, red 8-12 s, green 12-14 s
SEGMENTS = [("red", 4.0), ("blue", 4.0), ("red", 4.0), ("green", 2.0)]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    write_segments(root / "colours.mp4", SEGMENTS)
    write_coded(root / "sub" / "coded.mp4", seconds=5.0)
    write_segments(root / "short.mkv", [("white", 1.0)])
    (root / "notes.txt").write_text("not a video")
    (root / "broken.mp4").write_bytes(os.urandom(4096))
    good = (root / "sub" / "coded.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="module")
def built(library, tmp_path_factory):
    index = tmp_path_factory.mktemp("index") / "idx"
    summary = run_index([library], index)
    return index, summary


def test_summary_lists_bad_files_and_ignores_other_files(built, library):
    _, summary = built
    assert summary["encoded_files"] == 3
    bad = {os.path.basename(b["path"]): b["error"] for b in summary["bad_files"]}
    assert set(bad) == {"broken.mp4", "truncated.mp4"}
    assert "not a readable video" in bad["broken.mp4"]
    assert all(b for b in bad.values())
    # 14 s of colours: windows 0-2 ... 12-14 (13 windows); 5 s coded: 4; 1 s: 1
    assert summary["encoded_windows"] == 13 + 4 + 1


def test_status_reports_files_windows_bad_and_stale(built, library):
    index, _ = built
    status = open_index(index).status()
    assert (status["files"], status["windows"]) == (3, 18)
    assert {os.path.basename(b["path"]) for b in status["bad_files"]} == {"broken.mp4", "truncated.mp4"}
    assert status["stale"] == {"new": [], "changed": [], "missing": []}
    assert status["size_bytes"] > 0 and "seqTransf" in status["model"]["description"]
    assert status["plan"] == {"window": 2.0, "stride": 1.0, "max_frames": 4}


def test_query_by_window_finds_the_same_content_as_merged_ranges(built, library):
    """A pure red window as the query: the red stretches come back as ranges."""
    index = open_index(built[0])
    colours = next(v for v in index.videos if v.path.endswith("colours.mp4"))
    red_row = next(r for r in range(colours.first, colours.last) if index.starts[r] == 1.0)  # window 1-3 s: red
    results = index.query_by_window(int(index.window_ids[red_row]), top=3, per_video=3, timeline=True)
    first = results[0]
    assert first["path"] == colours.path and first["rank"] == 1
    assert first["score"] == pytest.approx(1.0, abs=1e-2)
    spans = [(r["start"], r["end"]) for r in first["ranges"]]
    assert any(s <= 0.0 and e >= 4.0 for s, e in spans)  # the first red stretch, whole
    assert any(s <= 8.0 and e >= 12.0 for s, e in spans)  # the second one
    assert all(not (s >= 4.0 and e <= 8.0) for s, e in spans)  # nothing inside the blue stretch alone
    assert len(first["timeline"]) == 13
    assert set(first) == {"rank", "video_id", "path", "duration", "score", "ranges", "timeline"}
    assert first["duration"] == pytest.approx(14.0)
    assert index.video_file(first["video_id"]) == __import__("pathlib").Path(colours.path)
    with pytest.raises(KeyError):
        index.video_file("not-a-video-id")


def test_text_query_returns_contract_objects(built):
    index = open_index(built[0])
    results = index.query("a red square moves left", top=2, per_video=2)
    assert [r["rank"] for r in results] == [1, 2]
    assert results[0]["score"] >= results[1]["score"]
    for r in results:
        assert 1 <= len(r["ranges"]) <= 2 and r["score"] == r["ranges"][0]["score"]
        assert "timeline" not in r
        json.dumps(r)
    with pytest.raises(ValueError):
        index.query("   ")


def test_incremental_add_change_touch_delete(library, tmp_path):
    root = tmp_path / "videos"
    shutil.copytree(library, root, ignore=shutil.ignore_patterns("broken.mp4", "truncated.mp4"))
    index = tmp_path / "idx"
    first = run_index([root], index)
    before = snapshot_rows(index)
    assert first["encoded_files"] == 3

    again = run_index([root], index)
    assert (again["encoded_files"], again["unchanged_files"]) == (0, 3)
    assert snapshot_rows(index).keys() == before.keys()

    write_coded(root / "new.mp4", seconds=3.0)  # add
    write_segments(root / "colours.mp4", [("blue", 3.0)])  # change: a 3 s video now
    os.utime(root / "short.mkv", ns=(1, 1))  # touch only: same content
    shutil.rmtree(root / "sub")  # delete
    update = run_index([root], index)
    assert (update["encoded_files"], update["touched_files"], update["deleted_files"]) == (2, 1, 1)
    after = snapshot_rows(index)
    paths = {k[0] for k in after}
    assert paths == {str(root / "colours.mp4"), str(root / "short.mkv"), str(root / "new.mp4")}
    assert sorted(k[1:] for k in after if k[0].endswith("colours.mp4")) == [(0.0, 2.0), (1.0, 3.0)]
    short = [k for k in after if k[0].endswith("short.mkv")]
    assert all(np.array_equal(after[k], before[k]) for k in short)  # kept, not re-encoded
    assert open_index(index).status()["stale"] == {"new": [], "changed": [], "missing": []}
    (root / "later.mp4").write_bytes((root / "new.mp4").read_bytes())
    assert open_index(index).status()["stale"]["new"] == [str(root / "later.mp4")]


def test_bad_files_are_skipped_until_changed(built, library, tmp_path):
    index = tmp_path / "idx"
    shutil.copytree(built[0], index)
    summary = run_index([library], index)
    assert (summary["encoded_files"], summary["skipped_bad_files"]) == (0, 2)
    assert len(open_index(index).status()["bad_files"]) == 2


def test_other_model_or_windows_refused(built, tmp_path, library):
    index = tmp_path / "idx"
    shutil.copytree(built[0], index)
    other = dict(TINY_MODEL, seed=7)
    with pytest.raises(SearchIndexError, match="use a new --index folder"):
        run_index([library], index, model=other)
    with pytest.raises(SearchIndexError, match="--window/--stride"):
        run_index([library], index, window=3.0)
    # no model options: the index's own model is used
    assert run_index([library], index, model={})["unchanged_files"] == 3


@pytest.mark.parametrize("options, words", [
    ({"sim_header": "tightTransf"}, "tightTransf"),
    ({"sim_header": "meanP", "loose_type": False}, "loose_type"),
    ({"interaction": "wti"}, "interaction wti"),
])
def test_joint_scoring_heads_refused(options, words):
    with pytest.raises(SearchModelError, match=words):
        build_spec({**TINY_MODEL, **options})


def test_checkpoint_folder_with_tight_head_refused(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"args": {"sim_header": "tightTransf", "loose_type": False}}))
    with pytest.raises(SearchModelError, match="one vector per video window"):
        build_spec({"init_model": str(folder)})


def test_cli_query_json_and_status(built, capsys):
    from search.__main__ import main

    assert main(["query", str(built[0]), "a blue circle", "--top", "2", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["rank"] == 1
    assert main(["query", str(built[0]), "a blue circle", "--top", "1"]) == 0
    assert "0:0" in capsys.readouterr().out  # time ranges in m:ss.s
    assert main(["status", str(built[0]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["windows"] == 18
    assert main(["status", str(built[0].parent / "nothing")]) == 2
    assert "not a search index" in capsys.readouterr().err


@pytest.mark.parametrize("with_model_spec", [True, False])  # False: a folder saved before meta.json had model_spec
def test_checkpoint_folder_rebuilds_the_trained_model(tmp_path, with_model_spec):
    """--init_model FOLDER: the model comes from the folder's weights and meta.json, the inputs
    (frames, words, frame rate) from the arguments it was trained with."""
    import torch

    from engine.run_folder import save_checkpoint
    from modules.factory import ModelSpec
    from search.models import _entry_point_defaults, fingerprint, load_model

    trained = build_spec(TINY_MODEL)
    model = load_model(trained).model
    with torch.no_grad():
        model.frame_position_embeddings.weight.add_(1.0)  # "training": differs from the seed's draw
    args = {**_entry_point_defaults(), **TINY_MODEL, "clip_config": json.loads(TINY_MODEL["clip_config"]),
            "max_words": 20, "feature_framerate": 4.0}
    folder = save_checkpoint(tmp_path / "run", model, epoch=1, step=1, args=args, save_training_state=False,
                             model_spec=ModelSpec.from_dict(trained["model"]) if with_model_spec else None)
    spec = build_spec({"init_model": str(folder)})
    assert spec["model"]["init_model"] == str(folder.resolve())
    assert spec["model"]["head"]["sim_header"] == "seqTransf"
    assert (spec["max_frames"], spec["max_words"], spec["feature_framerate"]) == (4, 20, 4.0)
    rebuilt = load_model(spec).model
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name
    assert fingerprint(spec) != fingerprint(trained)


def test_exact_and_faiss_agree_on_small_data(built, monkeypatch):
    from search import ann

    if not hasattr(ann, "AnnIndex"):
        pytest.skip("search.ann has no FAISS index yet (search-ann branch)")
    index = open_index(built[0])
    monkeypatch.setattr(ann, "EXACT_MAX_VECTORS", 0)  # FAISS for any size
    for text in ("a red circle moves up", "a white cross"):
        assert index.query(text, top=3, exact=False) == index.query(text, top=3, exact=True)
    assert list((built[0] / "ann").glob("*.faiss"))  # the FAISS index is kept beside the shards
