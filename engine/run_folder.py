"""The run folder: checkpoints with a training state, resume, pruning and the best checkpoint.

Layout under ``<output_dir>/checkpoints/``::

    epoch_3/model.safetensors    model.state_dict() (DDP/compile wrappers unwrapped)
    epoch_3/training_state.pt    optimizer, scheduler, GradScaler, epoch, step, sampler epoch,
                                 RNG states; torch.save of plain containers + tensors only, so it
                                 loads with torch.load(weights_only=True)
    epoch_3/meta.json            args, epoch, step, metrics per split, git commit, versions, and
                                 size + SHA-256 of the two files above; written LAST, so a folder
                                 without meta.json is incomplete
    best/model.safetensors       a hard link (a copy where links are impossible) of the best
                                 checkpoint's weights, so pruning old epochs never loses it
    best/meta.json               that checkpoint's meta.json plus ``selected_by`` (metric, value,
                                 split): the one record of which checkpoint is best
    best.json                    a copy of that record for people and scripts, rewritten from
                                 best/meta.json after every swap and at start-up; never read back

Every file is written under a temporary name in the same folder, made readable as the umask
allows, fsynced, then ``os.replace``d over the final name (and the folder fsynced), so a crash
leaves either the old or the new file, never a partial one. Re-saving a tag over an older save
replaces the files one by one; if a crash hits in between, the checksums in meta.json no longer
match and loading says so. ``best/`` is swapped whole: the new one is built in
``.best.tmp-*``, the old one moved to ``.best.old``, the new one moved in. ``open_run_folder``
(at start-up) finishes or undoes a swap a crash interrupted and removes every leftover: the
temporaries, ``.best.old`` and epoch folders without meta.json (a save or a prune cut short).

Call the save functions on rank 0 only. Reading the weights back (``load_model_weights``, also
for CLIP4Clip and InternVideo ``pytorch_model.bin`` files) and the model's own description
(``model_spec`` in meta.json) belong to the model library: ``modules/weights.py``,
``modules/factory.py``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import os
import platform
import random
import re
import shutil
import subprocess
import types
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modules.weights import (
    META_FILE,
    MODEL_FILE,
    CheckpointError,
    load_torch_file,
    read_meta,
    sha256_of,
    unwrap_model,
    verify_checksum,
    write_model_weights,
)

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "training_state.pt"
BEST_DIR = "best"
BEST_POINTER = "best.json"
FORMAT = "video-text-retrieval-checkpoint"
FORMAT_VERSION = 1
STATE_FORMAT = "video-text-retrieval-training-state"
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")
_TMP_MARK = ".tmp-"
_OLD_BEST = f".{BEST_DIR}.old"
SELECTED_BY = "selected_by"  # in best/meta.json: {"metric", "value", "split"}


def _fault_point(step: str) -> None:
    """Called before every file-system step of a save, a prune and a best swap, with a name
    that is the same in every run. Does nothing; tests replace it to crash at that step."""


def _label(path: Path) -> str:
    """``folder/file``, temporary names without their random part (the same in every run)."""
    return f"{path.parent.name.split(_TMP_MARK)[0]}/{path.name.split(_TMP_MARK)[0]}"


def _umask() -> int:
    """The process's umask, read from /proc where possible (``os.umask`` must set it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- atomic files
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_path)``, fsync, then ``os.replace`` onto ``path``; on any error the
    temporary file is removed and whatever was at ``path`` is left untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _fault_point(f"write {_label(path)}")
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) create files 0600
        _fsync_file(tmp)
        _fault_point(f"replace {_label(path)}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """`obj` as indented JSON, written atomically (numpy / torch scalars, paths... converted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)  # Paths, enums, devices, dtypes...


def _remove(path: Path, why: str) -> Path:
    """Delete a file or folder tree (one writer per run folder: rank 0) and log it."""
    _fault_point(f"remove {_label(path)}")
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    logger.warning("removed %s: %s", path, why)
    return path


def _remove_stale_tmp(folder: Path) -> list[Path]:
    """Temporary files left by a killed process."""
    return [_remove(tmp, "temporary file of an interrupted write")
            for tmp in sorted(folder.glob(f".*{_TMP_MARK}*")) if tmp.is_file()]


def _file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


# ----------------------------------------------------------------------------- provenance
@functools.lru_cache(maxsize=1)
def _git_info() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit or None, "git_dirty": bool(dirty)}


