"""Load InternVideo's pretrained checkpoint into `InternVideoCLIP`, optionally merged with CLIP.

What the published loader (`clip_evl.load` + `build_model`) does, and what we do:
  * File: a PyTorch-Lightning checkpoint whose `state_dict` holds the weights under `clip.`.
    We read it with `torch.load(weights_only=True)`. Lightning files may also pickle
    hyper-parameter or callback objects; those globals are replaced by inert stubs (nothing
    of theirs runs) and dropped, since only the weights are used. A bare state dict, a
    `model` wrapper and DDP's `module.` prefix are accepted too.
  * Keys: `module.` and then `clip.` prefixes are stripped (the published code removes every
    `clip.` substring; no InternVideo key has one elsewhere). OpenAI-style `visual.proj`,
    `visual.ln_post.weight`, `visual.ln_post.bias` become `visual_proj`,
    `visual_ln_post.weight`, `visual_ln_post.bias`. The metadata keys `input_resolution`,
    `context_length`, `vocab_size` are dropped.
  * Sizes come from the checkpoint's shapes (B/16 and L/14; decoder depth from `dec.N`).
  * A 2D patch conv ([width, 3, p, p]) is inflated to the model's (1, p, p) Conv3d by putting
    it in the centre temporal slot (zeros elsewhere), as the published `inflate_weight` does.
  * `--mergeclip` with `--mergeweight w`: for every key present in both the (renamed)
    InternVideo dict and OpenAI's CLIP dict, merged = w * CLIP + (1 - w) * InternVideo, the
    CLIP patch conv inflated first. Because the published loader renames only the InternVideo
    side, OpenAI's `visual.proj` / `visual.ln_post.*` never meet `visual_proj` /
    `visual_ln_post.*`: those three stay InternVideo's, as do the temporal module (`dpe`,
    `dec`, `temporal_cls_token`, `balance`) and `text_mask_embedding`, which CLIP lacks.
    Everything else (patch conv, class/positional embeddings, `ln_pre`, all ViT and text
    blocks, token/positional embeddings, `ln_final`, `text_projection`, `logit_scale`) is
    merged. We keep that key coverage so published numbers reproduce; `merge_clip_weights`
    returns the merged keys and they are logged. Mismatched shapes (a CLIP of another size)
    are an error here; the published code crashed inside `load_state_dict`.
  * Pretraining heads beside `clip.` (a caption decoder, ...) are dropped with one log line
    (`only_clip_weights`), as the published non-strict load ignored them.
  * The `clip.` weights load strictly (the published code used `strict=False` and printed the
    result): one error lists every missing, unexpected and mis-shaped key. `strict=False` downgrades
    missing/unexpected keys to a warning; wrong shapes are always an error.
  * The published temporal-position-embedding interpolation is not ported: the "only global"
    model has no such parameter, so it was a no-op there.
  * Without `pretrained_path` the model starts from CLIP alone (renamed, patch conv inflated)
    with the temporal module and `text_mask_embedding` at their initialisation; the
    published code required the InternVideo file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from modules.clip import config_from_state_dict
from modules.video_encoder_evl import InternVideoCLIP, evl_config_from_clip, evl_config_from_state_dict
from modules.weights import (
    CheckpointError,
    as_fp32,
    inflate_patch_conv,
    load_torch_file,
    state_dict_problems,
    strip_prefixes,
    unwrap_state_dict,
    without_metadata,
)

logger = logging.getLogger(__name__)

PREFIXES = ("module.", "clip.")
RENAMES = {
    "visual.proj": "visual_proj",
    "visual.ln_post.weight": "visual_ln_post.weight",
    "visual.ln_post.bias": "visual_ln_post.bias",
}
# Parameters CLIP does not have: initialised fresh when starting from CLIP alone.
EVL_ONLY_PREFIXES = ("visual.transformer.dpe.", "visual.transformer.dec.", "visual.transformer.temporal_cls_token",
                     "visual.transformer.balance", "text_mask_embedding")


# ----------------------------------------------------------------------------- reading
def read_internvideo_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an InternVideo checkpoint file into an InternVideo-named fp32 state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"InternVideo checkpoint not found: {path} (--pretrained_path)")
    obj = load_torch_file(path, "a weights-only checkpoint", stub_objects=True)
    return normalize_internvideo_keys(only_clip_weights(unwrap_state_dict(obj, str(path)), str(path)))


def only_clip_weights(state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The `clip.` weights of a pretraining checkpoint; the rest (caption decoder and other
    pretraining heads) is dropped and logged, as the published non-strict load ignored it.
    A state dict with no `clip.` key at all is taken whole (loaded strictly)."""
    unwrapped = strip_prefixes(state_dict, ("module.",))
    if not any(k.startswith("clip.") for k in unwrapped):
        return state_dict
    dropped = sorted(k for k in unwrapped if not k.startswith("clip."))
    if dropped:
        heads = sorted({k.split(".")[0] for k in dropped})
        logger.info("%s: ignoring %d tensors outside clip. (%s), as the published loader did",
                    source, len(dropped), ", ".join(heads[:10]) + (" ..." if len(heads) > 10 else ""))
    return {k: v for k, v in unwrapped.items() if k.startswith("clip.")}


