"""Section 3: end-to-end zero-shot evaluation, and where its time goes.

1000 generated 10 s, 224 px, 3 fps clips (`clips.py`, made on all cores, cached in the out
folder) are evaluated by `main_task_retrieval.main` (called in this process) with a random
ViT-B/32, meanP, 12 frames a clip (uniform over the 30 frames: `--feature_framerate 3
--slice_framepos 2`) and DataLoader workers = CPU cores, with the entry point's default
`--clip_weights auto` (fp16 CLIP weights for fp32 runs on a GPU, as published). Per configuration (batch size,
precision) the same process also measures:

* decoding alone: the evaluation's own video dataset through a DataLoader with the same
  workers, batches and pinned memory, nothing else (worker start-up included, as in the run);
* the model alone: the same number of video batches (random tensors already on the device),
  the captions and the similarity matrix, with the same autocast.

Reported: the run's wall time (model build included) and its evaluation time (from the
results file), the shares of decoding and of the model in the evaluation time, and the target:
the whole run within 1.3x of decoding alone (decode-bound).
"""

from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader

from bench.gpu_check import common
from bench.gpu_check.clips import ClipSet, ensure_clips, loader_args
from bench.gpu_check.recorder import SectionRecorder

TITLE = "End-to-end zero-shot evaluation"
TARGET_RATIO = 1.3
FRAMES = 12
MAX_WORDS = 32
# (label, --batch_size_val, --precision); the first is zeroshot_scripts/eval_msrvtt.sh MODEL=clip-b
FULL_RUNS = (("eval_msrvtt.sh settings", 128, "fp32"), ("smaller batches", 32, "fp32"),
             ("smaller batches, bf16", 32, "bf16"))
SMOKE_RUNS = (("toy", 4, "fp32"),)
SMOKE_CLIPS = ClipSet(count=8, size=32, seconds=2, fps=6)


def run(ctx: common.Context, rec: SectionRecorder) -> None:
    clipset = SMOKE_CLIPS if ctx.smoke else ClipSet()
    shape = common.TINY if ctx.smoke else common.VIT_B32
    frames = 4 if ctx.smoke else FRAMES
    # smoke: one loader worker still runs the worker path; clips are then made in this process
    workers = 1 if ctx.smoke else ctx.cores
    rec.info(**common.device_info(ctx.device), clips=clipset.count, workers=workers, frames_per_clip=frames)
    started = time.perf_counter()
    folder, seconds = ensure_clips(ctx.out / "cache", clipset, workers=workers)
    rec.row({"part": "clips", "clips": clipset.count, "size": clipset.size, "seconds of video": clipset.seconds,
             "fps": clipset.fps, "generated in s": None if seconds is None else round(seconds, 1),
             "cached": seconds is None, "row_s": round(time.perf_counter() - started, 2)})
    rec.measure({"part": "loader workers", "workers": workers}, lambda row: row.update(
        {"first start s (forkserver imports torch)": round(start_worker_server(workers), 2)}))
    if seconds is not None:
        rec.check("clip generation within a minute", seconds <= 60, f"{seconds:.1f} s on {workers} processes")
    for label, batch_size, precision in SMOKE_RUNS if ctx.smoke else FULL_RUNS:
        argv = [*loader_args(folder), *common.clip_config_args(shape), "--max_frames", str(frames),
                "--feature_framerate", str(clipset.fps), "--slice_framepos", "2",
                "--max_words", str(MAX_WORDS), "--batch_size_val", str(batch_size), "--precision", precision,
                "--num_thread_reader", str(workers), "--device", str(ctx.device)]
        config = {"part": "evaluation", "run": label, "batch_size_val": batch_size, "precision": precision}
        rec.measure(config, lambda row, argv=argv, label=label: measure_run(ctx, rec, row, argv, label))
        common.release(ctx.device)