def _args_dict(args: Any) -> dict | None:
    if args is None:
        return None
    if isinstance(args, Mapping):
        return dict(args)
    return dict(vars(args))


# ----------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict:
    """This process's python, numpy (legacy global), torch CPU and current-CUDA-device RNG
    states, as plain lists/ints/floats/tensors (weights_only-loadable).

    Only the current CUDA device is captured: ``get_rng_state_all`` would create a context on
    every visible GPU from every rank. ``np.random.Generator`` objects owned by datasets are not
    global and are not captured."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = {"device": torch.cuda.current_device(), "state": torch.cuda.get_rng_state()}
    return state


def restore_rng_state(state: Mapping) -> None:
    """Inverse of ``capture_rng_state`` (CUDA part only when CUDA is available)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"].numpy() if isinstance(npy["keys"], torch.Tensor) else npy["keys"])
    np.random.set_state((npy["kind"], keys.astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None:
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda["state"].cpu())
        else:
            logger.warning("checkpoint holds a CUDA RNG state but CUDA is not available; not restored")


# ----------------------------------------------------------------------------- weights_only check
_PLAIN_LEAVES = (torch.Tensor, str, bytes, int, float, bool, complex, type(None), torch.Size,
                 torch.dtype, torch.device)


def _check_plain(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the first value ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, _PLAIN_LEAVES):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} is not weights_only-safe")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__name__} cannot be loaded with "
                    "weights_only=True; convert it to tensors, lists, dicts, numbers or strings")


# ----------------------------------------------------------------------------- save
def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def _training_state(epoch: int, step: int, optimizer, scheduler, scaler, sampler_epoch,
                    rng_states, extra) -> dict:
    if rng_states is None:
        rng_states = [capture_rng_state()]
    elif isinstance(rng_states, Mapping):
        rng_states = [dict(rng_states)]
    state = {
        "format": STATE_FORMAT, "format_version": FORMAT_VERSION, "epoch": int(epoch), "step": int(step),
        "sampler_epoch": None if sampler_epoch is None else int(sampler_epoch),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "rng": list(rng_states), "extra": dict(extra or {}),
    }
    _check_plain(state, "training_state")
    return state


def save_checkpoint(output_dir: str | os.PathLike, model: nn.Module, *, epoch: int, step: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    scaler: Any = None, sampler_epoch: int | None = None,
                    metrics: Mapping | None = None, metrics_split: str | None = None,
                    args: Any = None, tag: str | None = None, keep_last: int | None = None,
                    rng_states: Mapping | list | None = None, extra: Mapping | None = None,
                    save_training_state: bool = True, model_spec: Any = None) -> Path:
    """Write ``<output_dir>/checkpoints/<tag>/`` (tag defaults to ``epoch_<epoch>``); return it.

    ``rng_states``: None captures this process; pass a list (one ``capture_rng_state()`` per
    rank, e.g. from ``all_gather_object``) to let every rank resume its own streams.
    ``keep_last``: keep only the newest N ``epoch_<k>`` folders (other tags and ``best/`` are
    never pruned). ``extra``: more resumable state (plain containers only). ``model_spec``: the
    ``modules.factory.ModelSpec`` the model was built from, saved in meta.json so that
    ``modules.factory.spec_from_checkpoint`` rebuilds the model from the folder alone."""
    tag = tag or f"epoch_{int(epoch)}"
    if "/" in tag or tag in ("", ".", "..", BEST_DIR) or _TMP_MARK in tag:
        raise ValueError(f"invalid checkpoint tag {tag!r}")
    folder = checkpoint_root(output_dir) / tag
    _fault_point(f"mkdir {tag}")
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(folder)
    files = {}
    atomic_write(folder / MODEL_FILE, lambda tmp: write_model_weights(model, tmp))
    files[MODEL_FILE] = _file_record(folder / MODEL_FILE)
    if save_training_state:
        state = _training_state(epoch, step, optimizer, scheduler, scaler, sampler_epoch, rng_states, extra)
        atomic_write(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))
        files[STATE_FILE] = _file_record(folder / STATE_FILE)
    else:
        _fault_point(f"unlink {_label(folder / STATE_FILE)}")
        (folder / STATE_FILE).unlink(missing_ok=True)  # never pair new weights with an old state
    meta = _meta(tag, epoch, step, sampler_epoch, metrics, metrics_split, args, model, files, model_spec)
    write_json(folder / META_FILE, meta)
    logger.info("saved checkpoint %s (epoch %d, step %d, %.1f MB)", folder, epoch, step,
                sum(f["bytes"] for f in files.values()) / 2**20)
    if keep_last is not None:
        prune_checkpoints(output_dir, keep_last, protect=folder)
    return folder


