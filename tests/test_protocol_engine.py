"""The engine's side of the two protocols: published defaults, `--improved`, explicit flags
winning over it, what a fine-tune reports, and saving before evaluating."""

from __future__ import annotations

import csv
import dataclasses
from types import SimpleNamespace

import pytest
import torch

import dataloaders
import main_task_retrieval
from engine import builders, protocol
from engine import run as engine_run
from modules.optimization import BertAdam
from tests.engine_helpers import read_results, tiny_run_args
from tests.test_optimization import EXPECTED_CLIP4CLIP, EXPECTED_NORMS_EXEMPT, ToyRetrieval


def _args(*extra: str):
    return main_task_retrieval.get_args(["--do_eval", "--output_dir", "x", *extra])


def _published_value(dest: str, args) -> object:
    return protocol.SETTINGS[dest].value(False, args)


def test_defaults_are_the_published_protocol():
    args = _args()
    assert (args.optimizer, args.no_decay, args.frame_grid, args.selection_split) == (
        "bertadam", "clip4clip", "published", "test")
    assert args.lsmdc_internvideo_train_slice is True  # InternVideo drops 100 LSMDC train clips
    assert args.improved is False
    for dest in protocol.SETTINGS:
        if hasattr(args, dest):
            assert getattr(args, dest) == _published_value(dest, args), dest


def test_clip4clip_codebase_keeps_every_lsmdc_clip():
    assert _args("--published_codebase", "clip4clip").lsmdc_internvideo_train_slice is False


@pytest.mark.parametrize("evl, grid", [((), "framerate"), (("--clip_evl", "--max_words", "77"), "segments")])
def test_improved_sets_every_setting(evl, grid):
    args = _args("--improved", *evl)
    expected = {"optimizer": "adamw", "no_decay": "bias_and_norm", "frame_grid": grid, "selection_split": "val",
                "lsmdc_internvideo_train_slice": False}
    for dest, value in expected.items():
        assert getattr(args, dest) == value, dest
    for dest, setting in protocol.SETTINGS.items():  # the model-side ones too, where the parser has them
        if hasattr(args, dest):
            assert getattr(args, dest) == setting.value(True, args), dest
            assert getattr(args, dest) != _published_value(dest, args), dest


@pytest.mark.parametrize("flag, value, dest, expected", [
    ("--optimizer", "bertadam", "optimizer", "bertadam"),
    ("--optimizer=bertadam", None, "optimizer", "bertadam"),
    ("--no_decay", "clip4clip", "no_decay", "clip4clip"),
    ("--frame_grid", "published", "frame_grid", "published"),
    ("--selection_split", "test", "selection_split", "test"),
    ("--lsmdc_internvideo_train_slice", None, "lsmdc_internvideo_train_slice", True),
])
def test_an_explicit_flag_wins_over_improved(flag, value, dest, expected):
    extra = (flag,) if value is None else (flag, value)
    args = _args("--improved", *extra)
    assert getattr(args, dest) == expected
    assert args.optimizer == ("bertadam" if dest == "optimizer" else "adamw")  # the rest still follow --improved


@pytest.mark.parametrize("argv, datatype, grid", [
    ((), "msrvtt", "published_decord"),
    ((), "lsmdc", "published_decord"),
    ((), "msvd", "published_cv2"),
    ((), "activity", "published_cv2"),
    (("--published_codebase", "clip4clip"), "msrvtt", "published_cv2"),
    ((), "synthetic", "framerate"),  # our own benchmark has no published grid
    (("--improved",), "msrvtt", "framerate"),
    (("--improved", "--clip_evl", "--max_words", "77"), "msrvtt", "segments"),
    (("--frame_grid", "segments"), "msvd", "segments"),
    (("--frame_grid", "published_cv2"), "msrvtt", "published_cv2"),
])
def test_frame_grid_from_the_command_line(argv, datatype, grid):
    args = _args("--datatype", datatype, *argv)
    assert builders.frame_grid(args) == grid
    model = SimpleNamespace(clip=SimpleNamespace(visual=SimpleNamespace(input_resolution=32)))
    assert builders.frame_sampling(args, model, train=False).grid == grid


@pytest.mark.parametrize("argv, kind, expected", [
    ((), BertAdam, EXPECTED_CLIP4CLIP),
    (("--improved",), torch.optim.AdamW, EXPECTED_NORMS_EXEMPT),
    (("--optimizer", "adamw"), torch.optim.AdamW, EXPECTED_CLIP4CLIP),
    (("--no_decay", "bias_and_norm"), BertAdam, EXPECTED_NORMS_EXEMPT),
])
def test_optimizer_from_the_command_line(argv, kind, expected):
    args = _args("--lr", "1e-3", "--coef_lr", "1e-2", *argv)
    model = ToyRetrieval()
    opt, _ = builders.optimizer_and_schedule(model, args, total_steps=10)
    assert type(opt) is kind
    names = {id(p): n for n, p in model.named_parameters()}
    got = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert got == {name: wd for name, (_, wd) in expected.items()}


