"""The run folder under faults: a kill at every file-system step of a save, a prune and a best
swap, then a restart; file modes under a umask; corrupted weights without their meta.json.

A kill is simulated at a named step: ``run_folder._fault_point`` is replaced by a hook that, at
the chosen step, copies the output folder as it is at that instant (what a kill -9 would leave;
no cleanup handler has run yet) and raises. The restart then works on that copy. The steps are
not listed by hand: a first run of each scenario records them, and every one is tested."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from engine import run_folder
from engine.run_folder import open_run_folder, read_best, save_checkpoint, update_best
from modules.weights import TENSORS_SHA256, CheckpointError, load_model_weights, read_meta, sha256_of

# scenario -> (epochs saved before, the epoch saved under faults, score of each epoch)
SCENARIOS = {
    "first_best": ([], 1, {1: 10.0, 2: 20.0}),
    "better_best_with_pruning": ([1, 2], 3, {1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0}),
    "worse_score_with_pruning": ([1, 2], 3, {1: 10.0, 2: 20.0, 3: 15.0, 4: 40.0}),
}


class SimulatedCrash(BaseException):
    """Raised at the chosen step; a BaseException, as nothing in the code may swallow a kill."""


def _model(epoch: int) -> nn.Module:
    torch.manual_seed(epoch)
    return nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))


def _metrics(score: float) -> dict:
    return {"t2v": {"R1": score, "R5": 60.0}, "v2t": {"R1": 1.0}}


def _save_epoch(out: Path, epoch: int, scores: dict) -> None:
    """What the training loop does after an epoch: save (keeping the last one), update best."""
    folder = save_checkpoint(out, _model(epoch), epoch=epoch, step=epoch, keep_last=1)
    update_best(folder, _metrics(scores[epoch]), "val")


def _prepared(out: Path, scenario: str) -> Path:
    before, _, scores = SCENARIOS[scenario]
    for epoch in before:
        _save_epoch(out, epoch, scores)
    return out


def _record_steps(scenario: str) -> list[str]:
    """The named steps of the scenario's save, in order (the first, recording run)."""
    steps: list[str] = []
    real = run_folder._fault_point
    with tempfile.TemporaryDirectory() as tmp:
        out = _prepared(Path(tmp), scenario)
        run_folder._fault_point = steps.append
        try:
            _save_epoch(out, SCENARIOS[scenario][1], SCENARIOS[scenario][2])
        finally:
            run_folder._fault_point = real
    return steps


def _cases() -> list:
    cases = []
    for scenario in SCENARIOS:
        steps = _record_steps(scenario)
        for index, step in enumerate(steps):
            occurrence = steps[:index].count(step)
            label = step + (f" #{occurrence + 1}" if occurrence else "")
            cases.append(pytest.param(scenario, index, step, id=f"{scenario}: {label}"))
    return cases


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if run_folder._TMP_MARK in p.name or p.name == ".best.old"
                  or (p.is_dir() and p.name.startswith("epoch_") and not (p / "meta.json").is_file()))


def _same_weights(folder: Path, epoch: int) -> bool:
    loaded = _model(99)
    load_model_weights(loaded, folder)  # verifies both checksums
    expected = _model(epoch).state_dict()
    return all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())


def _check_consistent(out: Path, scores: dict) -> tuple[dict | None, int]:
    """No leftovers, every epoch folder complete, one best: the best evaluated checkpoint, which
    agrees with best.json and holds its epoch's weights. Returns the best and the newest epoch."""
    root = out / "checkpoints"
    assert _leftovers(root) == []
    epochs = sorted(int(p.name.removeprefix("epoch_")) for p in root.glob("epoch_*"))
    for epoch in epochs:
        assert _same_weights(root / f"epoch_{epoch}", epoch)
    best = read_best(out)
    if best is None:
        assert not (root / "best").exists() and not (root / "best.json").exists()
        return None, max(epochs, default=0)
    assert json.loads((root / "best.json").read_text()) == best
    meta = read_meta(root / "best")
    assert (meta["tag"], meta["epoch"]) == (best["checkpoint"], best["epoch"])
    assert best["value"] == scores[best["epoch"]] == best["metrics"]["t2v"]["R1"]
    assert best["split"] == "val" and best["metric"] == "t2v.R1"
    evaluated = [e for e in epochs if "val" in read_meta(root / f"epoch_{e}")["metrics"]]
    assert best["value"] == max(scores[e] for e in evaluated + [best["epoch"]])
    assert _same_weights(root / "best", best["epoch"])
    return best, max(epochs, default=0)


