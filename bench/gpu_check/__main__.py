"""`python -m bench.gpu_check`: the GPU check, at most 8 minutes on one GPU.

Sections (each guarded and time-budgeted, see `runner.py`):

1. correctness  features, similarity and one training step per precision on the device
                against the CPU; a one-process NCCL group through torchrun (correctness.py)
2. tower        video tower speed and peak memory, ours vs open_clip, ViT-B/32 and ViT-L/14,
                fp32 and bf16, a few batch sizes; what torch.compile adds (tower_speed.py)
3. eval         zero-shot evaluation of 1000 generated clips through main_task_retrieval.py
                against decoding the same frames alone (eval_e2e.py)
4. train        training throughput: ViT-B/32 meanP, InternVideo's L/14 encoder (train_speed.py)

Writes `<out>/gpu_check.json` and `<out>/gpu_check.md` (and per-section records and logs).
`--smoke` runs every section at toy sizes (on the CPU when there is no GPU: the CPU stands in
for CUDA and gloo for NCCL), in-process, in seconds: the test suite runs it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.gpu_check import report, runner


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="toy sizes, every code path (CPU is fine)")
    p.add_argument("--out", type=Path, default=Path("output/gpu_check"), help="report, records, caches")
    p.add_argument("--sections", nargs="+", default=list(runner.SECTIONS),
                   help=f"any of {', '.join(runner.SECTIONS)} (default: all, in this order)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu (--smoke only)")
    isolation = p.add_mutually_exclusive_group()
    isolation.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                           help="one child process per section (default without --smoke)")
    isolation.add_argument("--in-process", dest="isolate", action="store_false",
                           help="all sections in this process (default with --smoke)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # run this one section here (isolated mode)
    p.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sections = [s for item in args.sections for s in item.split(",") if s]
    unknown = [s for s in sections if s not in runner.SECTIONS]
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {list(runner.SECTIONS)}")
    args.sections = sections
    if args.isolate is None:
        args.isolate = not args.smoke
    return args


def resolve_device(args: argparse.Namespace) -> str:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type != "cuda" and not args.smoke:
        raise SystemExit("bench.gpu_check: no CUDA device. The full check needs a GPU; "
                         "on the CPU run `python -m bench.gpu_check --smoke` (toy sizes).")
    return device


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    if args.child:
        runner.run_here(args.child, out, args.device, args.smoke, args.budget)
        return 0
    device = resolve_device(args)
    started = time.monotonic()
    run = runner.run_isolated if args.isolate else runner.run_here
    records = {}
    for name in args.sections:
        records[name] = run(name, out, device, args.smoke, runner.budget_for(runner.SECTIONS[name], args.smoke))
    summary = report.write(out, records, command=["python", "-m", "bench.gpu_check", *(argv or sys.argv[1:])],
                           smoke=args.smoke, device=device, isolated=args.isolate,
                           seconds=time.monotonic() - started)
    print(summary)
    return 0 if all(r.get("status") == "ok" for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
