"""Shared pieces of the GPU check's sections: model shapes, building models the way
`main_task_retrieval.py` does, random batches, one training step, timing and peak memory."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# CLIPConfig fields of random CLIPs (`--clip_config`). SMALL and TINY keep embed_dim equal to
# the text width, as seqTransf needs.
VIT_B32 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
VIT_L14 = dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
               context_length=77, vocab_size=49408, transformer_width=768, transformer_heads=12, transformer_layers=12)
SMALL = dict(embed_dim=256, image_resolution=224, vision_layers=4, vision_width=256, vision_patch_size=32,
             context_length=77, vocab_size=49408, transformer_width=256, transformer_heads=4, transformer_layers=4)
TINY = dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
            context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)

SOT, EOT = 49406, 49407  # CLIP's start and end tokens (EOT is the largest id: EOT pooling finds it by argmax)


@dataclass(frozen=True)
class Context:
    """What every section gets: where to run, how big, where to write."""

    device: torch.device
    smoke: bool
    out: Path
    cores: int

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def usable_cores() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_info(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": str(device), "cpu_count": usable_cores(),
            "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


# ----------------------------------------------------------------------------- models
def retrieval_args(output_dir: Path, *extra: str) -> argparse.Namespace:
    """The arguments `main_task_retrieval.py` would parse (its defaults plus `extra`)."""
    import main_task_retrieval

    return main_task_retrieval.get_args(["--do_eval", "--output_dir", str(output_dir), *extra])


def clip_config_args(fields: dict) -> list[str]:
    return ["--clip_config", json.dumps(fields)]


def build_model(args: argparse.Namespace) -> nn.Module:
    """The model `main_task_retrieval.py` builds from `args` (fp32, on the CPU), through the
    model factory."""
    from engine.builders import model_spec_from_args
    from modules.factory import create_model

    return create_model(model_spec_from_args(args))


# ----------------------------------------------------------------------------- inputs
def random_batch(videos: int, frames: int, resolution: int, max_words: int, seed: int = 0,
                 padded_frames: int = 0, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Captions laid out as the loaders write them (SOT, words, EOT, zero padding) and
    normalised-image-like videos [N, T, 3, S, S]; the last video has `padded_frames` masked slots."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(videos, max_words, dtype=torch.long)
    mask = torch.zeros_like(ids)
    lengths = torch.randint(1, max_words - 1, (videos,), generator=gen)
    for i, n in enumerate(lengths.tolist()):
        ids[i, 0], ids[i, n + 1] = SOT, EOT
        ids[i, 1 : n + 1] = torch.randint(1, SOT, (n,), generator=gen)
        mask[i, : n + 2] = 1
    video = torch.randn(videos, frames, 3, resolution, resolution, generator=gen)
    video_mask = torch.ones(videos, frames, dtype=torch.long)
    if padded_frames:
        video[-1, frames - padded_frames :] = 0
        video_mask[-1, frames - padded_frames :] = 0
    batch = {"input_ids": ids, "input_mask": mask, "video": video, "video_mask": video_mask}
    return {k: v.to(device) for k, v in batch.items()}


# ----------------------------------------------------------------------------- training
def trainer_for(model: nn.Module, args: argparse.Namespace, device: torch.device, total_steps: int = 100):
    """The engine's Trainer (autocast, GradScaler for fp16, clipping, logit-scale clamp) with
    the engine's optimizer, on one process without a group."""
    from engine import builders
    from engine.distributed import DistInfo
    from engine.training import Trainer, TrainState

    optimizer, scheduler = builders.optimizer_and_schedule(model, args, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    return Trainer(model, model, optimizer, scheduler, scaler, DistInfo(device=device), args, TrainState())


def precision_args(precision: str) -> list[str]:
    """`--precision` and `--clip_weights` for fp32, bf16, fp16 (autocast; fp32 weights) or
    fp16-weights (CLIP's matrices in fp16 as CLIP4Clip trains them, no autocast). Always
    explicit: `--clip_weights auto` would pick fp16 weights for fp32 runs on a GPU."""
    if precision == "fp16-weights":
        return ["--precision", "fp32", "--clip_weights", "fp16"]
    return ["--precision", precision, "--clip_weights", "fp32"]


def train_args(output_dir: Path, precision: str, *extra: str) -> argparse.Namespace:
    """Training arguments: the engine's defaults, `precision` (see `precision_args`), no step logging."""
    return retrieval_args(output_dir, "--do_train", *precision_args(precision), "--n_display", "1000000",
                          "--warmup_proportion", "0", *extra)


def train_steps(trainer, batch: dict, steps: int) -> float:
    """Run `steps` optimizer steps on the same batch through `Trainer.train_epoch`; mean loss."""
    summary = trainer.train_epoch([batch] * steps, epoch=0)
    return summary["loss"]


# ----------------------------------------------------------------------------- measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> float | None:
    """Start a peak-memory window; returns the MiB allocated now (None on the CPU)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / 2**20


def peak_mib(device: torch.device) -> float | None:
    """Peak MiB allocated since `reset_peak` (torch.cuda.max_memory_allocated; None on the CPU)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def seconds_of(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference| (both moved to the CPU in fp32)."""
    value, reference = value.detach().float().cpu(), reference.detach().float().cpu()
    return float((value - reference).abs().max() / reference.abs().max().clamp(min=1e-12))


def release(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
