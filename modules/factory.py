"""The one way to build a retrieval model: a `ModelSpec` in, a `CLIP4Clip` out.

A spec says which CLIP (a released name or file, or a random `CLIPConfig`), which video
tower (CLIP's image tower per frame, or InternVideo's with its checkpoint and `--mergeclip`),
the retrieval head (`RetrievalConfig`), the fine-tuned weights to load and the seed. The
engine turns its command line into a spec (`engine.builders.model_spec_from_args`); the
benchmarks and the search feature build one directly or read it back from a checkpoint
folder (`spec_from_checkpoint`: our checkpoints store `spec.to_dict()` in meta.json).

Which CLIP wins, in order: a random configuration; the fine-tuned weights' own `clip.*`
tensors (so evaluating a checkpoint needs no other file); the released CLIP named by
`clip.name`. Freezing (`head.freeze_layer_num`, `head.freeze_rule`) happens once, when the
model is built; `clip_weights='fp16'` casts CLIP last, after any fine-tuned weights load.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from modules.clip import CLIP, CLIPConfig, convert_weights_to_fp16, resolve_clip_checkpoint
from modules.internvideo_checkpoint import load_internvideo_model
from modules.modeling import CLIP4Clip, RetrievalConfig, load_clip4clip_state_dict
from modules.video_encoder_evl import InternVideoCLIP, evl_config_from_state_dict
from modules.weights import CheckpointError, clip_subdict, load_clip_state_dict, read_meta, read_state_dict

logger = logging.getLogger(__name__)

# Scale of the frame position embeddings of a temporal head on a CLIP trained from scratch
# (a random `CLIPSource.config`); frame features start with a per-dimension scale of about 1.
RANDOM_CLIP_FRAME_POSITION_STD = 0.5


@dataclass(frozen=True)
class CLIPSource:
    """Where the CLIP comes from: a released name (`ViT-B/32`) or a file path, or a random CLIP
    with these `CLIPConfig` fields (`--clip_config`); `cache_dir` holds released files."""

    name: str = "ViT-B/32"
    config: Mapping | None = None
    cache_dir: str | None = None


@dataclass(frozen=True)
class InternVideoSpec:
    """InternVideo's video encoder (`--clip_evl`): its checkpoint (None: start from CLIP alone),
    `--mergeclip` / `--mergeweight`, the frames per clip (`--max_frames`) and the dropout in
    its temporal decoder's MLP (`--evl_mlp_dropout`, published 0.0)."""

    pretrained_path: str | None = None
    mergeclip: bool = False
    mergeweight: float = 0.5
    t_size: int = 8
    mlp_dropout: float = 0.0


CLIP_WEIGHTS = ("fp32", "fp16")


