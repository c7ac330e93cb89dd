"""`python -m search status`: what an index holds and what on disk it does not reflect yet."""

from __future__ import annotations

import os

from search.indexer import find_videos


def stale_files(files: list[dict], roots: list[str]) -> dict[str, list[str]]:
    """Files of the indexed folders that a re-run would change: new, changed (size or mtime)
    or missing (deleted since)."""
    on_disk = find_videos([r for r in roots if os.path.exists(r)])  # a removed folder: all its files missing
    known = {f["path"]: f for f in files}
    changed = [p for p, st in on_disk.items()
               if p in known and (known[p]["size"], known[p]["mtime_ns"]) != (st.st_size, st.st_mtime_ns)]
    return {
        "new": [p for p in on_disk if p not in known],
        "changed": changed,
        "missing": sorted(p for p in known if p not in on_disk),
    }


def index_status(index) -> dict:
    meta = index.meta
    done = [f for f in index.files if f["status"] == "done"]
    bad = [{"path": f["path"], "error": f["error"]} for f in index.files if f["status"] == "bad"]
    from search.store import IndexStore

    store = IndexStore(index.root)
    try:
        size = store.size_on_disk()
    finally:
        store.close()
    return {
        "index": str(index.root),
        "files": len(done),
        "windows": len(index),
        "hours": sum(f["duration"] or 0.0 for f in done) / 3600.0,
        "model": {"description": meta.get("model_description"), "fingerprint": meta.get("model_fingerprint"),
                  "spec": meta.get("model_spec")},
        "plan": meta.get("plan"),
        "roots": meta.get("roots", []),
        "size_bytes": size,
        "bad_files": bad,
        "stale": stale_files(index.files, meta.get("roots", [])),
        "generation": meta.get("generation", 0),
    }


def format_status(s: dict) -> str:
    plan = s["plan"] or {}
    stale = s["stale"]
    lines = [
        f"index   {s['index']}",
        f"model   {s['model']['description']} (fingerprint {s['model']['fingerprint']})",
        f"windows {s['windows']} over {s['files']} files ({s['hours']:.2f} h of video); "
        f"{plan.get('window', 0):g} s windows every {plan.get('stride', 0):g} s, {plan.get('max_frames')} frames",
        f"folders {', '.join(s['roots'])}",
        f"size    {s['size_bytes'] / 1e6:.1f} MB on disk",
        f"stale   {len(stale['new'])} new, {len(stale['changed'])} changed, {len(stale['missing'])} missing"
        + (" (run `python -m search index` again to update)" if any(stale.values()) else ""),
    ]
    for kind in ("new", "changed", "missing"):
        lines += [f"  {kind}: {p}" for p in stale[kind][:20]]
        if len(stale[kind]) > 20:
            lines.append(f"  ... {len(stale[kind]) - 20} more {kind}")
    lines.append(f"bad     {len(s['bad_files'])} files")
    lines += [f"  {b['path']}: {b['error']}" for b in s["bad_files"]]
    return "\n".join(lines)
