"""main_task_retrieval.py end to end on tiny synthetic data: 1 vs 2 processes, resume, bad input."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

import main_task_retrieval
from engine.builders import model_spec_from_args
from tests.engine_helpers import read_results, read_steps, run_processes, tiny_run_args


def _metric_table(results: dict) -> dict:
    return {kind: results[kind] for kind in ("plain", "dsl")}


def test_eval_two_processes_equal_one_process(synthetic_data, tmp_path):
    """Every rank encodes a disjoint share exactly once; the metrics are those of one process."""
    # batch_size_val 4 over 18 captions/videos: 5 batches, so rank 1 gets fewer than rank 0.
    one = tmp_path / "one"
    two = tmp_path / "two"
    common = ("--do_eval", "--batch_size_val", "4", "--sim_header", "seqTransf")
    main_task_retrieval.main(tiny_run_args(synthetic_data, one, *common))
    run_processes(tiny_run_args(synthetic_data, two, *common), world_size=2)
    single = read_results(one, "results_test_eval.json")
    double = read_results(two, "results_test_eval.json")
    assert double["world_size"] == 2 and single["world_size"] == 1
    assert double["num_captions"] == single["num_captions"] == 18
    assert _metric_table(double) == _metric_table(single)


def test_train_two_processes_match_one_process(synthetic_data, tmp_path):
    """Same global batch split over 2 ranks: the loss sequence of one process (float tolerance)."""
    args = ("--do_train", "--epochs", "1", "--batch_size", "8", "--batch_size_val", "18", "--lr", "1e-3")
    main_task_retrieval.main(tiny_run_args(synthetic_data, tmp_path / "one", *args))
    run_processes(tiny_run_args(synthetic_data, tmp_path / "two", *args), world_size=2)
    one = [s["loss"] for s in read_steps(tmp_path / "one")]
    two = [s["loss"] for s in read_steps(tmp_path / "two")]
    assert len(one) == len(two) == 3
    assert two == pytest.approx(one, rel=1e-4)


def test_resume_continues_like_an_uninterrupted_run(synthetic_data, tmp_path):
    args = ("--do_train", "--epochs", "3", "--batch_size", "8", "--batch_size_val", "18", "--lr", "1e-3",
            "--sim_header", "seqTransf", "--keep_checkpoints", "5")
    full = tmp_path / "full"
    main_task_retrieval.main(tiny_run_args(synthetic_data, full, *args))
    resumed = tmp_path / "resumed"
    main_task_retrieval.main(tiny_run_args(synthetic_data, resumed, *args, "--resume_model",
                                           str(full / "checkpoints" / "epoch_1")))
    uninterrupted = [(s["step"], s["loss"]) for s in read_steps(full) if s["epoch"] > 1]
    continued = [(s["step"], s["loss"]) for s in read_steps(resumed)]
    assert [s for s, _ in continued] == [s for s, _ in uninterrupted] == [4, 5, 6, 7, 8, 9]
    assert [loss for _, loss in continued] == [loss for _, loss in uninterrupted]  # exactly


def test_eval_after_training_reports_plain_and_dsl(synthetic_data, tmp_path):
    main_task_retrieval.main(tiny_run_args(synthetic_data, tmp_path, "--do_train", "--do_eval", "--epochs", "1",
                                           "--batch_size", "8", "--batch_size_val", "18"))
    results = read_results(tmp_path, "results_test_eval.json")
    for kind in ("plain", "dsl"):
        for direction in ("t2v", "v2t", "v2t_per_caption"):
            assert set(results[kind][direction]) >= {"R1", "R5", "R10", "MedR", "MeanR"}
    assert results["num_videos"] == 18 and results["dataset"] == "synthetic"
    assert (tmp_path / "log.txt").read_text().count("DSL (dual softmax, transductive)") >= 3
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").is_file()
    if importlib.util.find_spec("tensorboard") is not None:  # events only when tensorboard is installed
        assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # the fine-tuned checkpoint evaluates on its own (architecture from its clip.* tensors)
    again = tmp_path / "again"
    main_task_retrieval.main(tiny_run_args(synthetic_data, again, "--do_eval", "--batch_size_val", "18",
                                           "--init_model", str(tmp_path / "checkpoints" / "epoch_1")))
    assert _metric_table(read_results(again, "results_test_eval.json")) == _metric_table(results)


@pytest.mark.parametrize("extra, message", [
    (("--do_train", "--batch_size", "7", "--gradient_accumulation_steps", "2"), "not divisible"),
    (("--do_eval", "--max_words", "100"), "context length"),
    (("--do_eval", "--init_model", "/nonexistent/model.safetensors"), "does not exist"),
])
def test_bad_input_fails_before_work(synthetic_data, tmp_path, extra, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        main_task_retrieval.main(tiny_run_args(synthetic_data, tmp_path, *extra))


def test_missing_annotation_folder_is_named(tmp_path):
    argv = ["--do_eval", "--datatype", "msvd", "--data_path", str(tmp_path / "nowhere"), "--features_path",
            str(tmp_path), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        main_task_retrieval.main(argv)


def test_resume_with_other_configuration_is_refused(synthetic_data, tmp_path):
    args = ("--do_train", "--epochs", "1", "--batch_size", "8", "--batch_size_val", "18")
    main_task_retrieval.main(tiny_run_args(synthetic_data, tmp_path / "a", *args))
    with pytest.raises(ValueError, match="sim_header"):
        main_task_retrieval.main(tiny_run_args(synthetic_data, tmp_path / "b", *args, "--sim_header", "seqTransf",
                                               "--resume_model", str(tmp_path / "a" / "checkpoints" / "epoch_1")))


@pytest.mark.parametrize("argv, expected", [
    (["--mergeclip"], True), (["--mergeclip=False"], False), (["--mergeclip", "false"], False),
    (["--mergeclip=True"], True), ([], False),
])
def test_mergeclip_is_a_real_boolean(argv, expected):
    args = main_task_retrieval.get_args(["--do_eval", "--output_dir", "x", *argv])
    assert args.mergeclip is expected


def test_argument_rules():
    get = main_task_retrieval.get_args
    tight = get(["--do_eval", "--output_dir", "x", "--sim_header", "tightTransf", "--loose_type"])
    assert model_spec_from_args(tight).head.loose_type is False
    assert get(["--do_eval", "--output_dir", "x", "--fp16"]).precision == "fp16"
    assert get(["--do_eval", "--output_dir", "x", "--local-rank", "3"]).local_rank == 3
    with pytest.raises(SystemExit):
        get(["--output_dir", "x"])  # neither --do_train nor --do_eval
    with pytest.raises(SystemExit):
        get(["--do_eval", "--output_dir", "x", "--datatype", "kinetics"])
    with pytest.raises(SystemExit):
        get(["--do_eval", "--output_dir", "x", "--clip_evl", "--max_words", "32"])


class _NaNModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.clip = torch.nn.Module()
        self.clip.logit_scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, *args, **kwargs):
        return self.clip.logit_scale * math.nan


def test_nonfinite_losses_skip_steps_then_stop(tmp_path):
    from engine.distributed import DistInfo
    from engine.training import NonFiniteLossError, Trainer, TrainState

    model = _NaNModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    args = type("Args", (), dict(gradient_accumulation_steps=1, precision="fp32", max_grad_norm=1.0, n_display=1))
    trainer = Trainer(model, model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False), DistInfo(), args,
                      TrainState())
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "input_mask": torch.ones(2, 4, dtype=torch.long),
             "video": torch.zeros(2, 1, 3, 4, 4), "video_mask": torch.ones(2, 1, dtype=torch.long)}
    with pytest.raises(NonFiniteLossError, match="10 non-finite losses in a row"):
        trainer.train_epoch([batch] * 12, epoch=0)
    assert trainer.state.global_step == 0 and model.clip.logit_scale.item() == 1.0