def _meta(tag, epoch, step, sampler_epoch, metrics, metrics_split, args, model, files, model_spec) -> dict:
    inner = unwrap_model(model)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tag": tag, "epoch": int(epoch),
        "step": int(step), "sampler_epoch": sampler_epoch,
        "metrics": {metrics_split or "unspecified": dict(metrics)} if metrics else {},
        "args": _args_dict(args), "model_class": type(inner).__name__,
        "model_spec": None if model_spec is None else model_spec.to_dict(),
        "num_parameters": sum(p.numel() for p in inner.parameters()),
        **_git_info(), "torch_version": torch.__version__, "python_version": platform.python_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int, protect: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete ``epoch_<k>`` folders; return the removed."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = checkpoint_root(output_dir)
    numbered = sorted((int(m.group(1)), p) for p in root.iterdir()
                      if (m := _EPOCH_DIR.match(p.name)) and (p / META_FILE).is_file())
    removed = []
    for _, folder in numbered[:-keep_last]:
        if protect is not None and folder.resolve() == Path(protect).resolve():
            continue
        _fault_point(f"unlink {_label(folder / META_FILE)}")
        (folder / META_FILE).unlink(missing_ok=True)  # mark incomplete first
        _fault_point(f"rmtree {folder.name}")
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        logger.info("removed old checkpoint %s (keep_last=%d)", folder, keep_last)
    return removed


# ----------------------------------------------------------------------------- load state
@dataclass
class TrainingState:
    """Counters from a training-state file (objects passed in are restored in place)."""
    path: Path
    epoch: int
    step: int
    sampler_epoch: int | None
    extra: dict


def _lambda_settings(scheduler: Any) -> list:
    return [dict(vars(fn)) for fn in getattr(scheduler, "lr_lambdas", []) if not isinstance(fn, types.FunctionType)]


def load_training_state(path: str | os.PathLike, optimizer: torch.optim.Optimizer | None = None,
                        scheduler: Any = None, scaler: Any = None, restore_rng: bool = True,
                        rank: int = 0, verify: bool = True) -> TrainingState:
    """Restore optimizer/scheduler/GradScaler/RNG from a checkpoint folder or its
    ``training_state.pt``; return epoch, step, sampler epoch and ``extra``.

    The checkpoint of epoch k was saved after that epoch: resume at epoch k + 1."""
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"training state not found: {file}")
    if verify:
        verify_checksum(file)
    state = load_torch_file(file, "a training state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{file}: not a training state written by save_checkpoint")
    _load_into(file, "optimizer", optimizer, state.get("optimizer"))
    before = _lambda_settings(scheduler)
    _load_into(file, "scheduler", scheduler, state.get("scheduler"))
    if before and before != _lambda_settings(scheduler):
        logger.warning("%s: the schedule in the checkpoint %s replaces the one built now %s",
                       file, _lambda_settings(scheduler)[0], before[0])
    _load_into(file, "GradScaler", scaler, state.get("scaler"))
    if restore_rng:
        _restore_rank_rng(file, state.get("rng") or [], rank)
    logger.info("resumed training state from %s (epoch %d, step %d)", file, state["epoch"], state["step"])
    return TrainingState(file, int(state["epoch"]), int(state["step"]), state.get("sampler_epoch"),
                         dict(state.get("extra") or {}))


def _load_into(file: Path, what: str, obj: Any, saved: Any) -> None:
    if obj is None:
        return
    if saved is None:
        raise CheckpointError(f"{file}: holds no {what} state, but one was given to restore")
    try:
        obj.load_state_dict(saved)
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{file}: {what} state does not fit the {what} built now "
                              f"(different model, freezing or parameter groups?): {err}") from err


def _restore_rank_rng(file: Path, states: list, rank: int) -> None:
    if rank < len(states):
        restore_rng_state(states[rank])
    else:
        logger.warning("%s: no RNG state for rank %d (%d saved); RNG not restored", file, rank, len(states))


# ----------------------------------------------------------------------------- best checkpoint
def _dotted(metrics: Mapping, key: str) -> float:
    value: Any = metrics
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"metric {key!r} not found in metrics (keys: {list(metrics)})")
        value = value[part]
    return float(value)


