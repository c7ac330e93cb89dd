"""The GPU check never rots: `python -m bench.gpu_check --smoke` runs every section on toy
sizes (on the CPU here: the CPU stands in for CUDA, gloo for NCCL) and reports each ok; the
section runner records failures, crashes and timeouts instead of stopping."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.gpu_check import report, runner
from bench.gpu_check.recorder import SectionRecorder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / report.JSON_NAME).read_text()), (out / report.MARKDOWN_NAME).read_text()


def test_smoke_runs_every_section_ok(smoke_report):
    payload, _ = smoke_report
    assert payload["smoke"] is True
    assert list(payload["sections"]) == list(runner.SECTIONS)
    for name, record in payload["sections"].items():
        assert record["status"] == "ok", (name, record.get("error"), [r for r in record["rows"] if r["status"] != "ok"],
                                          [c for c in record["checks"] if not c["passed"]])
        assert record["rows"], name


def test_smoke_covers_every_path(smoke_report):
    sections = smoke_report[0]["sections"]
    correctness = {(r["part"], r.get("model") or r.get("precision")) for r in sections["correctness"]["rows"]}
    assert {("train step", p) for p in ("fp32", "bf16", "fp16", "fp16-weights")} <= correctness
    assert ("torchrun", "meanP (tiny)") in correctness
    assert any("gloo group" in c["name"] and c["passed"] for c in sections["correctness"]["checks"])
    tower_parts = {r["part"] for r in sections["tower"]["rows"]}
    assert tower_parts == {"same weights", "speed", "torch.compile"}
    evaluation = [r for r in sections["eval"]["rows"] if r["part"] == "evaluation"]
    assert evaluation and all(r["decode alone s"] > 0 and r["model alone s"] > 0 for r in evaluation)
    precisions = {r["precision"] for r in sections["train"]["rows"]}
    assert precisions == {"fp32", "bf16", "fp16-weights"}
    assert {r.get("grad_checkpointing") for r in sections["train"]["rows"]} == {None, False, True}


def test_markdown_has_a_table_per_section(smoke_report):
    _, text = smoke_report
    for number, name in enumerate(runner.SECTIONS, start=1):
        assert f"## {number}. " in text
        assert f"| {name} | ok |" in text


# ----------------------------------------------------------------------------- runner
def test_recorder_keeps_going_after_a_failed_measurement(tmp_path):
    rec = SectionRecorder("demo", "Demo", tmp_path / "demo.json", budget_s=60)
    rec.measure({"config": 1}, lambda row: row.update(value=1.0))
    rec.measure({"config": 2}, lambda row: 1 / 0)
    data = rec.finish()
    assert [r["status"] for r in data["rows"]] == ["ok", "failed"]
    assert "ZeroDivisionError" in data["rows"][1]["error"]
    assert data["status"] == "failed"
    assert json.loads((tmp_path / "demo.json").read_text())["status"] == "failed"


def test_recorder_skips_what_the_budget_does_not_allow(tmp_path):
    rec = SectionRecorder("demo", "Demo", tmp_path / "demo.json", budget_s=0)
    row = rec.measure({"config": 1}, lambda row: row.update(value=1.0))
    assert row["status"] == "skipped" and "value" not in row
    assert rec.finish()["status"] == "partial"


def test_a_killed_section_keeps_what_it_wrote(tmp_path):
    """settle_record: a record left "running" by a process killed at its timeout."""
    SectionRecorder("demo", "Demo", runner.section_path(tmp_path, "demo"), budget_s=1).row({"done": 1})
    data = runner.settle_record("demo", tmp_path, None, 16.0, 1.0, tmp_path / "demo.log")
    assert data["status"] == "timeout" and data["rows"][0]["done"] == 1
    crashed = runner.settle_record("demo", tmp_path, -11, 3.0, 1.0, tmp_path / "demo.log")
    assert crashed["status"] == "failed"  # a child that died (e.g. a segfault) before finishing


def test_isolated_section_is_killed_at_its_budget(tmp_path, monkeypatch):
    """run_isolated kills the whole session of a section that overruns (here a sleeping child)."""
    monkeypatch.setattr(runner, "GRACE_S", 0.5)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "fake_python"))
    (tmp_path / "fake_python").write_text("#!/bin/sh\nsleep 30\n")
    (tmp_path / "fake_python").chmod(0o755)
    started = time.monotonic()
    data = runner.run_isolated("correctness", tmp_path, "cpu", True, budget_s=0.5)
    assert time.monotonic() - started < 10
    assert data["status"] == "timeout"


def test_budgets_fit_in_eight_minutes():
    worst = sum(s.budget_s + runner.GRACE_S for s in runner.SECTIONS.values())
    assert worst <= 480 - 10, worst  # 10 s for the parent's start and the report
