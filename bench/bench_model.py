"""Video-tower throughput and memory: our CLIP image tower vs open_clip's on the same weights.

The video tower of CLIP4Clip / InternVideo's CLIP path is CLIP's image tower applied to
every frame, so one "video" is `--frames` images (default 12 at 224 px, ViT-B/32 shape,
random weights, inference under `torch.no_grad`). Three precisions:

* `fp32`           fp32 weights and input.
* `bf16-autocast`  fp32 weights, `torch.autocast(dtype=torch.bfloat16)`.
* `bf16-weights`   the model cast with `.to(torch.bfloat16)`, bf16 input.

Speed: both implementations live in one process and share one state dict (open_clip's
`ViT-B-32-quickgelu`, seed 0, written to a temporary file that ours loads through the model
factory, as `--pretrained_clip_name` does). After one warm-up call
each, every repeat times one call of each implementation, alternating which goes first,
and the table shows the median (and range) over repeats.

Memory: each (implementation, precision) runs in a fresh subprocess that builds only that
model. On CPU the number is the rise of the kernel's peak resident set (`VmHWM`, reset to
the current RSS through `/proc/self/clear_refs` just before the call) during one forward
call, above the resident set just before it (`/proc/self/statm`). The child runs with
`MALLOC_MMAP_THRESHOLD_=65536` so large tensors are mapped and unmapped on their own and the
RSS follows live memory. Where the high-water mark cannot be reset, `ru_maxrss` (which never
goes down; hence one process per configuration) is used and a rise that set no new peak is
flagged "(<=)". On CUDA it is `torch.cuda.max_memory_allocated` above the allocation
before the call. The rise covers activations, kernel workspaces and, under autocast, the
bf16 copies of the weights; "weights" is the image tower's parameter size.

    python -m bench.bench_model [--threads 2 --videos 1 --repeats 3 --device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from modules.factory import CLIPSource, ModelSpec, create_model
from modules.modeling import RetrievalConfig

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16-autocast", "bf16-weights")
IMPLS = ("ours", "open_clip")
OPEN_CLIP_NAME = "ViT-B-32-quickgelu"  # OpenAI's ViT-B/32 architecture (QuickGELU)
VIT_B32 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--videos", type=int, default=1, help="videos per forward call")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--no-memory", action="store_true", help="skip the per-subprocess memory runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "impl:precision" in a memory subprocess
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- models
def _open_clip_model(device):
    import open_clip  # optional: only the benchmark needs it

    torch.manual_seed(0)
    return open_clip.create_model(OPEN_CLIP_NAME, pretrained=None).eval().to(device)


def _ours(clip: CLIPSource, device):
    """The CLIP of the retrieval model the factory builds (nothing frozen)."""
    return create_model(ModelSpec(clip=clip, head=RetrievalConfig(freeze_layer_num=-1))).clip.eval().to(device)


def _ours_from(state_dict, device):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.pt"
        torch.save(state_dict, path)
        return _ours(CLIPSource(name=str(path)), device)


def _ours_random(device):
    """Our model with the same shapes, without materialising an open_clip model."""
    torch.manual_seed(0)
    return _ours(CLIPSource(config=VIT_B32), device)


def _prepare(model, precision: str):
    """(model, input dtype, autocast context factory) for one precision."""
    if precision == "bf16-weights":
        return model.to(torch.bfloat16), torch.bfloat16, contextlib.nullcontext
    if precision == "bf16-autocast":
        device_type = next(model.parameters()).device.type
        return model, torch.float32, lambda: torch.autocast(device_type, dtype=torch.bfloat16)
    return model, torch.float32, contextlib.nullcontext


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _images(args, dtype, device):
    gen = torch.Generator().manual_seed(1)
    n = args.videos * args.frames
    return torch.randn(n, 3, args.resolution, args.resolution, generator=gen).to(device=device, dtype=dtype)


def _visual_param_mib(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.visual.parameters()) / 2**20


# ----------------------------------------------------------------------------- speed
def measure_speed(args: argparse.Namespace, precisions: list[str]) -> dict:
    reference = _open_clip_model(args.device)
    ours = _ours_from(reference.state_dict(), args.device)
    results = {}
    for precision in precisions:
        models, autocast = {}, None
        for name, base in (("ours", ours), ("open_clip", reference)):
            base = copy.deepcopy(base) if precision == "bf16-weights" else base
            models[name], dtype, autocast = _prepare(base, precision)
        x = _images(args, dtype, args.device)
        times: dict[str, list[float]] = {name: [] for name in models}
        cpu: dict[str, list[float]] = {name: [] for name in models}
        with torch.no_grad(), autocast():
            for model in models.values():  # warm-up: kernel selection, allocator growth
                model.encode_image(x)
            for rep in range(args.repeats):
                order = list(models) if rep % 2 == 0 else list(models)[::-1]
                for name in order:
                    _sync(args.device)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    models[name].encode_image(x)
                    _sync(args.device)
                    times[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
        for name, ts in times.items():
            results[(name, precision)] = {"times": ts, "cpu": cpu[name], "weights_mib": _visual_param_mib(models[name])}
        print(f"  {precision}: " + ", ".join(f"{n} {statistics.median(t):.3f}s" for n, t in times.items()),
              file=sys.stderr, flush=True)
        del models
    return results


# ----------------------------------------------------------------------------- memory
def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _hwm_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(args: argparse.Namespace) -> dict:
    """One (impl, precision) in this fresh process: peak memory rise of one forward call."""
    impl, precision = args.child.split(":")
    model = _ours_random(args.device) if impl == "ours" else _open_clip_model(args.device)
    model, dtype, autocast = _prepare(model, precision)
    x = _images(args, dtype, args.device)
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        hwm_reset = _reset_peak_rss()
        before, peak_before = _rss_mib(), (_hwm_mib() if hwm_reset else _maxrss_mib())
    with torch.no_grad(), autocast():
        model.encode_image(x)
    if cuda:
        torch.cuda.synchronize()
        return {"rise_mib": torch.cuda.max_memory_allocated() / 2**20 - before, "new_peak": True}
    peak = _hwm_mib() if hwm_reset else _maxrss_mib()
    # Without a resettable high-water mark, a peak left over from the build can hide the
    # calls' own peak; the rise is then only an upper bound, flagged "(<=)" in the table.
    return {"rise_mib": peak - before, "new_peak": peak > peak_before}


def measure_memory(args: argparse.Namespace, precisions: list[str]) -> dict:
    results = {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for precision in precisions:
        for impl in IMPLS:
            cmd = [sys.executable, "-m", "bench.bench_model", "--child", f"{impl}:{precision}", "--device", args.device,
                   "--threads", str(args.threads), "--frames", str(args.frames), "--videos", str(args.videos),
                   "--resolution", str(args.resolution)]
            out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
            results[(impl, precision)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  memory {impl} {precision}: {results[(impl, precision)]}", file=sys.stderr, flush=True)
    return results


# ----------------------------------------------------------------------------- report
def format_table(args: argparse.Namespace, speed: dict, memory: dict) -> str:
    lines = [
        "| impl | precision | videos/s (median) | range | CPU s/video (median) | forward peak rise (MiB) "
        "| image-tower weights (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for precision in _ordered(speed):
        for impl in IMPLS:
            entry = speed[(impl, precision)]
            rates = [args.videos / t for t in entry["times"]]
            mem = memory.get((impl, precision))
            mem_txt = "-" if mem is None else f"{mem['rise_mib']:.0f}" + ("" if mem["new_peak"] else " (<=)")
            cpu_per_video = statistics.median(entry["cpu"]) / args.videos
            lines.append(f"| {impl} | {precision} | {statistics.median(rates):.3f} | "
                         f"{min(rates):.3f}-{max(rates):.3f} | {cpu_per_video:.2f} | {mem_txt} | "
                         f"{entry['weights_mib']:.0f} |")
    lines.append("")
    def ratio(a: tuple[str, str], b: tuple[str, str]) -> str:
        wall = statistics.median(speed[b]["times"]) / statistics.median(speed[a]["times"])
        cpu = statistics.median(speed[b]["cpu"]) / statistics.median(speed[a]["cpu"])
        return f"{wall:.2f}x (wall-clock medians), {cpu:.2f}x (CPU-time medians)"

    for precision in _ordered(speed):
        lines.append(f"- speed of ours relative to open_clip, {precision}: "
                     f"{ratio(('ours', precision), ('open_clip', precision))}")
    for precision in ("bf16-autocast", "bf16-weights"):
        if ("ours", "fp32") in speed and ("ours", precision) in speed:
            lines.append(f"- speed of ours {precision} relative to ours fp32: "
                         f"{ratio(('ours', precision), ('ours', 'fp32'))}")
    return "\n".join(lines)


def _ordered(speed: dict) -> list[str]:
    present = {p for _, p in speed}
    return [p for p in PRECISIONS if p in present]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_child(args)))
        return
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise SystemExit(f"unknown precisions {sorted(unknown)}; choose from {PRECISIONS}")
    started, load_before = time.time(), os.getloadavg()
    speed = measure_speed(args, precisions)
    memory = {} if args.no_memory else measure_memory(args, precisions)
    print(f"ViT-B/32 image tower, {args.videos} video(s) x {args.frames} frames at {args.resolution} px per call, "
          f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.repeats} repeats, {time.time() - started:.0f} s total, load average "
          f"{load_before[0]:.1f} at start / {os.getloadavg()[0]:.1f} at end on {os.cpu_count()} CPUs\n")
    print(format_table(args, speed, memory))


if __name__ == "__main__":
    main()
