"""Reading (and writing) model weights: the one place that opens weight files.

Formats: OpenAI's CLIP TorchScript archives (or plain CLIP state dicts), CLIP4Clip and
InternVideo `pytorch_model.bin` / Lightning files (pickles read with
`torch.load(weights_only=True)`), and our checkpoint folders (`model.safetensors` with a
`meta.json` sidecar recording its SHA-256; the rest of the run folder is
`engine/run_folder.py`). Our safetensors also carry a SHA-256 of their tensors in the file's
own header, so a file separated from its meta.json is still verified when it is loaded.

Key handling shared by every format lives here too: wrapper-prefix stripping, the metadata
scalars OpenAI stores beside the weights, the `clip.` sub-dict of a fine-tuned model and the
2-D to 3-D patch-conv inflation. Key names are never changed here except by those rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file as _safetensors_save
from torch import nn

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"  # our checkpoint folder: the weights ...
META_FILE = "meta.json"  # ... and the sidecar (written last; records the files' SHA-256)
FOREIGN_MODEL_FILE = "pytorch_model.bin"  # CLIP4Clip / InternVideo fine-tuned weights
# Scalars stored beside the weights in OpenAI's archives; they are not parameters.
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
# Key of the safetensors header metadata that holds `tensors_sha256` of the file's tensors.
TENSORS_SHA256 = "tensors_sha256"
# DDP's and torch.compile's wrappers.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint file or state dict that cannot be used; the message names the source."""


# ----------------------------------------------------------------------------- keys
def strip_prefixes(state_dict: dict[str, torch.Tensor],
                   prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (in this order) from every key that has them."""
    out = {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def without_metadata(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if k not in METADATA_KEYS}


def as_fp32(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors cast to fp32 (OpenAI ships fp16); integer tensors kept."""
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}


def clip_subdict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CLIP of a fine-tuned CLIP4Clip / InternVideo model: its `clip.*` tensors, unprefixed."""
    return {k.removeprefix("clip."): v for k, v in state_dict.items() if k.startswith("clip.")}


def inflate_patch_conv(weight: torch.Tensor, time_dim: int = 3) -> torch.Tensor:
    """[out, in, kh, kw] -> [out, in, time_dim, kh, kw], the 2-D kernel in the centre temporal
    slot and zeros elsewhere: the 3-D patch then equals the 2-D patch applied to each frame
    (CLIP4Clip's conv2 initialisation, InternVideo's `inflate_weight`)."""
    out = weight.new_zeros(weight.shape[0], weight.shape[1], time_dim, *weight.shape[2:])
    out[:, :, time_dim // 2] = weight
    return out


def sha256_of(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in chunks (checkpoints and downloaded weights are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's contents: for each name in sorted order, a JSON line
    ``[name, dtype, shape]`` and then the tensor's raw bytes.

    It depends on the tensors only, not on how a file lays them out, so it is computed from the
    tensors before they are written and again from the tensors read back."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        digest.update(json.dumps([name, dtype, list(tensor.shape)]).encode("utf-8") + b"\n")
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- strict loading
def _preview(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def state_dict_problems(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches, each as a line of text."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} keys with wrong shapes: {_preview(mismatched)}")
    return problems


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "state dict",
                           hint: str = "") -> None:
    """`load_state_dict(strict=True)`, but the error lists missing, unexpected and mis-shaped keys at once."""
    problems = state_dict_problems(module, state_dict)
    if problems:
        raise CheckpointError(f"{source} does not match {type(module).__name__}:\n  " + "\n  ".join(problems) + hint)
    module.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------- torch.load
class _InertStub:
    """Stands in for a non-tensor object pickled in a checkpoint; it runs none of its code."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _short_torch_error(err: Exception) -> str:
    """The informative line of torch's long weights_only message (or the whole short one)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines:
        if line.startswith(("Trying to load unsupported", "Unsupported")):
            return line
    return lines[-1] if lines else type(err).__name__


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip checkpoint: nothing to stub
        return []


def load_torch_file(path: Path, what: str, stub_objects: bool = False) -> Any:
    """`torch.load(weights_only=True)` on CPU; errors name the file.

    stub_objects: replace pickled non-tensor objects (a Lightning file's hyper-parameters or
    callbacks) by inert stubs instead of refusing the file; none of their code runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        names = _unsafe_globals(path) if stub_objects else []
        if not names:
            _raise_load_error(path, what, err)
    logger.info("%s: replacing pickled non-tensor objects by inert stubs: %s", path, ", ".join(names))
    stubs = [(type(name.rsplit(".", 1)[-1], (_InertStub,), {}), name) for name in names]
    try:
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        _raise_load_error(path, what, err)


def _raise_load_error(path: Path, what: str, err: Exception) -> None:
    detail = _short_torch_error(err)
    if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):
        raise CheckpointError(
            f"{path}: refused to load: it contains Python objects other than tensors and plain "
            f"containers, which torch.load(weights_only=True) does not execute ({detail}). "
            "Only unpickle files you trust, and convert them to a plain state dict.") from err
    raise CheckpointError(f"{path}: not readable as {what} (corrupt or truncated?): {detail}") from err


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a Lightning (`state_dict`) or `model` wrapper, or the dict itself."""
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source}: does not hold a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: does not hold a state dict of tensors "
                              f"(not tensors: {', '.join(map(str, bad[:10]))})")
    return obj


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not {what}")


# ----------------------------------------------------------------------------- OpenAI CLIP files
def load_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read OpenAI's TorchScript archive (or a plain CLIP state dict) as fp32 tensors."""
    path = Path(path)
    _check_file(path, "a CLIP checkpoint")
    state_dict = None
    if zipfile.is_zipfile(path):
        try:
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception:  # a zip written by torch.save, not a TorchScript archive
            pass
    if state_dict is None:
        state_dict = load_torch_file(path, "a CLIP checkpoint (a TorchScript archive or a weights-only state dict)")
    state_dict = unwrap_state_dict(state_dict, str(path))
    return as_fp32(without_metadata(strip_prefixes(state_dict, ("module.",))))


