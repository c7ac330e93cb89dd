"""What one section writes while it runs: rows, checks, targets and notes, saved after every
change so that a section killed for its time budget still leaves what it measured.

Statuses. A section is "ok" when it finished with no error, no failed check and no failed or
skipped row; "failed" when something errored or a check failed; "partial" when rows were
skipped because the time budget ran out; "timeout" when the runner killed it (set by the
runner). Targets (speed goals) are reported as met or not and never change the status.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)


def short_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()[:2000]


class SectionRecorder:
    def __init__(self, name: str, title: str, path: Path, budget_s: float):
        self.path = Path(path)
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.data: dict = {"section": name, "title": title, "status": "running", "budget_s": budget_s,
                           "seconds": 0.0, "rows": [], "checks": [], "targets": [], "notes": [], "info": {}}
        self.save()

    # ------------------------------------------------------------------ time
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def out_of_time(self, reserve_s: float = 0.0) -> bool:
        return self.remaining() <= reserve_s

    # ------------------------------------------------------------------ content
    def save(self) -> None:
        self.data["seconds"] = round(self.elapsed(), 2)
        write_json_atomic(self.path, self.data)

    def info(self, **values) -> None:
        self.data["info"].update(values)
        self.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def row(self, row: dict) -> dict:
        row.setdefault("status", "ok")
        self.data["rows"].append(row)
        self.save()
        return row

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        """A correctness condition: a failed check fails the section."""
        self.data["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        self.save()
        return bool(passed)

    def target(self, name: str, met: bool, detail: str = "") -> None:
        """A performance goal: reported, never fails the section."""
        self.data["targets"].append({"name": name, "met": bool(met), "detail": detail})
        self.save()

    def measure(self, config: dict, fill, reserve_s: float = 0.0) -> dict:
        """One measurement: `fill(row)` adds its numbers to a row that starts as `config`.
        The row is skipped when the budget is spent (less `reserve_s`), and records its error
        instead of ending the section when `fill` raises."""
        row = dict(config)
        if self.out_of_time(reserve_s):
            row.update(status="skipped", error=f"time budget ({self.budget_s:.0f} s) spent")
            return self.row(row)
        started = time.monotonic()
        try:
            fill(row)
        except Exception as error:  # noqa: BLE001 - one configuration failing must not end the section
            row.update(status="failed", error=short_error(error), traceback=traceback.format_exc()[-4000:])
        row["row_s"] = round(time.monotonic() - started, 2)
        return self.row(row)

    def finish(self, error: BaseException | None = None) -> dict:
        if error is not None:
            self.data["status"] = "failed"
            self.data["error"] = short_error(error)
            self.data["traceback"] = "".join(traceback.format_exception(error))[-4000:]
        else:
            self.data["status"] = section_status(self.data)
        self.save()
        return self.data


def section_status(data: dict) -> str:
    rows = data.get("rows", [])
    if data.get("error") or any(r.get("status") == "failed" for r in rows):
        return "failed"
    if any(not c["passed"] for c in data.get("checks", [])):
        return "failed"
    if any(r.get("status") == "skipped" for r in rows):
        return "partial"
    return "ok"
