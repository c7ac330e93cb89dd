"""A reduced real training run on the synthetic temporal benchmark: learning happens.

The demo's recipe (``synthetic.demo``: a random CLIP, twin batches, ...) on less data
and fewer steps, through ``main_task_retrieval.main`` (the real loader decoding mp4 files,
per-epoch evaluation, checkpoints), then evaluated on held-out clips. Under a minute on 2
CPU cores (at most 3).

The thresholds are far from what the run reaches (see the comments) so that they only fail
when learning breaks, not on a noisy machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main_task_retrieval
from synthetic.demo import CLIP_CONFIG
from synthetic.generate import SyntheticConfig, generate

NUM_TEST = 60  # 20 triplets: chance R@1 is 1/60 = 1.7%
CONFIG = SyntheticConfig(seed=0, num_train=640, num_test=NUM_TEST)
EPOCHS = 8  # 20 optimizer steps of 32 clips per epoch


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_training")
    data = generate(root / "data", CONFIG, workers=2)
    out = root / "run"
    argv = [
        "--do_train", "--do_eval", "--datatype", "synthetic", "--data_path", str(data / "MSRVTT_data.json"),
        "--train_csv", str(data / "synthetic_train.csv"), "--val_csv", str(data / "synthetic_test.csv"),
        "--features_path", str(data / "videos"), "--feature_framerate", str(CONFIG.fps),
        "--max_frames", str(CONFIG.num_frames), "--slice_framepos", "0",
        "--clip_config", json.dumps(CLIP_CONFIG), "--sim_header", "seqTransf", "--loose_type",
        "--cross_num_hidden_layers", "2", "--max_words", "16", "--freeze_layer_num", "2", "--twin_batches",
        "--batch_size", "32", "--batch_size_val", "64", "--epochs", str(EPOCHS), "--lr", "1e-3",
        "--warmup_proportion", "0.05", "--weight_decay", "0.01", "--n_display", "10", "--keep_checkpoints", "1",
        "--num_thread_reader", "1", "--improved",  # the demo's recipe (synthetic.demo.Schedule.improved)
        "--output_dir", str(out),
    ]
    # One compute thread: with two, OpenMP's busy-waiting threads stall whenever the loader
    # worker or another process holds a core (3x slower on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main_task_retrieval.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_steps.jsonl").read_text().splitlines()]


def test_loss_decreases(trained):
    losses = _losses(trained)
    assert len(losses) == EPOCHS * (CONFIG.num_train // 32)  # one JSON line per optimizer step
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    # log(32) = 3.47 at the start; the run ends near 1.3
    assert last < 0.6 * first, (first, last)


def test_recall_far_above_chance(trained):
    results = json.loads((trained / "results_test_eval.json").read_text())
    assert results["num_videos"] == NUM_TEST and results["num_captions"] == NUM_TEST
    chance = 100.0 / NUM_TEST
    t2v = results["plain"]["t2v"]
    # held-out clips (no test content is in train): the run reaches about 28 (chance 1.7)
    assert t2v["R1"] > 6 * chance, t2v
    assert t2v["R5"] > 3 * 5 * chance, t2v


def test_temporal_report_is_in_the_results(trained):
    results = json.loads((trained / "results_test_eval.json").read_text())
    temporal = results["temporal"]
    for kind in ("direction", "order"):
        assert temporal[kind]["queries"] == 2 * NUM_TEST // 3
        assert 0.0 <= temporal[kind]["R1"] <= 100.0 and 0.0 <= temporal[kind]["twin_acc"] <= 100.0
    assert "temporal twins direction" in (trained / "log.txt").read_text()
