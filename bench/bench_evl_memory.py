"""Peak memory of one training step of InternVideo's video encoder, with and without
gradient checkpointing (`InternVideoCLIP.set_grad_checkpointing`).

Default: a reduced ViT-L/14 EVL encoder (width 1024, 6 blocks, the last 4 feeding the
temporal decoder), 8 frames, batch 2, 224 px, on CPU. Each configuration runs in a fresh
subprocess. On CPU the number is the rise of the process's peak resident set
(`getrusage(RUSAGE_SELF).ru_maxrss`) over its value once the model and input exist; the
subprocess runs with `MALLOC_MMAP_THRESHOLD_=65536` so large tensors are mapped and unmapped
on their own and the RSS follows live memory. The step is forward (`encode_video`), a scalar
loss and backward, from fresh gradients, so the rise includes the gradient buffers (the same
in both rows, shown separately). `--device cuda` reports `torch.cuda.max_memory_allocated`
above the allocation after the build instead.

    python -m bench.bench_evl_memory [--layers 6 --frames 8 --batch 2 --device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from modules.factory import CLIPSource, InternVideoSpec, ModelSpec, create_model
from modules.modeling import RetrievalConfig

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--patch", type=int, default=14)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--embed", type=int, default=768)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--child", choices=["off", "on"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def evl_spec(args: argparse.Namespace) -> ModelSpec:
    """A random CLIP of the requested vision size (a token text tower) under InternVideo's encoder."""
    clip = dict(embed_dim=args.embed, image_resolution=args.resolution, vision_layers=args.layers,
                vision_width=args.width, vision_patch_size=args.patch, context_length=8, vocab_size=16,
                transformer_width=64, transformer_heads=1, transformer_layers=1)
    return ModelSpec(clip=CLIPSource(config=clip), head=RetrievalConfig(freeze_layer_num=-1),
                     internvideo=InternVideoSpec(t_size=args.frames))


def run_child(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = create_model(evl_spec(args)).clip.to(device).train()
    model.set_grad_checkpointing(args.child == "on")
    video = torch.randn(args.batch, args.frames, 3, args.resolution, args.resolution, device=device)
    visual_params = [p for n, p in model.named_parameters() if n.startswith("visual")]
    grad_mib = sum(p.numel() * p.element_size() for p in visual_params) / 2**20
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _maxrss_mib()
    start = time.perf_counter()
    out = model.encode_video(video)
    out.float().square().mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _maxrss_mib()
    seconds = time.perf_counter() - start
    return {"checkpointing": args.child, "step_peak_mib": peak - base, "grad_mib": grad_mib,
            "activation_mib": peak - base - grad_mib, "baseline_mib": base, "seconds": seconds,
            "device": str(device), "threads": torch.get_num_threads()}


def run_config(args: argparse.Namespace, checkpointing: str) -> dict:
    argv = [sys.executable, "-m", "bench.bench_evl_memory", "--child", checkpointing]
    for name in ("width", "layers", "patch", "resolution", "frames", "batch", "embed", "device", "threads"):
        argv += [f"--{name}", str(getattr(args, name))]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed ({checkpointing}):\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return
    rows = [run_config(args, mode) for mode in ("off", "on")]
    what = "peak RSS rise" if args.device == "cpu" else "peak allocated"
    print(f"EVL encoder: width {args.width}, {args.layers} blocks (last 4 -> decoder), patch {args.patch}, "
          f"{args.resolution}px, batch {args.batch} x {args.frames} frames, device {args.device}, "
          f"{rows[0]['threads']} threads; one forward+backward step, {what} over the built model")
    print()
    print("| grad checkpointing | step peak (MiB) | of which grads (MiB) | activations etc. (MiB) | step time (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['checkpointing']} | {row['step_peak_mib']:.0f} | {row['grad_mib']:.0f} | "
              f"{row['activation_mib']:.0f} | {row['seconds']:.1f} |")
    off, on = rows
    print()
    print(f"checkpointing saves {off['step_peak_mib'] - on['step_peak_mib']:.0f} MiB "
          f"({100 * (1 - on['activation_mib'] / off['activation_mib']):.0f}% of the activation memory)")


if __name__ == "__main__":
    main()