def test_lsmdc_slice_reaches_the_loader():
    assert builders.data_options(_args()).lsmdc_internvideo_train_slice is True
    assert builders.data_options(_args("--lsmdc_internvideo_train_slice", "false")).lsmdc_internvideo_train_slice \
        is False


# ---------------------------------------------------------------------------- runs on tiny data
TRAIN = ("--do_train", "--batch_size", "8", "--batch_size_val", "18", "--lr", "1e-3")


def test_published_fine_tune_ends_with_the_test_selected_checkpoint(synthetic_data, tmp_path):
    main_task_retrieval.main(tiny_run_args(synthetic_data, tmp_path, *TRAIN, "--epochs", "2"))
    selected = read_results(tmp_path, "results_test_selected.json")
    assert selected["selection"]["label"] == "selected on test"
    epoch = selected["selection"]["epoch"]
    at_epoch = read_results(tmp_path, f"results_test_epoch{epoch}.json")
    assert selected["plain"] == at_epoch["plain"] and selected["dsl"] == at_epoch["dsl"]
    others = [read_results(tmp_path, f"results_test_epoch{k}.json")["plain"]["t2v"]["R1"] for k in (1, 2)]
    assert at_epoch["plain"]["t2v"]["R1"] == max(others)
    assert "selected on test" in (tmp_path / "log.txt").read_text()


def test_selection_on_val_ends_with_the_test_metrics_of_the_selected_checkpoint(synthetic_data, tmp_path,
                                                                                 monkeypatch):
    entry = dataclasses.replace(dataloaders.DATASETS["synthetic"], has_val_split=True)  # val = the test csv here
    monkeypatch.setitem(dataloaders.DATASETS, "synthetic", entry)
    main_task_retrieval.main(tiny_run_args(synthetic_data, tmp_path, *TRAIN, "--epochs", "2", "--improved",
                                           "--do_eval"))
    assert not list(tmp_path.glob("results_test_epoch*.json"))
    selected = read_results(tmp_path, "results_test_selected.json")
    assert selected["selection"]["split"] == "val" and selected["selection"]["label"] == "selected on val"
    assert set(selected["plain"]) >= {"t2v", "v2t"} and set(selected["dsl"]) >= {"t2v", "v2t"}
    # val and test are the same captions here: the reloaded best scores exactly what it scored on val
    best_val = read_results(tmp_path, f"results_val_epoch{selected['selection']['epoch']}.json")
    assert selected["plain"] == best_val["plain"]
    # --do_eval still evaluates the model at the end of training
    final_val = read_results(tmp_path, "results_val_epoch2.json")
    assert read_results(tmp_path, "results_test_eval.json")["plain"] == final_val["plain"]


def test_a_failed_evaluation_keeps_the_epoch_just_trained(synthetic_data, tmp_path, monkeypatch):
    def broken_evaluate(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(engine_run, "evaluate", broken_evaluate)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        main_task_retrieval.main(tiny_run_args(synthetic_data, tmp_path / "a", *TRAIN, "--epochs", "2"))
    epoch_1 = tmp_path / "a" / "checkpoints" / "epoch_1"
    assert (epoch_1 / "model.safetensors").is_file() and (epoch_1 / "meta.json").is_file()
    monkeypatch.undo()
    main_task_retrieval.main(tiny_run_args(synthetic_data, tmp_path / "a", *TRAIN, "--epochs", "2",
                                           "--resume_model", str(epoch_1)))
    assert (tmp_path / "a" / "results_test_epoch2.json").is_file()
    assert read_results(tmp_path / "a", "results_test_selected.json")["selection"]["epoch"] == 2


def test_a_broken_evaluation_video_fails_before_training(tmp_path):
    from tests.engine_helpers import make_synthetic
    from dataloaders.video_reader import VideoDecodeError

    data = make_synthetic(tmp_path / "data", num_train=8, num_test=6)
    with open(data / "synthetic_test.csv", newline="") as f:
        video_id = next(csv.DictReader(f))["video_id"]
    (data / "videos" / f"{video_id}.mp4").write_bytes(b"not a video at all")
    with pytest.raises(VideoDecodeError, match=video_id):
        main_task_retrieval.main(tiny_run_args(data, tmp_path / "out", *TRAIN, "--epochs", "1"))
    assert not (tmp_path / "out" / "train_steps.jsonl").exists()
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_resume_under_the_other_protocol_is_refused():
    saved = {"args": vars(_args())}
    builders.check_resume_compatible(saved, _args(), "ckpt")
    with pytest.raises(ValueError, match="--optimizer: checkpoint 'bertadam', now 'adamw'"):
        builders.check_resume_compatible(saved, _args("--improved"), "ckpt")
