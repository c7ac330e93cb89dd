"""Checkpoints: atomic writes, weights and training-state round trips, RNG, best tracking, bad files."""

import argparse
import json
import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine import run_folder
from engine.run_folder import (
    atomic_write,
    capture_rng_state,
    load_training_state,
    open_run_folder,
    read_best,
    restore_rng_state,
    save_checkpoint,
    update_best,
)
from modules import weights
from modules.optimization import build_optimizer, clamp_logit_scale
from modules.weights import CheckpointError, load_model_weights, read_meta


class Toy(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.clip = nn.Module()
        self.clip.proj = nn.Linear(4, 3)
        self.clip.ln_final = nn.LayerNorm(3)
        self.clip.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.head = nn.Linear(3, 3)
        self.register_buffer("counter", torch.tensor([7], dtype=torch.int64))

    def forward(self, x):
        return self.head(self.clip.ln_final(self.clip.proj(x))) * self.clip.logit_scale.exp()


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _train(model, opt, sched, steps):
    for _ in range(steps):
        loss = model(torch.randn(5, 4)).pow(2).mean()  # data from the torch RNG
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        clamp_logit_scale(model)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- layout
def test_layout_meta_and_weights_only_state(tmp_path):
    model = Toy()
    opt, sched = build_optimizer(model, 1e-3, 0.1, 0.2, 0.1, 10)
    args = argparse.Namespace(lr=1e-3, output_dir=tmp_path, datatype="msrvtt")
    folder = save_checkpoint(
        tmp_path,
        model,
        epoch=2,
        step=20,
        optimizer=opt,
        scheduler=sched,
        sampler_epoch=2,
        metrics={"t2v": {"R1": np.float64(41.5)}},
        metrics_split="val",
        args=args,
    )
    assert folder == tmp_path / "checkpoints" / "epoch_2"
    assert _files(folder) == ["meta.json", "model.safetensors", "training_state.pt"]
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["epoch"], meta["step"], meta["tag"]) == (2, 20, "epoch_2")
    assert meta["metrics"] == {"val": {"t2v": {"R1": 41.5}}}
    assert meta["args"]["output_dir"] == str(tmp_path) and meta["args"]["datatype"] == "msrvtt"
    assert meta["torch_version"] == torch.__version__ and "git_commit" in meta
    assert set(meta["files"]) == {"model.safetensors", "training_state.pt"}
    assert len(meta["files"]["model.safetensors"]["sha256"]) == 64
    state = torch.load(folder / "training_state.pt", weights_only=True)  # must not need pickled classes
    assert state["epoch"] == 2 and state["sampler_epoch"] == 2 and state["optimizer"]["param_groups"]


def test_unsafe_extra_state_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"extra.*'ids'.*numpy"):
        save_checkpoint(tmp_path, Toy(), epoch=1, step=1, extra={"ids": np.arange(3)})


# ----------------------------------------------------------------------------- round trips
def test_weights_round_trip_from_folder_and_file(tmp_path):
    src = Toy(seed=1)
    folder = save_checkpoint(tmp_path, src, epoch=1, step=5)
    for path in (folder, folder / "model.safetensors"):
        dst = Toy(seed=2)
        assert not _same_weights(src, dst)
        report = load_model_weights(dst, path)
        assert _same_weights(src, dst) and not (report.missing or report.unexpected or report.mismatched)


def test_wrapped_model_saves_plain_names(tmp_path):
    class Wrapper(nn.Module):  # like DDP: the real model under .module
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    src = Toy(seed=1)
    folder = save_checkpoint(tmp_path, Wrapper(src), epoch=1, step=1, save_training_state=False)
    assert _files(folder) == ["meta.json", "model.safetensors"]
    dst = Wrapper(Toy(seed=2))
    load_model_weights(dst, folder)
    assert _same_weights(src, dst.module)