def _crash(monkeypatch, out: Path, crashed: Path, action, at) -> str:
    """Run ``action`` until the step ``at(index, name)`` picks, leave a copy of ``out`` as that
    step found it in ``crashed``; return the step's name."""
    calls: list[str] = []

    def crash_here(name: str) -> None:
        calls.append(name)
        if at(len(calls) - 1, name):
            shutil.copytree(out, crashed)  # the folder as a kill at this step leaves it
            raise SimulatedCrash(name)

    monkeypatch.setattr(run_folder, "_fault_point", crash_here)
    try:
        with pytest.raises(SimulatedCrash):
            action()
    finally:
        monkeypatch.undo()
    return calls[-1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    return {name: _prepared(tmp_path_factory.mktemp(name), name) for name in SCENARIOS}


@pytest.mark.parametrize(("scenario", "index", "step"), _cases())
def test_kill_at_every_step_then_resume_leaves_one_consistent_best(tmp_path, monkeypatch, prepared,
                                                                   scenario, index, step):
    before, epoch, scores = SCENARIOS[scenario]
    out, crashed = tmp_path / "out", tmp_path / "crashed"
    shutil.copytree(prepared[scenario], out)
    reached = _crash(monkeypatch, out, crashed, lambda: _save_epoch(out, epoch, scores), lambda i, _: i == index)
    assert reached == step  # the steps are deterministic

    open_run_folder(crashed)  # restart
    best, newest = _check_consistent(crashed, scores)
    assert best is not None or not before  # a best that existed survives
    assert newest in (epoch - 1, epoch) or (not before and newest == 0)

    _save_epoch(crashed, newest + 1, scores)  # resume: the next epoch
    assert open_run_folder(crashed) == []  # a clean save leaves nothing behind
    best, newest_after = _check_consistent(crashed, scores)
    assert best is not None and newest_after == newest + 1


@pytest.mark.parametrize("left_at", ["move .best to best", "mkdir .best"])
def test_kill_during_start_up_repair_then_start_again(tmp_path, monkeypatch, prepared, left_at):
    """The repair itself is killed at each of its steps; the next start-up still ends consistent.
    Left at "mkdir .best", epoch 3 is evaluated better but unpublished: the repair publishes it."""
    _, epoch, scores = SCENARIOS["better_best_with_pruning"]
    messy = tmp_path / "messy"
    shutil.copytree(prepared["better_best_with_pruning"], tmp_path / "out")
    _crash(monkeypatch, tmp_path / "out", messy, lambda: _save_epoch(tmp_path / "out", epoch, scores),
           lambda _, name: name == left_at)
    (messy / "checkpoints" / "epoch_9").mkdir()
    (messy / "checkpoints" / ".best.json.tmp-1-abcd").write_text("{")
    steps: list[str] = []
    shutil.copytree(messy, tmp_path / "record")
    monkeypatch.setattr(run_folder, "_fault_point", steps.append)
    open_run_folder(tmp_path / "record")
    monkeypatch.undo()
    assert {"remove checkpoints/epoch_9", "move .best to best"} <= set(steps)
    for index, step in enumerate(steps):
        work, crashed = tmp_path / f"work{index}", tmp_path / f"crashed{index}"
        shutil.copytree(messy, work)
        _crash(monkeypatch, work, crashed, functools.partial(open_run_folder, work), lambda i, _, k=index: i == k)
        open_run_folder(crashed)
        best, _ = _check_consistent(crashed, scores)
        assert best["epoch"] == 3, step


def test_fault_points_name_every_step_of_a_save_prune_and_swap():
    steps = set(_record_steps("better_best_with_pruning"))
    for name in ("model.safetensors", "training_state.pt", "meta.json"):
        assert {f"write epoch_3/{name}", f"replace epoch_3/{name}"} <= steps
    assert {"mkdir epoch_3", "unlink epoch_2/meta.json", "rmtree epoch_2"} <= steps  # save, prune
    assert {"mkdir .best", "link .best/model.safetensors", "replace .best/meta.json", "move best to .best.old",
            "move .best to best", "rmtree .best.old", "replace checkpoints/best.json"} <= steps  # swap


# ----------------------------------------------------------------------------- one record of the best
def test_clean_saves_and_start_up_warn_about_nothing(tmp_path, caplog):
    scores = SCENARIOS["better_best_with_pruning"][2]
    with caplog.at_level(logging.WARNING, logger="engine.run_folder"):
        for epoch in (1, 2, 3):
            _save_epoch(tmp_path, epoch, scores)
        assert open_run_folder(tmp_path) == []
    assert caplog.records == []


def test_best_json_that_disagrees_with_best_is_rewritten_at_start_up(tmp_path, caplog):
    scores = SCENARIOS["better_best_with_pruning"][2]
    for epoch in (1, 2, 3):
        _save_epoch(tmp_path, epoch, scores)
    pointer = tmp_path / "checkpoints" / "best.json"
    stale = json.loads(pointer.read_text())
    stale.update(checkpoint="epoch_2", epoch=2, value=20.0)  # the crash: best/ holds epoch 3
    pointer.write_text(json.dumps(stale))
    assert read_best(tmp_path)["checkpoint"] == "epoch_3"  # best.json is never believed
    with caplog.at_level(logging.WARNING, logger="engine.run_folder"):
        assert open_run_folder(tmp_path) == []
    assert json.loads(pointer.read_text())["checkpoint"] == "epoch_3"
    assert "best.json: rewritten" in caplog.text


def test_start_up_removes_leftovers_and_says_so(tmp_path, caplog):
    scores = SCENARIOS["better_best_with_pruning"][2]
    _save_epoch(tmp_path, 1, scores)
    root = tmp_path / "checkpoints"
    (root / ".best.old").mkdir()
    (root / ".best.tmp-1-abcd").mkdir()  # incomplete (no meta.json): best/ was not moved aside
    (root / "epoch_7").mkdir()  # a save cut short before its meta.json
    (root / "epoch_7" / "model.safetensors").write_bytes(b"partial")
    (root / "epoch_1" / ".meta.json.tmp-1-abcd").write_text("{")
    (root / ".best.json.tmp-1-abcd").write_text("{")
    (root / "warm_start").mkdir()  # another tag: not ours to judge
    with caplog.at_level(logging.WARNING, logger="engine.run_folder"):
        removed = open_run_folder(tmp_path)
    names = sorted(str(p.relative_to(root)) for p in removed)
    assert names == sorted([".best.old", ".best.tmp-1-abcd", "epoch_7", "epoch_1/.meta.json.tmp-1-abcd",
                            ".best.json.tmp-1-abcd"])
    assert all(str(p) in caplog.text for p in removed)
    assert sorted(p.name for p in root.iterdir()) == ["best", "best.json", "epoch_1", "warm_start"]
    assert read_best(tmp_path)["checkpoint"] == "epoch_1"


def test_best_without_its_selection_record_is_an_error(tmp_path):
    _save_epoch(tmp_path, 1, {1: 10.0})
    root = tmp_path / "checkpoints"
    meta = read_meta(root / "best")
    del meta["selected_by"]
    (root / "best" / "meta.json").write_text(json.dumps(meta))
    assert read_best(tmp_path)["checkpoint"] == "epoch_1"  # older run folder: best.json names it
    (root / "best.json").unlink()
    with pytest.raises(CheckpointError, match="selected_by"):
        read_best(tmp_path)


# ----------------------------------------------------------------------------- umask
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_and_folders_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        _save_epoch(tmp_path, 1, {1: 10.0})
        open_run_folder(tmp_path)
    finally:
        os.umask(previous)
    paths = [tmp_path / "checkpoints", *(tmp_path / "checkpoints").rglob("*")]
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in paths}
    expected = {name: (0o777 if (tmp_path / name).is_dir() else 0o666) & ~umask for name in modes}
    assert modes == expected
    assert "checkpoints/epoch_1/model.safetensors" in modes and "checkpoints/best/meta.json" in modes


