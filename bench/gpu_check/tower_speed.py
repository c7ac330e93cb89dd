"""Section 2: video tower speed and memory, ours against open_clip on the same weights.

The video tower is CLIP's image tower applied to every frame: one video is FRAMES images.
Random ViT-B/32 and ViT-L/14 CLIPs are built as open_clip models (QuickGELU, OpenAI's
architecture) and ours loads the same state dict (as bench/bench_model.py does, whose
precision and timing helpers this reuses). Per (model, precision, videos per call): one
warm-up call each, one call for the peak memory (torch.cuda.max_memory_allocated above the
allocation before the call), then REPEATS timed calls each, alternating which goes first;
videos/s is the median. Inference under torch.no_grad; precisions fp32 and bf16 autocast
(torch's default TF32 settings, as users run). Also: ours and open_clip's fp32 features
agree, and what torch.compile adds on one configuration (compile time and steady speed).
"""

from __future__ import annotations

import statistics
import time
from types import SimpleNamespace

import torch

from bench.bench_model import _ours_from, _prepare, _sync, _visual_param_mib
from bench.gpu_check import common
from bench.gpu_check.recorder import SectionRecorder

TITLE = "Video tower speed: ours vs open_clip"
FRAMES = 12
PRECISIONS = ("fp32", "bf16-autocast")
# (label, CLIPConfig fields, videos per call)
FULL_MODELS = (("ViT-B/32", common.VIT_B32, (8, 32, 128)), ("ViT-L/14", common.VIT_L14, (4, 16)))
SMOKE_MODELS = (("tiny (B/32 stand-in)", common.TINY, (1, 2)),
                ("tiny (L/14 stand-in)", dict(common.TINY, vision_patch_size=8), (1,)))
COMPILE_CONFIG = ("ViT-B/32", "bf16-autocast", 32)  # model, precision, videos per call
SAME_WEIGHTS_TOL = 1e-3  # ours vs open_clip, fp32: different attention kernels, same maths
SPEED_NOISE = 0.97  # "at least open_clip's speed" allows 3% timing noise


def open_clip_model(fields: dict):
    """open_clip's CLIP (QuickGELU, OpenAI's layout) with the sizes of our CLIPConfig fields."""
    import open_clip

    vision = {"image_size": fields["image_resolution"], "layers": fields["vision_layers"],
              "width": fields["vision_width"], "patch_size": fields["vision_patch_size"]}
    text = {"context_length": fields["context_length"], "vocab_size": fields["vocab_size"],
            "width": fields["transformer_width"], "heads": fields["transformer_heads"],
            "layers": fields["transformer_layers"]}
    return open_clip.CLIP(embed_dim=fields["embed_dim"], vision_cfg=vision, text_cfg=text, quick_gelu=True)


def run(ctx: common.Context, rec: SectionRecorder) -> None:
    frames = 2 if ctx.smoke else FRAMES
    repeats = 1 if ctx.smoke else 5
    rec.info(**common.device_info(ctx.device), frames_per_video=frames, repeats=repeats)
    models = SMOKE_MODELS if ctx.smoke else FULL_MODELS
    compile_on = models[0][0] if ctx.smoke else COMPILE_CONFIG[0]
    kept = None
    for label, fields, batches in models:
        ours = measure_model(ctx, rec, label, fields, batches, frames, repeats)
        if label == compile_on:
            kept = (label, ours, fields)
        del ours
        common.release(ctx.device)
    speed_targets(rec)
    if kept:
        label, ours, fields = kept
        precision, videos = COMPILE_CONFIG[1], (1 if ctx.smoke else COMPILE_CONFIG[2])
        config = {"part": "torch.compile", "model": label, "precision": precision, "videos/call": videos}
        rec.measure(config, lambda row: compile_row(ctx, row, ours, fields, frames, repeats))


def measure_model(ctx, rec, label: str, fields: dict, batches: tuple[int, ...], frames: int, repeats: int):
    """The speed rows of one model shape; returns our model (open_clip's is dropped)."""
    torch.manual_seed(0)
    reference = open_clip_model(fields).eval().to(ctx.device)
    ours = _ours_from(reference.state_dict(), ctx.device)
    rec.measure({"part": "same weights", "model": label},
                lambda row: same_weights(ctx, rec, row, ours, reference, fields, frames))
    for precision in PRECISIONS:
        for videos in batches:
            config = {"part": "speed", "model": label, "precision": precision, "videos/call": videos}
            rec.measure(config, lambda row: speed_row(ctx, row, ours, reference, fields, frames, repeats))
    return ours


