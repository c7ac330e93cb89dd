"""Build what a run needs from its arguments: model, datasets, optimizer, checkpoints."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

import dataloaders
from dataloaders.base import TextDataset, TrainPairDataset, VideoDataset
from dataloaders.video_reader import FrameSampling
from engine.distributed import DistInfo
from engine.training import TrainState
from modules import checkpoint as ckpt
from modules.optimization import build_optimizer
from modules.tokenization_clip import get_tokenizer

logger = logging.getLogger(__name__)

# Splits used for checkpoint selection: MSR-VTT 1k-A, ActivityNet val_1 and VATEX have no
# separate validation split in the published protocols, so selection falls back to test.
HAS_VAL_SPLIT = {"msrvtt": False, "msvd": True, "lsmdc": True, "activity": False, "didemo": True, "vatex": False}


def has_val_split(args: argparse.Namespace) -> bool:
    return HAS_VAL_SPLIT.get(args.datatype, False)


# ---------------------------------------------------------------------------- data
def image_resolution(model) -> int:
    """The input size the video tower was built for (224, or 336 for ViT-L/14@336px)."""
    return int(model.clip.visual.input_resolution)


def frame_sampling(args: argparse.Namespace, model, train: bool) -> FrameSampling:
    return FrameSampling(
        max_frames=args.max_frames,
        feature_framerate=args.feature_framerate,
        slice_framepos=args.slice_framepos,
        frame_order=args.train_frame_order if train else args.eval_frame_order,
        image_resolution=image_resolution(model),
        fixed_frames=bool(args.clip_evl),
    )


def train_dataset(args: argparse.Namespace, model) -> TrainPairDataset:
    split = dataloaders.load_split(args.datatype, args, "train")
    return TrainPairDataset(split, get_tokenizer(), frame_sampling(args, model, train=True), args.max_words,
                            skip_bad_videos=args.skip_bad_videos, seed=args.seed)


def eval_datasets(args: argparse.Namespace, subset: str, model):
    split = dataloaders.load_split(args.datatype, args, subset)
    texts = TextDataset(split, get_tokenizer(), args.max_words)
    videos = VideoDataset(split, frame_sampling(args, model, train=False), seed=args.seed)
    return split, texts, videos


def twin_batch_sampler(dataset: TrainPairDataset, per_rank: int, info: DistInfo, seed: int):
    """Synthetic benchmark: batches whose halves are temporal twins (hard negatives)."""
    from dataloaders.synthetic import load_meta
    from dataloaders.twin_sampler import TwinBatchSampler, twin_pairs_from_meta

    meta = load_meta(Path(dataset.split.videos[0].path).parent.parent)
    return TwinBatchSampler(dataset.pair_video_ids, twin_pairs_from_meta(meta, "train"), per_rank,
                            num_replicas=info.world_size, rank=info.rank, seed=seed)


# ---------------------------------------------------------------------------- optimisation
def optimizer_and_schedule(model, args: argparse.Namespace, total_steps: int):
    return build_optimizer(model, lr=args.lr, coef_lr=args.coef_lr, weight_decay=args.weight_decay,
                           warmup_proportion=args.warmup_proportion, total_steps=max(total_steps, 1),
                           optimizer=args.optimizer, schedule=args.lr_schedule, max_grad_norm=args.max_grad_norm)


# ---------------------------------------------------------------------------- model
def retrieval_config(args: argparse.Namespace):
    from modules.modeling import RetrievalConfig

    return RetrievalConfig(
        sim_header=args.sim_header, loose_type=args.loose_type, linear_patch=args.linear_patch,
        cross_num_hidden_layers=args.cross_num_hidden_layers, max_words=args.max_words,
        max_frames=args.max_frames, frame_norm=args.frame_norm, interaction=args.interaction,
        wti_arch=args.wti_arch, freeze_layer_num=args.freeze_layer_num,
        grad_checkpointing=args.grad_checkpointing, mask_same_video_negatives=args.mask_same_video_negatives,
    )


def random_clip_state_dict(fields: dict) -> dict[str, torch.Tensor]:
    """A CLIP with OpenAI's initialisation and the sizes given (`--clip_config`)."""
    from modules.clip import CLIP, CLIPConfig

    return CLIP(CLIPConfig(**fields)).state_dict()


def clip_state_dict_for(args: argparse.Namespace, finetuned: dict[str, torch.Tensor] | None):
    """Where the CLIP architecture (and weights) come from, in order of preference: a random
    configuration, the fine-tuned checkpoint's own `clip.*` tensors (so evaluating it needs no
    other file), or the released CLIP named by --pretrained_clip_name."""
    if args.clip_config:
        return random_clip_state_dict(args.clip_config)
    if finetuned is not None and not args.clip_evl:
        clip_sd = {k.removeprefix("clip."): v for k, v in finetuned.items() if k.startswith("clip.")}
        if clip_sd:
            return clip_sd
    from modules.clip import load_clip_state_dict, resolve_clip_checkpoint

    return load_clip_state_dict(resolve_clip_checkpoint(args.pretrained_clip_name, args.clip_cache_dir))


