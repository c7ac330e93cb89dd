"""Build what a run needs from its arguments: model spec, datasets, optimizer, checkpoints.

The command-line namespace stops here: the model is described by a `modules.factory.ModelSpec`
and built by `modules.factory.create_model`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.distributed as dist

import dataloaders
from dataloaders.base import TextDataset, TrainPairDataset, VideoDataset
from dataloaders.video_reader import FrameSampling, PUBLISHED_GRIDS, published_grid
from engine import run_folder
from engine.distributed import DistInfo
from engine.training import TrainState
from modules.factory import CLIPSource, InternVideoSpec, ModelSpec, create_model, resolve_clip_weights
from modules.modeling import RetrievalConfig
from modules.optimization import build_optimizer
from modules.tokenization_clip import get_tokenizer
from modules.weights import load_model_weights, read_meta

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- data
def data_options(args: argparse.Namespace) -> dataloaders.DataOptions:
    """What the dataset loaders read, from the command line (the one place they meet `args`)."""
    return dataloaders.DataOptions(data_path=args.data_path, features_path=args.features_path, train_csv=args.train_csv,
                       val_csv=args.val_csv, expand_msrvtt_sentences=args.expand_msrvtt_sentences,
                       allow_missing_videos=args.allow_missing_videos,
                       lsmdc_internvideo_train_slice=bool(args.lsmdc_internvideo_train_slice))


def image_resolution(model) -> int:
    """The input size the video tower was built for (224, or 336 for ViT-L/14@336px)."""
    return int(model.clip.visual.input_resolution)


def frame_grid(args: argparse.Namespace) -> str:
    """The `FrameSampling.grid` of `--frame_grid`: "published" is the grid the published code
    (`--published_codebase`) used for `--datatype`; a dataset of our own (the synthetic
    benchmark) has none and takes "framerate"."""
    if args.frame_grid != "published":
        return args.frame_grid
    if args.datatype not in PUBLISHED_GRIDS[args.published_codebase]:
        return "framerate"
    return published_grid(args.datatype, args.published_codebase)


def frame_sampling(args: argparse.Namespace, model, train: bool) -> FrameSampling:
    return FrameSampling(
        max_frames=args.max_frames,
        feature_framerate=args.feature_framerate,
        slice_framepos=args.slice_framepos,
        frame_order=args.train_frame_order if train else args.eval_frame_order,
        image_resolution=image_resolution(model),
        grid=frame_grid(args),
    )


def train_dataset(args: argparse.Namespace, model) -> TrainPairDataset:
    split = dataloaders.load_split(args.datatype, data_options(args), "train")
    return TrainPairDataset(split, get_tokenizer(), frame_sampling(args, model, train=True), args.max_words,
                            skip_bad_videos=args.skip_bad_videos, seed=args.seed)


def eval_datasets(args: argparse.Namespace, subset: str, model):
    split = dataloaders.load_split(args.datatype, data_options(args), subset)
    texts = TextDataset(split, get_tokenizer(), args.max_words)
    videos = VideoDataset(split, frame_sampling(args, model, train=False), seed=args.seed)
    return split, texts, videos


def twin_batch_sampler(dataset: TrainPairDataset, per_rank: int, info: DistInfo, seed: int):
    """--twin_batches: the training split's own batch sampler (the synthetic benchmark's twins)."""
    factory = dataset.split.batch_sampler
    if factory is None:
        raise ValueError(f"--twin_batches: {dataset.split.name} has no twin pairs (--datatype synthetic has)")
    return factory(dataset.pair_video_ids, batch_size=per_rank, num_replicas=info.world_size, rank=info.rank,
                   seed=seed)


# ---------------------------------------------------------------------------- optimisation
def optimizer_and_schedule(model, args: argparse.Namespace, total_steps: int):
    return build_optimizer(model, lr=args.lr, coef_lr=args.coef_lr, weight_decay=args.weight_decay,
                           warmup_proportion=args.warmup_proportion, total_steps=max(total_steps, 1),
                           optimizer=args.optimizer, schedule=args.lr_schedule, max_grad_norm=args.max_grad_norm,
                           no_decay=args.no_decay)


# ---------------------------------------------------------------------------- model
def model_spec_from_args(args: argparse.Namespace) -> ModelSpec:
    """The model the command line asks for. `--loose_type` is not passed on: the head decides
    it (`RetrievalConfig`); the entry script only warns when the flag disagrees."""
    head = RetrievalConfig(
        sim_header=args.sim_header, linear_patch=args.linear_patch,
        cross_num_hidden_layers=args.cross_num_hidden_layers, frame_norm=args.frame_norm,
        interaction=args.interaction, wti_arch=args.wti_arch, freeze_layer_num=args.freeze_layer_num,
        grad_checkpointing=args.grad_checkpointing, mask_same_video_negatives=args.mask_same_video_negatives,
        freeze_rule=args.freeze_rule, evl_ignore_frame_mask=args.evl_ignore_frame_mask, evl_tokens=args.evl_tokens,
        cdcr=args.cdcr,
    )
    internvideo = InternVideoSpec(pretrained_path=args.pretrained_path, mergeclip=args.mergeclip,
                                  mergeweight=args.mergeweight, t_size=args.max_frames,
                                  mlp_dropout=args.evl_mlp_dropout) if args.clip_evl else None
    clip_weights = resolve_clip_weights(args.clip_weights, bool(args.clip_evl), run_device_type(args), args.precision)
    return ModelSpec(clip=CLIPSource(name=args.pretrained_clip_name, config=args.clip_config,
                                     cache_dir=args.clip_cache_dir),
                     head=head, init_model=args.init_model, internvideo=internvideo, seed=args.seed,
                     clip_weights=clip_weights)


def run_device_type(args: argparse.Namespace) -> str:
    """'cuda' or 'cpu': where this run's model will live (`--device`, else a GPU when there is one)."""
    if args.device:
        return torch.device(args.device).type
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_model(args: argparse.Namespace):
    """`create_model` on the command line's spec, checked against the captions' length."""
    spec = model_spec_from_args(args)
    if args.clip_weights == "auto":
        logger.info("--clip_weights auto: %s CLIP weights (published: fp16 for the stock tower on a GPU, fp32 for "
                    "--clip_evl; fp32 on CPU, where the published code cannot run)", spec.clip_weights)
    model = create_model(spec)
    context = model.clip.positional_embedding.shape[0]
    if args.max_words > context:
        raise ValueError(f"--max_words {args.max_words} exceeds the text tower's context length {context}")
    return model


