"""The GPU check's report: one JSON file (every record) and one Markdown file (tables)."""

from __future__ import annotations

import datetime
import math
from pathlib import Path

from bench.gpu_check.recorder import write_json_atomic

JSON_NAME = "gpu_check.json"
MARKDOWN_NAME = "gpu_check.md"
HIDDEN_COLUMNS = ("traceback",)


def write(out: Path, records: dict[str, dict], *, command: list[str], smoke: bool, device: str, isolated: bool,
          seconds: float) -> str:
    device_info = next((r["info"] for r in records.values() if r.get("info", {}).get("torch")), {"device": device})
    payload = {
        "command": " ".join(command),
        "smoke": smoke,
        "isolated": isolated,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "device": {k: v for k, v in device_info.items() if k != "tolerances"},
        "sections": records,
    }
    write_json_atomic(out / JSON_NAME, payload)
    text = markdown(payload)
    (out / MARKDOWN_NAME).write_text(text)
    return text


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) < 1e-3:
            return f"{value:.1e}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k not in HIDDEN_COLUMNS]
    if not columns:
        return []
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def section_markdown(number: int, record: dict) -> list[str]:
    lines = [f"## {number}. {record.get('title', record['section'])}: {record.get('status')} "
             f"({record.get('seconds', 0):.0f} s of {record.get('budget_s', 0):.0f} s)", ""]
    if record.get("error"):
        lines += [f"**Error:** `{fmt(record['error'])}`", ""]
    groups: dict[str, list[dict]] = {}
    for row in record.get("rows", []):  # one table per kind of row ("part")
        groups.setdefault(row.get("part", ""), []).append({k: v for k, v in row.items() if k != "part"})
    for part, rows in groups.items():
        lines += ([f"*{part}*", ""] if part else []) + table(rows) + [""]
    for check in record.get("checks", []):
        mark = "pass" if check["passed"] else "**FAIL**"
        lines.append(f"- {mark}: {check['name']}" + (f" ({fmt(check['detail'])})" if check.get("detail") else ""))
    for target in record.get("targets", []):
        mark = "met" if target["met"] else "**not met**"
        lines.append(f"- target {mark}: {target['name']}" + (f" ({target['detail']})" if target.get("detail") else ""))
    lines += [f"- note: {n}" for n in record.get("notes", [])]
    lines.append("")
    return lines


def section_number(name: str) -> int:
    """A section keeps its number (1-4) when only some sections run."""
    from bench.gpu_check.runner import SECTIONS

    return list(SECTIONS).index(name) + 1 if name in SECTIONS else 0


def markdown(payload: dict) -> str:
    device = payload["device"]
    where = device.get("gpu") or device.get("device")
    lines = [
        "# GPU check",
        "",
        f"`{payload['command']}`: {where}, torch {device.get('torch', '?')}"
        + (f", CUDA {device['cuda']}" if device.get("cuda") else "")
        + f", {device.get('cpu_count', '?')} CPUs; {payload['seconds']:.0f} s in all"
        + (" (smoke: toy sizes)" if payload["smoke"] else "") + f"; finished {payload['finished']}.",
        "",
        "| section | status | seconds | budget (s) |",
        "|---|---|---|---|",
    ]
    records = payload["sections"]
    lines += [f"| {name} | {r.get('status')} | {r.get('seconds', 0):.0f} | {r.get('budget_s', 0):.0f} |"
              for name, r in records.items()]
    lines.append("")
    for name, record in records.items():
        lines += section_markdown(section_number(name), record)
    return "\n".join(lines)