def _evl_clip(args: argparse.Namespace, finetuned: dict[str, torch.Tensor] | None):
    from modules.internvideo_checkpoint import load_internvideo_model
    from modules.video_encoder_evl import InternVideoCLIP, evl_config_from_state_dict

    if finetuned is not None:  # the fine-tuned weights replace everything: skip the merge
        clip_sd = {k.removeprefix("clip."): v for k, v in finetuned.items() if k.startswith("clip.")}
        return InternVideoCLIP(evl_config_from_state_dict(clip_sd, t_size=args.max_frames))
    clip_sd = clip_state_dict_for(args, None)
    return load_internvideo_model(args.pretrained_path, clip_sd, t_size=args.max_frames,
                                  mergeclip=args.mergeclip, mergeweight=args.mergeweight)


# Scale of the frame position embeddings of a temporal head on a CLIP trained from scratch
# (--clip_config); frame features start with a per-dimension scale of about 1.
RANDOM_CLIP_FRAME_POSITION_STD = 0.5


def spread_frame_positions(model, seed: int) -> None:
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


def build_model(args: argparse.Namespace):
    """CLIP4Clip (stock tower) or InternVideo's encoder, loaded with --init_model when given."""
    from modules.modeling import CLIP4Clip, load_clip4clip_state_dict

    config = retrieval_config(args)
    finetuned = ckpt.read_state_dict(args.init_model) if args.init_model else None
    if args.clip_evl:
        model = CLIP4Clip(config, _evl_clip(args, finetuned))
    else:
        model = CLIP4Clip.from_clip_state_dict(config, clip_state_dict_for(args, finetuned))
    context = model.clip.positional_embedding.shape[0]
    if args.max_words > context:
        raise ValueError(f"--max_words {args.max_words} exceeds the text tower's context length {context}")
    if args.clip_config and finetuned is None:
        spread_frame_positions(model, args.seed)
    if finetuned is not None:
        load_clip4clip_state_dict(model, finetuned, source=str(args.init_model))
        model.freeze_clip_layers(args.freeze_layer_num)
        logger.info("loaded fine-tuned weights from %s", args.init_model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("model: %s, %.1fM parameters (%.1fM trainable)", config,
                sum(p.numel() for p in model.parameters()) / 1e6, trainable / 1e6)
    return model


# ---------------------------------------------------------------------------- checkpoints
# Arguments that define the model: a resumed run must agree on them.
MODEL_DEFINING_ARGS = ("datatype", "sim_header", "linear_patch", "cross_num_hidden_layers", "clip_evl",
                       "interaction", "wti_arch", "max_frames", "max_words", "clip_config", "frame_norm",
                       "freeze_layer_num", "batch_size", "gradient_accumulation_steps", "epochs", "lr", "coef_lr")


def check_resume_compatible(meta: dict, args: argparse.Namespace, source: str) -> None:
    saved = meta.get("args") or {}
    differences = [f"--{k}: checkpoint {saved[k]!r}, now {getattr(args, k)!r}"
                   for k in MODEL_DEFINING_ARGS if k in saved and saved[k] != getattr(args, k)]
    if differences:
        raise ValueError(f"--resume_model {source} was trained with a different configuration:\n  "
                         + "\n  ".join(differences))


def resume(args: argparse.Namespace, model, optimizer, scheduler, scaler, state: TrainState,
           info: DistInfo) -> TrainState:
    path = args.resume_model
    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    check_resume_compatible(ckpt.read_meta(folder), args, str(folder))
    ckpt.load_model_weights(model, folder)
    loaded = ckpt.load_training_state(folder, optimizer, scheduler, scaler, rank=info.rank)
    best = ckpt.read_best(folder.parent.parent) if folder.parent.name == ckpt.CHECKPOINTS_DIR else None
    state.epoch, state.global_step = loaded.epoch, loaded.step
    state.history = list(loaded.extra.get("history", []))
    if best:
        state.best_score = float(best.get("value", state.best_score))
    return state


def _gathered_rng_states(info: DistInfo) -> list:
    states = [ckpt.capture_rng_state()]
    if info.enabled:
        import torch.distributed as dist

        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, states[0])
        states = gathered
    return states


def save_epoch(output_dir: Path, model, optimizer, scheduler, scaler, state: TrainState, args,
               results: dict | None, split: str, info: DistInfo) -> None:
    """Called on every rank (RNG states are gathered); rank 0 writes and updates best/."""
    rng_states = _gathered_rng_states(info)
    if not info.is_main:
        return
    folder = ckpt.save_checkpoint(output_dir, model, epoch=state.epoch, step=state.global_step,
                                  optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                  sampler_epoch=state.epoch, args=args, keep_last=args.keep_checkpoints,
                                  rng_states=rng_states, extra={"history": state.history})
    if results is not None:
        plain = {**results["plain"], "dsl": results["dsl"]}
        if ckpt.update_best(folder, plain, split, score_key="t2v.R1"):
            state.best_score = results["plain"]["t2v"]["R1"]
            logger.info("new best checkpoint %s: text-to-video R@1 %.2f on the %s split", folder,
                        state.best_score, split)
