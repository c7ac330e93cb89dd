"""Running the sections: each one guarded, each with a time budget.

Isolated (the default on a GPU): every section runs in a child process of its own
(`python -m bench.gpu_check --child NAME`), in a session of its own, with a hard timeout of
its budget plus a grace period. A crash, a CUDA error that poisons the context or a hang then
costs only that section; what it wrote before is kept (the recorder saves after every row).
The section itself also watches its budget and skips the measurements left when it is spent.

In-process (the default with --smoke): the same section functions are called one after the
other in this process, each inside try/except; only the cooperative budget applies. It saves
three torch start-ups, which is most of the smoke run's time on a small CPU machine.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.gpu_check.recorder import SectionRecorder, write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 15.0  # beyond a section's budget before its process is killed


@dataclass(frozen=True)
class Section:
    name: str
    module: str
    budget_s: float  # on a GPU; with the grace periods the sum stays under 8 minutes (480 s)


SECTIONS = {
    s.name: s
    for s in (
        Section("correctness", "bench.gpu_check.correctness", 65),
        Section("tower", "bench.gpu_check.tower_speed", 115),
        Section("eval", "bench.gpu_check.eval_e2e", 135),
        Section("train", "bench.gpu_check.train_speed", 95),
    )
}
SMOKE_BUDGET_S = 900.0  # smoke runs every measurement: the budget only guards against hangs


def section_path(out: Path, name: str) -> Path:
    return out / "sections" / f"{name}.json"


def budget_for(section: Section, smoke: bool) -> float:
    return SMOKE_BUDGET_S if smoke else section.budget_s


def run_here(name: str, out: Path, device: str, smoke: bool, budget_s: float) -> dict:
    """Run one section in this process; never raises (the error goes into the record)."""
    import torch

    from bench.gpu_check.common import Context, usable_cores

    section = SECTIONS[name]
    module = importlib.import_module(section.module)
    rec = SectionRecorder(name, module.TITLE, section_path(out, name), budget_s)
    ctx = Context(device=torch.device(device), smoke=smoke, out=out, cores=usable_cores())
    print(f"[gpu_check] {name}: started (budget {budget_s:.0f} s)", file=sys.stderr, flush=True)
    cpu_before = cpu_seconds()
    error = None
    try:
        module.run(ctx, rec)
    except Exception as caught:  # noqa: BLE001 - a failing section must not stop the others
        error = caught
    rec.data["cpu_s"] = round(cpu_seconds() - cpu_before, 1)
    data = rec.finish(error)
    print(f"[gpu_check] {name}: {data['status']} in {data['seconds']:.1f} s", file=sys.stderr, flush=True)
    return data


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (torchrun, loader workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_isolated(name: str, out: Path, device: str, smoke: bool, budget_s: float) -> dict:
    """Run one section in a child process with a hard timeout; returns its record."""
    command = [sys.executable, "-m", "bench.gpu_check", "--child", name, "--out", str(out), "--device", device,
               "--budget", str(budget_s)] + (["--smoke"] if smoke else [])
    log_path = out / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            code = process.wait(timeout=budget_s + GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the section's own session: torchrun, loader workers
            process.wait()
            code = None
    return settle_record(name, out, code, time.monotonic() - started, budget_s, log_path)


def settle_record(name: str, out: Path, code: int | None, seconds: float, budget_s: float, log_path: Path) -> dict:
    """The child's record, marked "timeout" when it was killed and "failed" when it died
    before finishing (segfault, out of memory...)."""
    path = section_path(out, name)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {"section": name, "title": name, "rows": [], "checks": [], "targets": [], "notes": [], "info": {}}
    data["seconds"] = round(seconds, 2)
    data["budget_s"] = budget_s
    if code is None:
        data["status"] = "timeout"
        data["error"] = f"killed after {seconds:.0f} s (budget {budget_s:.0f} s + {GRACE_S:.0f} s grace)"
    elif data.get("status") in (None, "running") or code != 0:
        data["status"] = "failed"
        data.setdefault("error", f"the section's process exited with code {code} before finishing")
    data["log"] = str(log_path)
    write_json_atomic(path, data)
    print(f"[gpu_check] {name}: {data['status']} in {seconds:.1f} s", file=sys.stderr, flush=True)
    return data
