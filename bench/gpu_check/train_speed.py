"""Section 4: training throughput and peak memory (the model's part of a training step).

The engine's Trainer and optimizer (AdamW, clipping, GradScaler where used) run optimizer
steps on one batch already on the device, so data loading is not measured (section 3 covers
the loader). Per configuration: WARMUP steps (kernel selection, optimizer state), then
STEPS timed steps; samples/s, and the peak of torch.cuda.max_memory_allocated over the timed
steps (weights, gradients, optimizer state and activations).

* ViT-B/32 meanP (random weights), batch 128 x 12 frames, 224 px: fp32, bf16 autocast, and
  fp16 CLIP weights as CLIP4Clip trains them (`--clip_weights fp16`: no autocast, no loss scaling).
* InternVideo's ViT-L/14 encoder (`--clip_evl`, random weights), batch 16 x 8 frames, bf16
  autocast, with and without gradient checkpointing.
"""

from __future__ import annotations

import time

import torch

from bench.gpu_check import common
from bench.gpu_check.recorder import SectionRecorder

TITLE = "Training throughput"
WARMUP, STEPS = 2, 4
MAX_WORDS = 32


def configurations(smoke: bool) -> list[dict]:
    """Each: label, CLIPConfig fields, batch, frames, precision, extra arguments."""
    b32, l14 = (common.TINY, common.TINY) if smoke else (common.VIT_B32, common.VIT_L14)
    batch, frames, evl_batch, evl_frames = (4, 2, 2, 2) if smoke else (128, 12, 16, 8)
    configs = [dict(model="ViT-B/32 meanP", fields=b32, batch=batch, frames=frames, precision=p, extra=[])
               for p in ("fp32", "bf16", "fp16-weights")]
    for checkpointing in (False, True):
        configs.append(dict(model="InternVideo L/14", fields=l14, batch=evl_batch, frames=evl_frames,
                            precision="bf16", grad_checkpointing=checkpointing,
                            extra=["--clip_evl", "--max_words", "77"] + (["--grad_checkpointing"] if checkpointing else [])))
    return configs


def run(ctx: common.Context, rec: SectionRecorder) -> None:
    warmup, steps = (1, 1) if ctx.smoke else (WARMUP, STEPS)
    rec.info(**common.device_info(ctx.device), warmup_steps=warmup, timed_steps=steps)
    for config in configurations(ctx.smoke):
        shown = {k: v for k, v in config.items() if k not in ("fields", "extra")}
        if ctx.smoke:
            shown["model"] += " (toy size)"
        rec.measure({"part": "training", **shown}, lambda row, c=config: measure(ctx, row, c, warmup, steps))
        common.release(ctx.device)
    checkpointing_check(rec)


def checkpointing_check(rec: SectionRecorder) -> None:
    """On a GPU: gradient checkpointing must lower the InternVideo step's peak memory."""
    peaks = {r.get("grad_checkpointing"): r.get("peak MiB") for r in rec.data["rows"]
             if r.get("status") == "ok" and "grad_checkpointing" in r}
    if peaks.get(True) is not None and peaks.get(False) is not None:
        rec.check("InternVideo L/14: gradient checkpointing lowers the peak memory", peaks[True] < peaks[False],
                  f"{peaks[False]:.0f} MiB without, {peaks[True]:.0f} MiB with")


def measure(ctx, row: dict, config: dict, warmup: int, steps: int) -> None:
    extra = config["extra"] if "--max_words" in config["extra"] else ["--max_words", str(MAX_WORDS), *config["extra"]]
    args = common.train_args(ctx.out / "scratch", config["precision"], *common.clip_config_args(config["fields"]),
                             "--max_frames", str(config["frames"]), *extra)
    model = common.build_model(args).to(ctx.device)  # fp16-weights: cast by the factory (--clip_weights fp16)
    trainer = common.trainer_for(model, args, ctx.device)
    batch = common.random_batch(config["batch"], config["frames"], config["fields"]["image_resolution"],
                                args.max_words, device=ctx.device)
    common.train_steps(trainer, batch, warmup)
    common.reset_peak(ctx.device)
    common.synchronize(ctx.device)
    start = time.perf_counter()
    loss = common.train_steps(trainer, batch, steps)
    common.synchronize(ctx.device)
    seconds = time.perf_counter() - start
    row.update({"samples/s": round(config["batch"] * steps / seconds, 2), "s/step": round(seconds / steps, 3),
                "peak MiB": common.peak_mib(ctx.device), "loss": loss,
                "params M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                "fp16 tensors": sum(p.dtype == torch.float16 for p in model.parameters())})
    if not torch.isfinite(torch.tensor(loss)):
        raise FloatingPointError(f"non-finite training loss {loss}")