def test_resume_continues_bit_identically(tmp_path):
    """Optimizer, scheduler, GradScaler and RNG restored: the next steps match an uninterrupted run."""
    model = Toy(seed=3)
    opt, sched = build_optimizer(model, 1e-2, 0.5, 0.2, 0.2, 10)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _train(model, opt, sched, 3)
    folder = save_checkpoint(
        tmp_path,
        model,
        epoch=0,
        step=3,
        optimizer=opt,
        scheduler=sched,
        scaler=scaler,
        sampler_epoch=0,
        extra={"batch_in_epoch": 3},
    )
    _train(model, opt, sched, 4)
    expected_lrs = [g["lr"] for g in opt.param_groups]

    resumed = Toy(seed=9)
    opt2, sched2 = build_optimizer(resumed, 1e-2, 0.5, 0.2, 0.2, 10)
    scaler2 = torch.amp.GradScaler("cpu", init_scale=1.0)
    torch.manual_seed(12345)  # a different RNG position that the checkpoint must undo
    load_model_weights(resumed, folder)
    state = load_training_state(folder, opt2, sched2, scaler2)
    assert (state.epoch, state.step, state.sampler_epoch, state.extra) == (0, 3, 0, {"batch_in_epoch": 3})
    assert scaler2.get_scale() == 1024.0
    _train(resumed, opt2, sched2, 4)
    assert _same_weights(model, resumed)
    assert [g["lr"] for g in opt2.param_groups] == expected_lrs


@pytest.mark.parametrize("optimizer", ["adamw", "bertadam"])
def test_optimizer_state_round_trip(tmp_path, optimizer):
    model = Toy()
    opt, sched = build_optimizer(model, 1e-3, 0.1, 0.2, 0.1, 10, optimizer=optimizer)
    _train(model, opt, sched, 2)
    folder = save_checkpoint(tmp_path, model, epoch=1, step=2, optimizer=opt, scheduler=sched)
    opt2, sched2 = build_optimizer(Toy(), 1e-3, 0.1, 0.2, 0.1, 10, optimizer=optimizer)
    load_training_state(folder, opt2, sched2)
    assert sched2.last_epoch == 2
    for p1, p2 in zip(opt.param_groups, opt2.param_groups, strict=True):
        assert p1["lr"] == p2["lr"] and p1["name"] == p2["name"]
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        for name, value in s1[k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2[k][name]))