def _images(fields: dict, videos: int, frames: int, dtype, device):
    from bench.bench_model import _images as bench_images

    return bench_images(SimpleNamespace(videos=videos, frames=frames, resolution=fields["image_resolution"]),
                        dtype, device)


@torch.no_grad()
def same_weights(ctx, rec, row: dict, ours, reference, fields: dict, frames: int) -> None:
    x = _images(fields, 2, frames, torch.float32, ctx.device)
    err = common.relative_error(ours.encode_image(x), reference.encode_image(x))
    row["fp32 max rel diff"] = err
    rec.check(f"{row['model']}: ours and open_clip give the same fp32 features within {SAME_WEIGHTS_TOL:g}",
              err <= SAME_WEIGHTS_TOL, f"{err:.2e}")


@torch.no_grad()
def speed_row(ctx, row: dict, ours, reference, fields: dict, frames: int, repeats: int) -> None:
    precision, videos = row["precision"], row["videos/call"]
    models, dtype, autocast = {}, torch.float32, None
    for name, base in (("ours", ours), ("open_clip", reference)):
        models[name], dtype, autocast = _prepare(base, precision)
    x = _images(fields, videos, frames, dtype, ctx.device)
    times: dict[str, list[float]] = {name: [] for name in models}
    with autocast():
        for name, model in models.items():
            model.encode_image(x)  # warm-up: kernel selection, allocator growth
            before = common.reset_peak(ctx.device)
            model.encode_image(x)
            peak = common.peak_mib(ctx.device)
            row[f"{name} peak rise MiB"] = None if peak is None else round(peak - before, 1)
        for rep in range(repeats):
            order = list(models) if rep % 2 == 0 else list(models)[::-1]
            for name in order:
                times[name].append(common.seconds_of(lambda m=models[name]: m.encode_image(x), ctx.device))
    for name, ts in times.items():
        row[f"{name} videos/s"] = round(videos / statistics.median(ts), 2)
    row["ours / open_clip"] = round(row["ours videos/s"] / row["open_clip videos/s"], 3)
    row["weights MiB"] = round(_visual_param_mib(ours), 1)


def speed_targets(rec: SectionRecorder) -> None:
    rows = [r for r in rec.data["rows"] if r.get("part") == "speed" and r.get("status") == "ok"]
    for r in rows:
        rec.target(f"{r['model']} {r['precision']} x{r['videos/call']}: ours at least open_clip's speed",
                   r["ours / open_clip"] >= SPEED_NOISE, f"{r['ours / open_clip']:.2f}x (3% noise allowed)")
    fp32 = {(r["model"], r["videos/call"]): r for r in rows if r["precision"] == "fp32"}
    for r in rows:
        base = fp32.get((r["model"], r["videos/call"]))
        if r["precision"] != "fp32" and base:
            ratio = r["ours videos/s"] / base["ours videos/s"]
            rec.target(f"{r['model']} x{r['videos/call']}: ours {r['precision']} at least 2x our fp32", ratio >= 2.0,
                       f"{ratio:.2f}x")


@torch.no_grad()
def compile_row(ctx, row: dict, ours, fields: dict, frames: int, repeats: int) -> None:
    """torch.compile of our image tower (inductor; dynamo with the eager backend in --smoke on
    the CPU, where inductor's C++ compile would take minutes): compile time, then speed."""
    backend = "eager" if ctx.smoke and not ctx.cuda else "inductor"
    model, dtype, autocast = _prepare(ours, row["precision"])
    x = _images(fields, row["videos/call"], frames, dtype, ctx.device)
    compiled = torch.compile(model.visual, backend=backend)
    row["backend"] = backend
    with autocast():
        start = time.perf_counter()
        compiled(x)
        _sync(ctx.device)
        row["compile s"] = round(time.perf_counter() - start, 1)
        compiled(x)
        model.visual(x)
        eager = [common.seconds_of(lambda: model.visual(x), ctx.device) for _ in range(repeats)]
        fast = [common.seconds_of(lambda: compiled(x), ctx.device) for _ in range(repeats)]
    row["eager videos/s"] = round(row["videos/call"] / statistics.median(eager), 2)
    row["compiled videos/s"] = round(row["videos/call"] / statistics.median(fast), 2)
    row["compiled / eager"] = round(statistics.median(eager) / statistics.median(fast), 3)