def measure_run(ctx, rec, row: dict, argv: list[str], label: str) -> None:
    import main_task_retrieval
    from engine.builders import model_spec_from_args

    output_dir = ctx.out / "eval_runs" / label.replace(" ", "_").replace(",", "")
    args = common.retrieval_args(output_dir, *argv)
    row["clip weights"] = model_spec_from_args(args).clip_weights  # --clip_weights auto: fp16 on a GPU with fp32
    row["decode alone s"] = decode_alone(args, ctx.device)  # unrounded: report.fmt rounds for display
    start = time.perf_counter()
    main_task_retrieval.main(["--do_eval", "--output_dir", str(output_dir), *argv])
    row["run wall s"] = time.perf_counter() - start
    results = json.loads((output_dir / "results_test_eval.json").read_text())
    row["eval s"] = results["seconds"]
    row["model alone s"] = model_alone(args, results["num_videos"], results["num_captions"], ctx.device)  # toy: < 5 ms
    row["decode share"] = round(row["decode alone s"] / max(row["eval s"], 1e-9), 3)
    row["model share"] = round(row["model alone s"] / max(row["eval s"], 1e-9), 3)
    row["run / decode"] = round(row["run wall s"] / row["decode alone s"], 3)
    row["videos"] = results["num_videos"]
    rec.check(f"{label}: evaluation of every clip", results["num_videos"] == results["num_captions"] > 0
              and math.isfinite(results["plain"]["t2v"]["R1"]), f"{results['num_videos']} videos")
    rec.target(f"{label}: whole run within {TARGET_RATIO}x of decoding alone", row["run / decode"] <= TARGET_RATIO,
               f"{row['run / decode']:.2f}x (run {row['run wall s']:.1f} s, decoding {row['decode alone s']:.1f} s)")


def start_worker_server(workers: int) -> float:
    """Seconds to start the DataLoader workers' forkserver (it imports torch once), which the
    first loader of a process pays. Started here, before the measurements, so that neither
    the decode-alone pass nor the run (both in this process) pays it: each then starts its
    loaders' workers from a warm server."""
    from engine.distributed import worker_context

    start = time.perf_counter()
    loader = DataLoader(range(workers), batch_size=1, num_workers=workers,
                        multiprocessing_context=worker_context(workers))
    for _ in loader:
        pass
    return time.perf_counter() - start


def decode_alone(args, device: torch.device) -> float:
    """Seconds to load every test clip as the evaluation does (same dataset, batches, workers,
    pinned memory), with no model."""
    from engine import builders
    from engine.distributed import worker_context
    from engine.evaluation import global_batches

    size = args.clip_config["image_resolution"]  # the random CLIP's input size, parsed by get_args
    model_stub = SimpleNamespace(clip=SimpleNamespace(visual=SimpleNamespace(input_resolution=size)))
    _, _, videos = builders.eval_datasets(args, "test", model_stub)
    workers = args.num_thread_reader
    start = time.perf_counter()
    loader = DataLoader(videos, batch_sampler=global_batches(len(videos), args.batch_size_val), num_workers=workers,
                        multiprocessing_context=worker_context(workers), pin_memory=device.type == "cuda")
    for _ in loader:
        pass
    return time.perf_counter() - start


@torch.no_grad()
def model_alone(args, num_videos: int, num_captions: int, device: torch.device) -> float:
    """Seconds the model takes for the evaluation's batches, inputs already on the device."""
    from engine.training import autocast_for

    torch.manual_seed(0)
    model = common.build_model(args).to(device).eval()
    size = model.clip.visual.input_resolution
    batch = common.random_batch(args.batch_size_val, args.max_frames, size, args.max_words, device=device)

    def work():
        with autocast_for(args.precision, device):
            videos = [model.encode_video(batch["video"], batch["video_mask"])["video"]
                      for _ in range(math.ceil(num_videos / args.batch_size_val))]
            texts = [model.encode_text(batch["input_ids"], batch["input_mask"])["text"]
                     for _ in range(math.ceil(num_captions / args.batch_size_val))]
            model.similarity({"text": torch.cat(texts)[:num_captions]}, {"video": torch.cat(videos)[:num_videos]})

    with autocast_for(args.precision, device):
        model.encode_video(batch["video"], batch["video_mask"])  # warm-up
    return common.seconds_of(work, device)