def _best_source(root: Path) -> Path | None:
    """The folder holding the best checkpoint: ``best/``; in the middle of an interrupted swap,
    the folder ``_settle_best`` will make ``best/``."""
    best = root / BEST_DIR
    if best.is_dir():
        return best
    for tmp in sorted(root.glob(f".{BEST_DIR}{_TMP_MARK}*")):
        if (tmp / META_FILE).is_file():  # complete: its meta.json is written last
            return tmp  # best/ had already been moved aside: the swap was decided
    old = root / _OLD_BEST
    return old if old.is_dir() else None


def _settle_best(root: Path) -> list[Path]:
    """Finish (or undo) a best/ swap a crash interrupted; remove the swap's leftovers."""
    source = _best_source(root)
    if source is not None and source.name != BEST_DIR:
        _fault_point(f"move {source.name.split(_TMP_MARK)[0]} to {BEST_DIR}")
        os.replace(source, root / BEST_DIR)
        _fsync_dir(root)
        logger.warning("%s: completed a best/ swap a crash interrupted (best/ is now %s)", root, source.name)
    leftovers = [*sorted(root.glob(f".{BEST_DIR}{_TMP_MARK}*")), root / _OLD_BEST]
    return [_remove(path, "leftover of an interrupted best/ swap") for path in leftovers if path.exists()]


def _best_record(root: Path, folder: Path) -> dict:
    """Which checkpoint is best and why, from the meta.json in ``folder`` (best/)."""
    meta = read_meta(folder)
    selected = meta.get(SELECTED_BY) or _legacy_selection(root, folder, meta)
    split = selected["split"]
    return {"checkpoint": meta.get("tag"), "path": BEST_DIR, "epoch": meta.get("epoch"),
            "step": meta.get("step"), "metric": selected["metric"], "value": selected["value"],
            "split": split, "metrics": meta.get("metrics", {}).get(split, {})}


def _legacy_selection(root: Path, folder: Path, meta: dict) -> dict:
    """Run folders written before best/meta.json recorded ``selected_by``: best.json, if it
    names the same checkpoint."""
    pointer = _read_pointer(root)
    if pointer is None or pointer.get("checkpoint") != meta.get("tag"):
        raise CheckpointError(f"{folder / META_FILE}: does not record why it is the best ({SELECTED_BY}) "
                              f"and {root / BEST_POINTER} does not name {meta.get('tag')!r}: "
                              "delete best/ and best.json to start the selection again")
    return pointer


def _current_best(root: Path) -> dict | None:
    source = _best_source(root) if root.is_dir() else None
    return None if source is None else _best_record(root, source)


def read_best(output_dir: str | os.PathLike) -> dict | None:
    """Which checkpoint is best (checkpoint, epoch, step, metric, value, split, metrics), or None.

    Read from best/meta.json, the one record (best.json is only a copy of it for people);
    reads only, also in the middle of an interrupted swap."""
    return _current_best(checkpoint_root(output_dir))


def _read_pointer(root: Path) -> dict | None:
    pointer = root / BEST_POINTER
    if not pointer.is_file():
        return None
    try:
        return json.loads(pointer.read_text(encoding="utf-8"))
    except ValueError as err:
        raise CheckpointError(f"{pointer}: unreadable: {err}") from err


def _sync_pointer(root: Path) -> None:
    """Make best.json say what best/meta.json says (or remove it when there is no best/)."""
    record = _current_best(root)
    pointer = root / BEST_POINTER
    if record is None:
        if pointer.exists():
            _remove(pointer, f"no {BEST_DIR}/ to describe")
        return
    try:
        written = _read_pointer(root)
    except CheckpointError:
        written = None
    if written != json.loads(json.dumps(record, default=_json_default)):
        write_json(pointer, record)
        if written is not None:
            logger.warning("%s: rewritten from %s (a crash had left them disagreeing)", pointer,
                           root / BEST_DIR / META_FILE)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
        _fsync_file(dst)