# ----------------------------------------------------------------------------- checksum in the header
def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # inside the last tensor's data
    path.write_bytes(bytes(data))


def test_corrupted_weights_without_meta_json_are_refused(tmp_path):
    folder = save_checkpoint(tmp_path, _model(1), epoch=1, step=1)
    weights = folder / "model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        assert len(handle.metadata()[TENSORS_SHA256]) == 64
    alone = tmp_path / "alone.safetensors"
    shutil.copy(weights, alone)
    assert _same_weights(alone, 1)  # no meta.json beside it: the header's checksum is enough
    _flip_last_byte(alone)
    with pytest.raises(CheckpointError, match=r"alone\.safetensors.*SHA-256 stored in the file's header"):
        load_model_weights(_model(2), alone)
    load_model_weights(_model(2), alone, verify=False)  # an explicit opt-out still loads


def test_weights_without_the_header_checksum_still_load_and_use_meta_json(tmp_path):
    folder = save_checkpoint(tmp_path, _model(1), epoch=1, step=1)
    weights = folder / "model.safetensors"
    save_file(_model(1).state_dict(), str(weights), metadata={"format": "pt"})  # as older saves wrote
    meta = read_meta(folder)
    meta["files"]["model.safetensors"]["sha256"] = sha256_of(weights)
    (folder / "meta.json").write_text(json.dumps(meta))
    assert _same_weights(folder, 1)
    _flip_last_byte(weights)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*SHA-256 recorded in"):
        load_model_weights(_model(2), folder)