# ---------------------------------------------------------------------------- checkpoints
# Arguments that define the model (and the inputs it was trained on): evaluating or resuming
# a checkpoint needs the same values.
MODEL_ARGS = ("sim_header", "linear_patch", "cross_num_hidden_layers", "clip_evl", "interaction", "wti_arch",
              "max_frames", "max_words", "clip_config", "frame_norm", "freeze_layer_num", "freeze_rule",
              "evl_tokens", "evl_ignore_frame_mask")
# A resumed run must also agree on the data and the optimisation it continues.
RESUME_ARGS = ("datatype", *MODEL_ARGS, "batch_size", "gradient_accumulation_steps", "epochs", "lr", "coef_lr",
               "optimizer", "no_decay", "selection_split")


def check_resume_compatible(meta: dict, args: argparse.Namespace, source: str) -> None:
    saved = meta.get("args") or {}
    differences = [f"--{k}: checkpoint {saved[k]!r}, now {getattr(args, k)!r}"
                   for k in RESUME_ARGS if k in saved and saved[k] != getattr(args, k)]
    if differences:
        raise ValueError(f"--resume_model {source} was trained with a different configuration:\n  "
                         + "\n  ".join(differences))


def resume(args: argparse.Namespace, model, optimizer, scheduler, scaler, state: TrainState,
           info: DistInfo) -> TrainState:
    path = args.resume_model
    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    check_resume_compatible(read_meta(folder), args, str(folder))
    load_model_weights(model, folder)
    loaded = run_folder.load_training_state(folder, optimizer, scheduler, scaler, rank=info.rank)
    best = run_folder.read_best(folder.parent.parent) if folder.parent.name == run_folder.CHECKPOINTS_DIR else None
    state.epoch, state.global_step = loaded.epoch, loaded.step
    state.history = list(loaded.extra.get("history", []))
    if best:
        state.best_score = float(best.get("value", state.best_score))
    return state


def _gathered_rng_states(info: DistInfo) -> list:
    states = [run_folder.capture_rng_state()]
    if info.enabled:
        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, states[0])
        states = gathered
    return states


def save_epoch(output_dir: Path, model, optimizer, scheduler, scaler, state: TrainState, args,
               info: DistInfo) -> Path | None:
    """Called on every rank (RNG states are gathered); rank 0 writes the weights and training
    state of the epoch just trained and returns the folder (None on other ranks). Saved before
    any evaluation, so an evaluation that fails loses no training."""
    rng_states = _gathered_rng_states(info)
    if not info.is_main:
        return None
    return run_folder.save_checkpoint(output_dir, model, epoch=state.epoch, step=state.global_step,
                                      optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                      sampler_epoch=state.epoch, args=args, keep_last=args.keep_checkpoints,
                                      rng_states=rng_states, extra={"history": state.history},
                                      model_spec=model_spec_from_args(args))


def record_evaluation(folder: Path | None, results: dict | None, split: str, state: TrainState) -> None:
    """Rank 0: the epoch's metrics into its meta.json, and best/ moved to it if it scores best."""
    if folder is None or results is None:
        return
    plain = {**results["plain"], "dsl": results["dsl"]}
    if run_folder.update_best(folder, plain, split, score_key="t2v.R1"):
        state.best_score = results["plain"]["t2v"]["R1"]
        logger.info("new best checkpoint %s: text-to-video R@1 %.2f on the %s split", folder, state.best_score, split)
