"""Video-text retrieval: fine-tune and evaluate CLIP4Clip / InternVideo-style models.

    python main_task_retrieval.py --do_eval ...                 # one process
    torchrun --nproc_per_node=4 main_task_retrieval.py --do_train ...

Argument names and defaults follow CLIP4Clip and InternVideo's retrieval code, so their
scripts work with few changes. This file only wires the pieces: the model lives in
`modules/`, the data in `dataloaders/`, the loops in `engine/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# torch's OpenMP threads spin while a loader worker holds a core (measured: a 1.3 s step took
# 4.5-7.2 s on 2 cores); passive waiting must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dataloaders import DATASETS
from engine import distributed
from engine import protocol as run_protocol
from engine.run import run
from dataloaders.video_reader import GRIDS
from modules.modeling import FRAME_NORMS, INTERACTIONS, LINEAR_PATCHES, SIM_HEADERS
from modules.optimization import NO_DECAY_RULES, OPTIMIZERS, SCHEDULES


FRAME_GRIDS = ("published", "segments", "framerate", *(g for g in GRIDS if g.startswith("published_")))


def str2bool(value: str | bool) -> bool:
    """A real boolean: `--mergeclip`, `--mergeclip=True` and `--mergeclip False` all mean what they say
    (InternVideo's `type=bool` turned `--mergeclip False` on)."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def _flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(name, type=str2bool, nargs="?", const=True, default=False, help=help)


# Arguments of CLIP4Clip's and InternVideo's parsers that do nothing here, and why. They are
# accepted so that the published command lines run unchanged; passing one logs one line.
_IGNORED_PUBLISHED_ARGS: dict[str, tuple[type | None, str]] = {
    # never read by either codebase
    "--do_pretrain": (None, "never read by CLIP4Clip or InternVideo"),
    "--lr_decay": (float, "never read by CLIP4Clip or InternVideo"),
    "--video_dim": (int, "never read by CLIP4Clip or InternVideo"),
    "--margin": (float, "never read by CLIP4Clip or InternVideo"),
    "--hard_negative_rate": (float, "never read by CLIP4Clip or InternVideo"),
    "--negative_weighting": (int, "never read by CLIP4Clip or InternVideo"),
    "--n_pair": (int, "never read by CLIP4Clip or InternVideo"),
    "--use_mil": (None, "never read by CLIP4Clip or InternVideo"),
    "--sampled_use_mil": (None, "never read by CLIP4Clip or InternVideo"),
    "--text_num_hidden_layers": (int, "never read by CLIP4Clip or InternVideo (the layer counts come from the weights)"),
    "--visual_num_hidden_layers": (int, "never read by CLIP4Clip or InternVideo (the layer counts come from the weights)"),
    "--do_lower_case": (None, "CLIP's tokenizer always lower-cases"),
    # InternVideo's inference.py only, never read there
    "--zeroshot": (None, "never read by InternVideo; an evaluation without --init_model is zero-shot"),
    "--clip_kc": (None, "never read by InternVideo"),
    "--clip_kc2": (None, "never read by InternVideo"),
    "--clip_kc4": (None, "never read by InternVideo"),
    "--use_capdecoder": (None, "never read by InternVideo"),
    # launcher and apex settings
    "--n_gpu": (int, "the number of processes comes from the launcher (torchrun, NPROC in the scripts)"),
    "--world_size": (int, "set by the launcher (torchrun) through the environment"),
    "--rank": (int, "set by the launcher (torchrun) through the environment"),
    "--fp16_opt_level": (str, "apex is not used; --fp16 / --precision select torch.amp"),
    "--cache_dir": (str, "the cross-encoder config is built in; CLIP files go to --clip_cache_dir"),
}


def add_published_args(parser: argparse.ArgumentParser) -> None:
    """CLIP4Clip's and InternVideo's arguments that have another name here or no effect, so
    that their scripts' command lines run as published (:func:`apply_published_args`)."""
    group = parser.add_argument_group(
        "published command lines", "accepted so CLIP4Clip's and InternVideo's scripts run unchanged")
    group.add_argument("--finetuned_path", default=argparse.SUPPRESS,
                       help="InternVideo's inference.py name for --init_model")
    group.add_argument("--task_type", default=argparse.SUPPRESS, help="CLIP4Clip's task; only 'retrieval' exists")
    for name, (kind, why) in _IGNORED_PUBLISHED_ARGS.items():
        if kind is None:
            group.add_argument(name, type=str2bool, nargs="?", const=True, default=argparse.SUPPRESS,
                               help=f"ignored: {why}")
        else:
            group.add_argument(name, type=kind, default=argparse.SUPPRESS, help=f"ignored: {why}")


def apply_published_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Map ``--finetuned_path`` onto ``--init_model``, check ``--task_type``, and drop the
    ignored arguments with one warning line each."""
    log = logging.getLogger(__name__)
    finetuned = vars(args).pop("finetuned_path", None)
    if finetuned is not None:
        if args.init_model not in (None, finetuned):
            parser.error(f"--finetuned_path {finetuned!r} and --init_model {args.init_model!r} disagree; pass one")
        args.init_model = finetuned
    task = vars(args).pop("task_type", "retrieval")
    if task != "retrieval":
        parser.error(f"--task_type {task!r}: only 'retrieval' exists")
    for name, (_, why) in _IGNORED_PUBLISHED_ARGS.items():
        dest = name[2:]
        if dest in vars(args):
            log.warning("%s %r ignored: %s", name, vars(args).pop(dest), why)
    return args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mode = p.add_argument_group("mode")
    _flag(mode, "--do_train", "fine-tune, evaluating after every epoch")
    _flag(mode, "--do_eval", "evaluate (zero-shot, or --init_model for a fine-tuned checkpoint)")
    mode.add_argument("--datatype", default="msrvtt", choices=list(DATASETS))
    mode.add_argument("--eval_split", default="test", choices=["val", "test"], help="split for --do_eval")

    data = p.add_argument_group("data")
    data.add_argument("--train_csv", default="data/MSR-VTT/anns/MSRVTT_train.9k.csv")
    data.add_argument("--val_csv", default="data/MSR-VTT/anns/MSRVTT_JSFUSION_test.csv")
    data.add_argument("--data_path", default="data/MSR-VTT/anns/MSRVTT_data.json",
                      help="annotation file (MSR-VTT json) or annotation folder (other datasets)")
    data.add_argument("--features_path", default="data/MSR-VTT/videos", help="video folder")
    data.add_argument("--max_words", type=int, default=20)
    data.add_argument("--max_frames", type=int, default=100)
    data.add_argument("--feature_framerate", type=float, default=1.0, help="frames sampled per second")
    data.add_argument("--slice_framepos", type=int, default=0, choices=[0, 1, 2], help="0 head, 1 tail, 2 uniform")
    data.add_argument("--train_frame_order", type=int, default=0, choices=[0, 1, 2], help="0 keep, 1 reverse, 2 shuffle")
    data.add_argument("--eval_frame_order", type=int, default=0, choices=[0, 1, 2])
    _flag(data, "--expand_msrvtt_sentences", "MSR-VTT train: one sample per (video, caption) pair")
    _flag(data, "--allow_missing_videos", "drop annotations whose video file is missing (count logged)")
    _flag(data, "--skip_bad_videos", "training only: replace a sample whose video fails to decode (counted)")
    data.add_argument("--frame_grid", default="published", choices=FRAME_GRIDS,
                      help="published: the grid the published code sampled --datatype with (--published_codebase); "
                           "segments: max_frames segment centres; framerate: --feature_framerate frames per second "
                           "without the published grids' drift; or a published grid by name")
    data.add_argument("--published_codebase", default="internvideo", choices=["internvideo", "clip4clip"],
                      help="whose published run the defaults reproduce where the two differ (frame grid, "
                           "LSMDC train slice)")
    data.add_argument("--lsmdc_internvideo_train_slice", type=str2bool, nargs="?", const=True, default=None,
                      help="LSMDC train: drop the 100 clips InternVideo's loader drops (default: true with "
                           "--published_codebase internvideo unless --improved)")
    _flag(data, "--twin_batches", "--datatype synthetic: half of each batch are temporal twins of the other half")
    data.add_argument("--num_thread_reader", type=int, default=1, help="DataLoader workers per process")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--lr", type=float, default=1e-4, help="learning rate of the new heads")
    opt.add_argument("--coef_lr", type=float, default=1.0, help="CLIP parameters use lr * coef_lr")
    opt.add_argument("--weight_decay", type=float, default=0.2)
    opt.add_argument("--warmup_proportion", type=float, default=0.1)
    opt.add_argument("--epochs", type=int, default=20)
    opt.add_argument("--batch_size", type=int, default=256, help="global batch per optimizer step")
    opt.add_argument("--batch_size_val", type=int, default=3500)
    opt.add_argument("--gradient_accumulation_steps", type=int, default=1)
    opt.add_argument("--max_grad_norm", type=float, default=1.0)
    opt.add_argument("--optimizer", default="bertadam", choices=OPTIMIZERS,
                     help="bertadam: CLIP4Clip's and InternVideo's update (no bias correction, per-parameter "
                          "gradient clip); adamw: torch AdamW with the same betas/eps")
    opt.add_argument("--no_decay", default="clip4clip", choices=NO_DECAY_RULES,
                     help="clip4clip: no weight decay for names containing bias/LayerNorm.* (CLIP's ln_* weights "
                          "are decayed); bias_and_norm: biases and every norm module's parameters")
    opt.add_argument("--lr_schedule", default="warmup_cosine", choices=SCHEDULES,
                     help="warmup_cosine is CLIP4Clip's (a small drop at the end of warmup)")
    opt.add_argument("--n_display", type=int, default=100, help="log every n optimizer steps")
    opt.add_argument("--seed", type=int, default=42)
    _flag(opt, "--mask_same_video_negatives", "drop in-batch negatives that are other captions of the same video")
    _flag(opt, "--fp16", "same as --precision fp16")
    opt.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="torch.amp autocast")
    _flag(opt, "--grad_checkpointing", "recompute transformer blocks in backward to save memory")

    model = p.add_argument_group("model")
    model.add_argument("--pretrained_clip_name", default="ViT-B/32", help="ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px or a path")
    model.add_argument("--clip_cache_dir", default=None, help="where released CLIP files are kept (default ~/.cache/clip)")
    model.add_argument("--clip_config", default=None,
                       help="JSON (file or inline) of CLIPConfig fields: a randomly initialised CLIP instead of a released one")
    model.add_argument("--init_model", default=None, help="fine-tuned weights (ours, or CLIP4Clip/InternVideo pytorch_model.bin)")
    model.add_argument("--resume_model", default=None, help="training-state file (or checkpoint folder) to resume from")
    model.add_argument("--linear_patch", default="2d", choices=LINEAR_PATCHES)
    model.add_argument("--sim_header", default="meanP", choices=SIM_HEADERS)
    _flag(model, "--loose_type", "dot-product similarity (meanP, seqLSTM, seqTransf); tightTransf forces it off")
    model.add_argument("--cross_num_hidden_layers", type=int, default=4)
    model.add_argument("--freeze_layer_num", type=int, default=0, help="-1 freezes nothing")
    model.add_argument("--frame_norm", default="none", choices=FRAME_NORMS,
                       help="meanP: 'l2' normalises each frame first (CLIP4Clip); 'none' is InternVideo's")
    model.add_argument("--cross_model", default="cross-base", help="accepted for CLIP4Clip scripts; the cross config is built in")

    iv = p.add_argument_group("InternVideo")
    _flag(iv, "--clip_evl", "InternVideo's video encoder (temporal decoder on the last four blocks)")
    iv.add_argument("--pretrained_path", default=None, help="InternVideo checkpoint for --clip_evl")
    _flag(iv, "--mergeclip", "average InternVideo's weights with CLIP's: w * CLIP + (1 - w) * InternVideo")
    iv.add_argument("--mergeweight", type=float, default=0.5)
    iv.add_argument("--interaction", default="no", choices=INTERACTIONS, help="DRL token-wise interaction")
    iv.add_argument("--wti_arch", type=int, default=0)
    iv.add_argument("--cdcr", type=int, default=0, choices=[0, 1, 2, 3],
                    help="DRL's channel decorrelation loss with --interaction wti/ti (3 needs wti)")
    _flag(iv, "--use_dsl", "accepted for InternVideo scripts: DSL metrics are always reported beside the plain ones")

    protocol = p.add_argument_group(
        "protocol", "the published runs' behaviour by default; each flag selects this project's alternative")
    protocol.add_argument("--freeze_rule", default="published", choices=["published", "symmetric"],
                          help="--freeze_layer_num: CLIP4Clip/InternVideo's name test (freezes InternVideo's "
                               "visual_proj, visual_ln_post, temporal_cls_token, balance; nothing with 3d) "
                               "or embeddings + blocks below N of both towers")
    protocol.add_argument("--evl_mlp_dropout", type=float, default=0.0,
                          help="dropout in InternVideo's temporal decoder MLP (training only)")
    protocol.add_argument("--clip_weights", default="auto", choices=["auto", "fp16", "fp32"],
                          help="CLIP matrices in fp16 as CLIP4Clip trains them; auto: fp16 for the stock tower "
                               "on CUDA with --precision fp32, else fp32")
    _flag(protocol, "--evl_ignore_frame_mask", "InternVideo's encoder encodes padded zero frames (published); "
          "false drops them from its temporal module")
    p.set_defaults(evl_ignore_frame_mask=True)
    protocol.add_argument("--evl_tokens", default="published", choices=["published", "frames"],
                          help="--interaction with --clip_evl: published (wti: per-frame tokens, ti: the clip "
                               "vector, unprojected text tokens) or frames (per-frame tokens, projected text)")

    run_args = p.add_argument_group("run")
    run_args.add_argument("--output_dir", required=True)
    run_args.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: this process's GPU, else CPU)")
    run_args.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by torch.distributed.launch")
    _flag(run_args, "--find_unused_parameters", "DDP: allow parameters that get no gradient (slower)")
    run_args.add_argument("--keep_checkpoints", type=int, default=2, help="epoch checkpoints kept besides the best")
    run_args.add_argument("--selection_split", default="test", choices=["test", "val"],
                          help="split evaluated after each epoch to select the best checkpoint (val falls back to "
                               "test where the dataset has none); the run ends with the selected one's test metrics")
    _flag(run_args, "--improved", run_protocol.improved_help())
    add_published_args(p)
    return p


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
               explicit: set[str] | None = None) -> argparse.Namespace:
    """Checks and derived values; ``explicit`` (the destinations the command line set) lets an
    explicit flag win over ``--improved`` (none: every protocol setting follows the switch)."""
    args = apply_published_args(args, parser)
    args = run_protocol.resolve(args, explicit or set())
    if not (args.do_train or args.do_eval):
        parser.error("at least one of --do_train or --do_eval is required")
    if args.gradient_accumulation_steps < 1:
        parser.error("--gradient_accumulation_steps must be >= 1")
    if args.fp16:
        args.precision = "fp16"
    if args.loose_type != (args.sim_header != "tightTransf") and args.interaction == "no":
        logging.getLogger(__name__).warning("--loose_type=%s ignored: %s is a %s head", args.loose_type, args.sim_header,
                                            "tight" if args.sim_header == "tightTransf" else "loose (dot-product)")
    if args.clip_evl and args.max_words != 77:
        parser.error("--clip_evl needs --max_words 77 (its text tower's positions are fixed at 77)")
    if args.interaction == "wti" and args.wti_arch not in (1, 2, 3):
        parser.error("--interaction wti needs --wti_arch 1, 2 or 3")
    if args.cdcr and (args.interaction == "no" or (args.cdcr == 3 and args.interaction != "wti")):
        parser.error(f"--cdcr {args.cdcr} needs --interaction {'wti' if args.cdcr == 3 else 'wti or ti'}")
    if args.clip_weights == "fp16" and args.clip_evl:
        parser.error("--clip_weights fp16 is the stock tower's published precision; --clip_evl trains in fp32")
    if args.clip_weights == "fp16" and args.precision == "fp16":
        parser.error("--clip_weights fp16 with --precision fp16: the gradient scaler cannot unscale fp16 "
                     "gradients; use one of them")
    if args.clip_config:
        text = args.clip_config
        args.clip_config = json.loads(open(text).read() if not text.lstrip().startswith("{") else text)
    return args


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    return check_args(args, parser, run_protocol.explicit_dests(parser, argv))


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    info = distributed.init_distributed(args.device, args.local_rank)
    try:
        run(args, info)
    except BaseException:
        distributed.cleanup(wait_for_peers=False)  # peers may never reach a barrier
        raise
    distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