@dataclass(frozen=True)
class ModelSpec:
    """clip_weights: 'fp16' casts CLIP's matrices to fp16 as CLIP4Clip trains them
    (`modules.clip.convert_weights_to_fp16`; stock tower only), 'fp32' keeps them fp32. The
    command line's 'auto' is resolved before the spec (`resolve_clip_weights`)."""

    clip: CLIPSource
    head: RetrievalConfig
    init_model: str | None = None
    internvideo: InternVideoSpec | None = None
    seed: int = 42
    clip_weights: str = "fp32"

    def __post_init__(self) -> None:
        if self.clip_weights not in CLIP_WEIGHTS:
            raise ValueError(f"clip_weights must be one of {', '.join(CLIP_WEIGHTS)}; got {self.clip_weights!r}")
        if self.clip_weights == "fp16" and self.internvideo is not None:
            raise ValueError("clip_weights='fp16' is the stock tower's published precision; InternVideo's "
                             "encoder (--clip_evl) trains in fp32 as published")

    def to_dict(self) -> dict:
        """JSON-safe: plain strings, numbers, booleans, lists and dicts."""
        clip = asdict(self.clip)
        clip["config"] = None if self.clip.config is None else dict(self.clip.config)
        return {
            "clip": clip, "head": asdict(self.head),
            "init_model": None if self.init_model is None else str(self.init_model),
            "internvideo": None if self.internvideo is None else asdict(self.internvideo),
            "seed": int(self.seed), "clip_weights": self.clip_weights,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelSpec:
        internvideo = d.get("internvideo")
        return cls(clip=CLIPSource(**d["clip"]), head=RetrievalConfig(**d["head"]),
                   init_model=d.get("init_model"),
                   internvideo=None if internvideo is None else InternVideoSpec(**internvideo),
                   seed=int(d.get("seed", 42)), clip_weights=d.get("clip_weights", "fp32"))


def resolve_clip_weights(choice: str, clip_evl: bool, device_type: str, precision: str = "fp32") -> str:
    """`--clip_weights auto|fp16|fp32` -> 'fp16' or 'fp32'. auto is the published precision
    where the published code could run it: fp16 for the stock tower on CUDA with fp32
    autocast settings; fp32 for InternVideo's encoder (published `.float()`), on CPU (the
    published code needs a GPU) and under `--precision fp16/bf16` (autocast takes over)."""
    if choice in CLIP_WEIGHTS:
        return choice
    if choice != "auto":
        raise ValueError(f"clip_weights must be auto, fp16 or fp32; got {choice!r}")
    return "fp16" if not clip_evl and device_type == "cuda" and precision == "fp32" else "fp32"


def spec_from_checkpoint(folder: str | os.PathLike) -> ModelSpec:
    """The spec of the model saved in one of our checkpoint folders, loading its weights."""
    folder = Path(folder)
    saved = read_meta(folder).get("model_spec")
    if not saved:
        raise CheckpointError(f"{folder / 'meta.json'}: has no model_spec (written by an older version); "
                              "build the model from its command-line arguments with --init_model instead")
    return ModelSpec.from_dict({**saved, "init_model": str(folder)})


# ----------------------------------------------------------------------------- CLIP
def random_clip_state_dict(fields: Mapping) -> dict[str, torch.Tensor]:
    """A CLIP with OpenAI's initialisation and the sizes given (`--clip_config`)."""
    return CLIP(CLIPConfig(**fields)).state_dict()


def clip_state_dict_for(source: CLIPSource, finetuned: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The CLIP's architecture and weights, in the order of preference of the module doc."""
    if source.config:
        return random_clip_state_dict(source.config)
    if finetuned is not None:
        clip_sd = clip_subdict(finetuned)
        if clip_sd:
            return clip_sd
    return load_clip_state_dict(resolve_clip_checkpoint(source.name, source.cache_dir))


def _evl_clip(spec: ModelSpec, finetuned: dict[str, torch.Tensor] | None) -> InternVideoCLIP:
    internvideo = spec.internvideo
    if finetuned is not None:  # the fine-tuned weights replace everything: skip the merge
        return InternVideoCLIP(evl_config_from_state_dict(clip_subdict(finetuned), t_size=internvideo.t_size,
                                                          mlp_dropout=internvideo.mlp_dropout))
    return load_internvideo_model(internvideo.pretrained_path, clip_state_dict_for(spec.clip, None),
                                  t_size=internvideo.t_size, mergeclip=internvideo.mergeclip,
                                  mergeweight=internvideo.mergeweight, mlp_dropout=internvideo.mlp_dropout)


def spread_frame_positions(model: CLIP4Clip, seed: int) -> None:
    """CLIP4Clip starts the temporal head's frame position embeddings from CLIP's text
    positions: trained ones in a released CLIP, but N(0, 0.01) in a random one, next to frame
    features of scale 1, so the head starts order-blind. On the synthetic benchmark that kept
    direction twins at chance (50%) for 600+ steps; redrawn at this scale they reach 95%+.
    A generator of its own leaves the global random stream as it was."""
    positions = getattr(model, "frame_position_embeddings", None)
    if positions is None or not positions.weight.requires_grad:  # no head, or seqLSTM's unused table
        return
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        positions.weight.copy_(torch.randn(positions.weight.shape, generator=generator) * RANDOM_CLIP_FRAME_POSITION_STD)


# ----------------------------------------------------------------------------- the model
def create_model(spec: ModelSpec) -> CLIP4Clip:
    """CLIP4Clip with CLIP's image tower or InternVideo's encoder, `spec.init_model` loaded.

    Random parts (a random CLIP, new heads) are drawn from torch's global generator: seed it
    first for a reproducible model."""
    finetuned = read_state_dict(spec.init_model) if spec.init_model else None
    if spec.internvideo is not None:
        model = CLIP4Clip(spec.head, _evl_clip(spec, finetuned))
    else:
        model = CLIP4Clip.from_clip_state_dict(spec.head, clip_state_dict_for(spec.clip, finetuned))
    if spec.clip.config and finetuned is None:
        spread_frame_positions(model, spec.seed)
    if finetuned is not None:
        load_clip4clip_state_dict(model, finetuned, source=str(spec.init_model))
        logger.info("loaded fine-tuned weights from %s", spec.init_model)
    if spec.clip_weights == "fp16":
        cast = convert_weights_to_fp16(model.clip)
        logger.info("CLIP weights in fp16 as CLIP4Clip trains them (%d tensors; --clip_weights fp32 keeps fp32)",
                    len(cast))
    else:
        logger.info("CLIP weights in fp32")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("model: %s, %.1fM parameters (%.1fM trainable)", spec.head,
                sum(p.numel() for p in model.parameters()) / 1e6, trainable / 1e6)
    return model
