"""Shared pieces of the entry-point tests: tiny synthetic data and the arguments to run on it."""

from __future__ import annotations

import json
from pathlib import Path

TINY_CLIP = {
    "embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 32, "vision_patch_size": 16,
    "context_length": 77, "vocab_size": 49408, "transformer_width": 32, "transformer_heads": 1,
    "transformer_layers": 1,
}


def make_synthetic(out: Path, seed: int = 0, num_train: int = 24, num_test: int = 18) -> Path:
    from synthetic.generate import SyntheticConfig, generate

    generate(out, SyntheticConfig(seed=seed, num_train=num_train, num_test=num_test), workers=1)
    return out


def data_args(data: Path) -> list[str]:
    return ["--datatype", "synthetic", "--data_path", str(data / "MSRVTT_data.json"),
            "--train_csv", str(data / "synthetic_train.csv"), "--val_csv", str(data / "synthetic_test.csv"),
            "--features_path", str(data / "videos"), "--feature_framerate", "8", "--max_frames", "8",
            "--slice_framepos", "0", "--max_words", "16"]


def tiny_run_args(data: Path, output_dir: Path, *extra: str) -> list[str]:
    return [*data_args(data), "--clip_config", json.dumps(TINY_CLIP), "--output_dir", str(output_dir),
            "--num_thread_reader", "0", "--freeze_layer_num", "-1", "--n_display", "1", *extra]


def read_results(output_dir: Path, name: str) -> dict:
    return json.loads((output_dir / name).read_text())


def read_steps(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "train_steps.jsonl").read_text().splitlines()]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, argv: list[str]) -> None:
    """One torchrun-like process: the launcher's environment, then the real entry point."""
    import os

    import torch

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import main_task_retrieval

    main_task_retrieval.main(argv)


def run_processes(argv: list[str], world_size: int) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world_size, free_port(), argv), nprocs=world_size, join=True)