def _publish_best(root: Path, checkpoint_dir: Path, meta: dict) -> None:
    """Build the new best/ beside the old one, then swap (see the module docstring); the
    caller has settled any earlier swap."""
    tmp = root / f".{BEST_DIR}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _fault_point(f"mkdir .{BEST_DIR}")
    tmp.mkdir()
    _fault_point(f"link {_label(tmp / MODEL_FILE)}")
    _link_or_copy(checkpoint_dir / MODEL_FILE, tmp / MODEL_FILE)
    write_json(tmp / META_FILE, meta)  # last: a .best.tmp-* holding meta.json is complete
    _fsync_dir(tmp)
    if (root / BEST_DIR).exists():
        _fault_point(f"move {BEST_DIR} to {_OLD_BEST}")
        os.replace(root / BEST_DIR, root / _OLD_BEST)
    _fault_point(f"move .{BEST_DIR} to {BEST_DIR}")
    os.replace(tmp, root / BEST_DIR)
    _fsync_dir(root)
    if (root / _OLD_BEST).exists():
        _fault_point(f"rmtree {_OLD_BEST}")
        shutil.rmtree(root / _OLD_BEST)


def update_best(checkpoint_dir: str | os.PathLike, metrics: Mapping, split: str,
                score_key: str = "t2v.R1") -> bool:
    """Record ``metrics`` (evaluated on ``split``) in the checkpoint's meta.json and, if its
    ``score_key`` is >= the best so far (ties go to the later checkpoint, as in CLIP4Clip),
    publish it as ``best/`` (and its copy ``best.json``). Returns whether it became the best.

    Scores are only compared on one split: a best selected on another split is an error."""
    folder = Path(checkpoint_dir)
    root = folder.parent
    score = _dotted(metrics, score_key)
    meta = read_meta(folder)
    meta.setdefault("metrics", {})[split] = dict(metrics)
    write_json(folder / META_FILE, meta)
    _settle_best(root)
    current = _current_best(root)
    if current is not None and (current["split"], current["metric"]) != (split, score_key):
        raise CheckpointError(f"{root / BEST_DIR / META_FILE}: best checkpoint was selected by "
                              f"{current['metric']} on split {current['split']!r}; cannot compare "
                              f"with {score_key} on {split!r}")
    if current is not None and score < current["value"]:
        logger.info("%s: %s=%.4g on %s split; best stays %s (%.4g)", folder.name, score_key, score,
                    split, current["checkpoint"], current["value"])
        return False
    _publish_best(root, folder, {**meta, SELECTED_BY: {"metric": score_key, "value": score, "split": split}})
    write_json(root / BEST_POINTER, _current_best(root))
    logger.info("new best checkpoint %s: %s=%.4g selected on the %s split%s", folder.name, score_key,
                score, split, " (model selection on the test split, as CLIP4Clip does)" if split == "test" else "")
    return True


# ----------------------------------------------------------------------------- start-up
def _evaluated_score(folder: Path, split: str, metric: str) -> float | None:
    if folder.name == BEST_DIR or not (folder / META_FILE).is_file():
        return None
    try:
        return _dotted(read_meta(folder).get("metrics", {}).get(split, {}), metric)
    except KeyError:
        return None


def _reselect_best(root: Path) -> None:
    """Publish a checkpoint whose recorded score beats best/ (a crash hit ``update_best``
    between writing the checkpoint's metrics and the swap); ties go to the later epoch."""
    current = _current_best(root)
    if current is None:
        return
    split, metric = current["split"], current["metric"]
    leader, key = None, (current["value"], current["epoch"])
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        score = _evaluated_score(folder, split, metric)
        if score is not None and (score, read_meta(folder)["epoch"]) > key:
            leader, key = folder, (score, read_meta(folder)["epoch"])
    if leader is not None:
        logger.warning("%s: %s=%.4g on %s beats best/ (%s); a crash had stopped it being published",
                       leader, metric, key[0], split, current["checkpoint"])
        selected = {"metric": metric, "value": key[0], "split": split}
        _publish_best(root, leader, {**read_meta(leader), SELECTED_BY: selected})


def open_run_folder(output_dir: str | os.PathLike) -> list[Path]:
    """Start-up of a training run or a resume, on rank 0 before anything else reads or writes
    the run folder: finish or undo a best/ swap a crash interrupted, remove what interrupted
    saves, prunes and swaps left (temporaries, ``.best.old``, ``.best.tmp-*``, epoch folders
    without meta.json), publish a checkpoint whose recorded score beats best/, and rewrite
    best.json from best/meta.json. Returns the removed paths, each logged."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    removed = _settle_best(root)
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        if _EPOCH_DIR.match(folder.name) and not (folder / META_FILE).is_file():
            removed.append(_remove(folder, "checkpoint without meta.json (a save or prune was interrupted)"))
        else:
            removed += _remove_stale_tmp(folder)
    removed += _remove_stale_tmp(root)
    _reselect_best(root)
    _sync_pointer(root)
    return removed