def _plain_clip(clip_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI names kept (no renaming), prefixes and metadata removed, fp32."""
    return as_fp32(without_metadata(strip_prefixes(clip_state_dict, PREFIXES)))


def normalize_internvideo_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip `module.`/`clip.`, rename `visual.proj`/`visual.ln_post.*`, drop metadata, cast to fp32."""
    if len(strip_prefixes(state_dict, PREFIXES)) != len(state_dict):
        raise CheckpointError("two checkpoint entries map to one key after stripping the prefixes "
                              f"{', '.join(PREFIXES)}")
    return {RENAMES.get(k, k): v for k, v in _plain_clip(state_dict).items()}


# ----------------------------------------------------------------------------- shapes
def inflate_to_shapes(state_dict: dict[str, torch.Tensor],
                      shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Inflate every 4D conv weight whose target (by `shapes`) is the matching 5D kernel."""
    out = dict(state_dict)
    for key, value in state_dict.items():
        target = shapes.get(key)
        if target is not None and value.dim() == 4 and len(target) == 5 \
                and tuple(value.shape) == (target[0], target[1], target[3], target[4]):
            out[key] = inflate_patch_conv(value, target[2])
    return out


# ----------------------------------------------------------------------------- mergeclip
def merge_clip_weights(internvideo_sd: dict[str, torch.Tensor], clip_sd: dict[str, torch.Tensor],
                       mergeweight: float) -> tuple[dict[str, torch.Tensor], list[str]]:
    """merged = w * CLIP + (1 - w) * InternVideo on the keys both dicts have (see module doc).

    `internvideo_sd` carries InternVideo's names (after `normalize_internvideo_keys`);
    `clip_sd` carries OpenAI's names, so `visual.proj` / `visual.ln_post.*` are not merged,
    as in the published code. Returns the merged dict and the sorted merged keys.
    """
    if not 0.0 <= mergeweight <= 1.0:
        raise ValueError(f"mergeweight must be in [0, 1], got {mergeweight}")
    clip_sd = inflate_to_shapes(_plain_clip(clip_sd), {k: v.shape for k, v in internvideo_sd.items()})
    common = sorted(k for k in internvideo_sd if k in clip_sd)
    mismatched = [f"{k}: CLIP {tuple(clip_sd[k].shape)} vs InternVideo {tuple(internvideo_sd[k].shape)}"
                  for k in common if clip_sd[k].shape != internvideo_sd[k].shape]
    if mismatched:
        raise CheckpointError("--mergeclip: the CLIP model does not have InternVideo's sizes "
                              f"(pick the matching --pretrained_clip_name): {'; '.join(mismatched[:10])}")
    merged = dict(internvideo_sd)
    for key in common:
        merged[key] = mergeweight * clip_sd[key] + (1.0 - mergeweight) * internvideo_sd[key]
    return merged, common


# ----------------------------------------------------------------------------- loading
def load_evl_state_dict(model: InternVideoCLIP, state_dict: dict[str, torch.Tensor], source: str,
                        strict: bool = True, allowed_missing: tuple[str, ...] = ()) -> None:
    """Load with one error listing missing/unexpected/mis-shaped keys.

    Missing keys starting with one of `allowed_missing` keep their initialisation (logged).
    """
    expected = model.state_dict()
    absent_ok = [k for k in expected if k not in state_dict and allowed_missing and k.startswith(allowed_missing)]
    check = dict(state_dict)
    check.update({k: expected[k] for k in absent_ok})
    problems = state_dict_problems(model, check)
    if problems:
        message = f"{source} does not match {type(model).__name__}:\n  " + "\n  ".join(problems)
        if strict or any("wrong shapes" in p for p in problems):
            raise CheckpointError(message)
        logger.warning("loading non-strictly: %s", message)
    if absent_ok:
        logger.info("%s: %d tensors not in the checkpoint keep their initialisation (%s, ...)",
                    source, len(absent_ok), absent_ok[0])
    model.load_state_dict(check, strict=False)


def load_internvideo_model(pretrained_path: str | os.PathLike | None,
                           clip_state_dict: dict[str, torch.Tensor] | None = None,
                           t_size: int = 8, mergeclip: bool = False, mergeweight: float = 0.5,
                           strict: bool = True, mlp_dropout: float = 0.0) -> InternVideoCLIP:
    """Build InternVideo's model from its checkpoint (sizes from its shapes) and load it.

    pretrained_path: InternVideo's checkpoint (`--pretrained_path`), or None to start from
        `clip_state_dict` alone (temporal module freshly initialised).
    clip_state_dict: OpenAI CLIP weights (e.g. `modules.clip.load_clip_state_dict(path)`);
        needed for `mergeclip` and when `pretrained_path` is None.
    t_size: frames per clip (`--max_frames`). mergeclip / mergeweight: see the module doc.
    mlp_dropout: dropout in the temporal decoder's MLP (`--evl_mlp_dropout`; published 0.0).
    Returns an fp32 `InternVideoCLIP` in training mode.
    """
    if pretrained_path is None:
        return _model_from_clip(clip_state_dict, t_size, mergeclip, mlp_dropout)
    source = str(pretrained_path)
    state_dict = read_internvideo_checkpoint(pretrained_path)
    try:
        config = evl_config_from_state_dict(state_dict, t_size=t_size, mlp_dropout=mlp_dropout)
    except KeyError as err:
        raise CheckpointError(f"{source}: missing key {err} needed to infer InternVideo's architecture "
                              "(is this an InternVideo clip_evl checkpoint?)") from None
    model = InternVideoCLIP(config)
    state_dict = inflate_to_shapes(state_dict, {k: v.shape for k, v in model.state_dict().items()})
    if mergeclip:
        if clip_state_dict is None:
            raise ValueError("--mergeclip needs the OpenAI CLIP state dict (--pretrained_clip_name)")
        state_dict, merged = merge_clip_weights(state_dict, clip_state_dict, mergeweight)
        kept = sorted(set(state_dict) - set(merged))
        logger.info("mergeclip w=%.3g: merged %d tensors with CLIP; kept InternVideo's for %d (%s)",
                    mergeweight, len(merged), len(kept), ", ".join(kept[:8]) + (" ..." if len(kept) > 8 else ""))
    load_evl_state_dict(model, state_dict, source, strict=strict)
    logger.info("InternVideo model: %s", config)
    return model.float()


def _model_from_clip(clip_state_dict: dict[str, torch.Tensor] | None, t_size: int,
                     mergeclip: bool, mlp_dropout: float = 0.0) -> InternVideoCLIP:
    if clip_state_dict is None:
        raise ValueError("the InternVideo model needs --pretrained_path or a CLIP state dict to start from")
    if mergeclip:
        logger.warning("--mergeclip ignored: there is no InternVideo checkpoint to merge CLIP into")
    state_dict = normalize_internvideo_keys(clip_state_dict)
    model = InternVideoCLIP(evl_config_from_clip(config_from_state_dict(_plain_clip(clip_state_dict)), t_size,
                                                 mlp_dropout=mlp_dropout))
    state_dict = inflate_to_shapes(state_dict, {k: v.shape for k, v in model.state_dict().items()})
    logger.warning("no InternVideo checkpoint: starting from CLIP, temporal module freshly initialised")
    load_evl_state_dict(model, state_dict, "CLIP state dict", strict=True, allowed_missing=EVL_ONLY_PREFIXES)
    return model.float()