def test_rng_states_restored_give_the_same_numbers(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    folder = save_checkpoint(tmp_path, Toy(), epoch=1, step=1)
    first = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    for _ in range(5):
        random.random(), np.random.rand(), torch.rand(1)
    load_training_state(folder)
    again = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    assert first == again


def test_per_rank_rng_states(tmp_path):
    torch.manual_seed(0)
    rank0 = capture_rng_state()
    torch.manual_seed(1)
    rank1 = capture_rng_state()
    folder = save_checkpoint(tmp_path, Toy(), epoch=1, step=1, rng_states=[rank0, rank1])
    load_training_state(folder, rank=1)
    got = torch.rand(2)
    restore_rng_state(rank1)
    assert torch.equal(got, torch.rand(2))


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def half_then_crash(tmp: Path):
        tmp.write_text("new but incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old" and _files(tmp_path) == ["f.txt"]


def test_crash_at_replace_keeps_old_checkpoint_intact(tmp_path, monkeypatch):
    old = Toy(seed=1)
    folder = save_checkpoint(tmp_path, old, epoch=1, step=1)
    before = {name: (folder / name).read_bytes() for name in _files(folder)}

    def crash(src, dst):
        raise OSError("simulated crash in os.replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path, Toy(seed=2), epoch=1, step=2)
    monkeypatch.undo()
    assert _files(folder) == sorted(before)  # no temporary or partial file left behind
    assert {name: (folder / name).read_bytes() for name in _files(folder)} == before
    restored = Toy(seed=3)
    load_model_weights(restored, folder)  # checksums still match
    assert _same_weights(old, restored)


def test_crash_between_files_is_detected_by_checksum(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, Toy(seed=1), epoch=1, step=1)
    real_replace, calls = os.replace, []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # weights replaced, training state not, meta.json still the old one
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, Toy(seed=2), epoch=1, step=2)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*SHA-256"):
        load_model_weights(Toy(), tmp_path / "checkpoints" / "epoch_1")


def test_stale_temp_files_are_swept(tmp_path):
    folder = save_checkpoint(tmp_path, Toy(), epoch=1, step=1)
    (folder / ".model.safetensors.tmp-999-deadbeef").write_bytes(b"partial")
    save_checkpoint(tmp_path, Toy(), epoch=1, step=1)
    assert _files(folder) == ["meta.json", "model.safetensors", "training_state.pt"]


# ----------------------------------------------------------------------------- keep-last, latest, best
def test_keep_last_prunes_old_epochs_only(tmp_path):
    save_checkpoint(tmp_path, Toy(), epoch=9, step=0, tag="warm_start")
    for epoch in range(1, 5):
        save_checkpoint(tmp_path, Toy(), epoch=epoch, step=epoch * 10, keep_last=2)
    assert _files(tmp_path / "checkpoints") == ["epoch_3", "epoch_4", "warm_start"]


def _metrics(r1):
    return {"t2v": {"R1": r1, "R5": 60.0}, "v2t": {"R1": 1.0}}


def test_best_tracking_survives_pruning(tmp_path, caplog):
    models = {1: Toy(seed=1), 2: Toy(seed=2), 3: Toy(seed=3)}
    scores = {1: 10.0, 2: 20.0, 3: 15.0}
    with caplog.at_level(logging.INFO, logger="engine.run_folder"):
        became_best = []
        for epoch, model in models.items():
            folder = save_checkpoint(tmp_path, model, epoch=epoch, step=epoch, keep_last=1)
            became_best.append(update_best(folder, _metrics(scores[epoch]), split="val"))
    assert became_best == [True, True, False]
    assert "val split" in caplog.text
    best = read_best(tmp_path)
    assert (best["checkpoint"], best["value"], best["split"], best["metric"]) == ("epoch_2", 20.0, "val", "t2v.R1")
    root = tmp_path / "checkpoints"
    assert not (root / "epoch_2").exists()  # pruned, yet best/ keeps its weights
    restored = Toy(seed=7)
    load_model_weights(restored, root / "best")
    assert _same_weights(models[2], restored)
    assert read_meta(root / "best")["metrics"]["val"]["t2v"]["R1"] == 20.0
    assert read_meta(root / "epoch_3")["metrics"]["val"]["t2v"]["R1"] == 15.0


def test_best_ties_go_to_the_later_checkpoint_and_splits_do_not_mix(tmp_path):
    first = save_checkpoint(tmp_path, Toy(), epoch=1, step=1)
    second = save_checkpoint(tmp_path, Toy(), epoch=2, step=2)
    assert update_best(first, _metrics(30.0), "test")
    assert update_best(second, _metrics(30.0), "test")
    assert read_best(tmp_path)["checkpoint"] == "epoch_2"
    with pytest.raises(CheckpointError, match="split 'test'"):
        update_best(second, _metrics(99.0), "val")


def test_interrupted_best_swap_is_recovered(tmp_path):
    folder = save_checkpoint(tmp_path, Toy(seed=4), epoch=1, step=1)
    update_best(folder, _metrics(5.0), "val")
    root = tmp_path / "checkpoints"
    os.replace(root / "best", root / ".best.old")  # crash after moving best/ aside
    assert read_best(tmp_path)["checkpoint"] == "epoch_1"  # readers see it before any repair
    assert open_run_folder(tmp_path) == []  # moved back, nothing to remove
    assert (root / "best" / "model.safetensors").is_file() and not (root / ".best.old").exists()


# ----------------------------------------------------------------------------- foreign and bad files
@pytest.mark.parametrize("zip_format", [True, False])
def test_clip4clip_pytorch_model_bin_with_module_prefix(tmp_path, zip_format):
    src = Toy(seed=5)
    path = tmp_path / "pytorch_model.bin.4"
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    dst = Toy(seed=6)
    load_model_weights(dst, path)
    assert _same_weights(src, dst)


def test_mismatch_error_lists_all_problems_once(tmp_path):
    state = Toy().state_dict()
    del state["head.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["clip.proj.weight"] = torch.zeros(5, 5)
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(Toy(), path)
    message = str(info.value)
    assert str(path) in message
    assert "missing" in message and "head.bias" in message
    assert "unexpected" in message and "extra.weight" in message
    assert "clip.proj.weight" in message and "(5, 5)" in message

    model = Toy(seed=8)
    report = load_model_weights(model, path, strict=False)
    assert (report.missing, report.unexpected, report.mismatched) == (
        ["head.bias"],
        ["extra.weight"],
        ["clip.proj.weight"],
    )
    assert torch.equal(model.head.weight, state["head.weight"])


@pytest.mark.parametrize("kind", ["truncated_safetensors", "garbage", "empty", "truncated_zip"])
def test_corrupt_files_name_the_file(tmp_path, kind):
    folder = save_checkpoint(tmp_path, Toy(), epoch=1, step=1)
    good = (folder / "model.safetensors").read_bytes()
    zipped = tmp_path / "zipped.bin"
    torch.save(Toy().state_dict(), zipped)
    content = {
        "truncated_safetensors": good[: len(good) // 2],
        "garbage": os.urandom(64),
        "empty": b"",
        "truncated_zip": zipped.read_bytes()[:200],
    }[kind]
    bad = tmp_path / f"bad_{kind}.safetensors"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"bad_{kind}"):
        load_model_weights(Toy(), bad)


def test_corrupt_training_state_names_the_file(tmp_path):
    bad = tmp_path / "training_state.pt"
    bad.write_bytes(b"\x80\x02 not a pickle at all")
    with pytest.raises(CheckpointError, match="training_state.pt"):
        load_training_state(bad)


class _Payload:
    """Unpickling this would create a folder: proof that code ran."""

    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("target", ["weights", "state"])
def test_malicious_pickle_is_refused(tmp_path, target):
    payload = _Payload()
    payload.marker = str(tmp_path / "pwned")
    path = tmp_path / "pytorch_model.bin"
    torch.save({"head.weight": torch.zeros(3, 3), "evil": payload}, path)
    with pytest.raises(CheckpointError, match="refused"):
        if target == "weights":
            load_model_weights(Toy(), path)
        else:
            load_training_state(path)
    assert not (tmp_path / "pwned").exists()


def test_training_state_must_fit_the_optimizer(tmp_path):
    model = Toy()
    opt, sched = build_optimizer(model, 1e-3, 0.1, 0.2, 0.1, 10)
    folder = save_checkpoint(tmp_path, model, epoch=1, step=1, optimizer=opt, scheduler=sched)
    other = nn.Linear(2, 2)
    wrong = torch.optim.AdamW(other.parameters())
    with pytest.raises(CheckpointError, match="optimizer state does not fit"):
        load_training_state(folder, wrong)


def test_missing_state_file_and_not_a_state(tmp_path):
    folder = save_checkpoint(tmp_path, Toy(), epoch=1, step=1, save_training_state=False)
    with pytest.raises(FileNotFoundError):
        load_training_state(folder)
    other = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a training state"):
        load_training_state(other)


def test_save_refuses_bad_tags(tmp_path):
    for tag in ("best", "../x", "a/b"):
        with pytest.raises(ValueError):
            save_checkpoint(tmp_path, Toy(), epoch=1, step=1, tag=tag)


def test_module_constants_describe_the_layout():
    names = (weights.MODEL_FILE, run_folder.STATE_FILE, weights.META_FILE)
    assert names == ("model.safetensors", "training_state.pt", "meta.json")