# ----------------------------------------------------------------------------- our checkpoints
def read_meta(checkpoint_dir: str | os.PathLike) -> dict:
    """A checkpoint folder's meta.json."""
    path = Path(checkpoint_dir) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; {path.parent} is not a complete checkpoint") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata: {err}") from err


def verify_checksum(path: Path) -> None:
    """Compare ``path`` with the SHA-256 its folder's meta.json recorded, if there is one."""
    meta_path = path.parent / META_FILE
    if not meta_path.is_file():
        return
    try:
        record = read_meta(path.parent).get("files", {}).get(path.name)
    except CheckpointError as err:
        logger.warning("%s; not verifying %s", err, path)
        return
    if record and sha256_of(path) != record.get("sha256"):
        raise CheckpointError(f"{path}: contents do not match the SHA-256 recorded in {meta_path} "
                              "(file changed, or an interrupted save mixed two checkpoints)")


def weights_file(path: str | os.PathLike) -> Path:
    """The weights file itself, given it or a checkpoint folder holding one."""
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, FOREIGN_MODEL_FILE):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: folder holds neither {MODEL_FILE} nor {FOREIGN_MODEL_FILE}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _sniff_format(path: Path) -> str:
    """"safetensors" (u64 header length, then a JSON object) or "torch" (zip or pickle)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[8:9] == b"{" and not head.startswith(b"PK"):
        return "safetensors"
    if zipfile.is_zipfile(path) or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "torch"
    raise CheckpointError(f"{path}: neither a safetensors file nor a torch.save file (corrupt?)")


def read_state_dict(path: str | os.PathLike, verify: bool = True) -> dict[str, torch.Tensor]:
    """Tensors from our safetensors or a pickled ``pytorch_model.bin`` (weights_only=True),
    wrapper prefixes (``module.``, ``_orig_mod.``) stripped. Errors name the file."""
    path = weights_file(path)
    _check_file(path, "a weights file")
    if verify:
        verify_checksum(path)
    if _sniff_format(path) == "torch":
        state = load_torch_file(path, "a weights file")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    else:
        state = _read_safetensors(path, verify)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return strip_prefixes(state)


def _read_safetensors(path: Path, verify: bool) -> dict[str, torch.Tensor]:
    """The tensors, checked against the SHA-256 in the header's metadata when it has one
    (files written before it was stored there rely on meta.json's checksum alone)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as err:  # SafetensorError, OSError, ...
        raise CheckpointError(f"{path}: not a readable safetensors or torch weights file: {err}") from err
    expected = metadata.get(TENSORS_SHA256)
    if verify and expected is not None and tensors_sha256(state) != expected:
        raise CheckpointError(f"{path}: tensors do not match the SHA-256 stored in the file's header "
                              "(the file was corrupted after it was written)")
    return state


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model under DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = next((m for m in (getattr(model, "module", None), getattr(model, "_orig_mod", None))
                      if isinstance(m, nn.Module)), None)
        if inner is None:
            return model
        model = inner


def write_model_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """The bare model's state dict as safetensors: CPU, contiguous, no shared storage
    (safetensors refuses aliased tensors), with their `tensors_sha256` in the header metadata.
    Not atomic: the run folder wraps it."""
    tensors, seen = {}, set()
    for key, value in unwrap_model(model).state_dict().items():
        tensor = value.detach().cpu().contiguous()
        if tensor.numel():
            storage = tensor.untyped_storage().data_ptr()
            if storage in seen:
                tensor = tensor.clone()
            else:
                seen.add(storage)
        tensors[key] = tensor
    _safetensors_save(tensors, str(path), metadata={"format": "pt", TENSORS_SHA256: tensors_sha256(tensors)})


@dataclass
class LoadReport:
    """What ``load_model_weights`` found (all empty after a strict load)."""
    path: Path
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def load_model_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True,
                       verify: bool = True) -> LoadReport:
    """Load our ``model.safetensors`` (file or checkpoint folder) or a CLIP4Clip/InternVideo
    ``pytorch_model.bin`` into ``model``.

    strict=True: one CheckpointError listing every missing, unexpected and mis-shaped key.
    strict=False: load what matches, log and return the rest (mis-shaped keys are skipped)."""
    target = unwrap_model(model)
    state = read_state_dict(path, verify=verify)
    file = weights_file(path)
    if strict:
        load_state_dict_strict(target, state, source=str(file))
        return LoadReport(file)
    expected = target.state_dict()
    report = LoadReport(file, missing=sorted(set(expected) - set(state)),
                        unexpected=sorted(set(state) - set(expected)),
                        mismatched=sorted(k for k in set(state) & set(expected)
                                          if state[k].shape != expected[k].shape))
    usable = {k: v for k, v in state.items() if k in expected and k not in report.mismatched}
    target.load_state_dict(usable, strict=False)
    for kind in ("missing", "unexpected", "mismatched"):
        if getattr(report, kind):
            logger.warning("%s: %d %s keys: %s", file, len(getattr(report, kind)), kind,
                           ", ".join(getattr(report, kind)[:20]))
    return report
