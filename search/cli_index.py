"""`python -m search index DIR... --index IDX [model options]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from search.models import MODEL_KEYS
from search.store import SearchIndexError

logger = logging.getLogger("search")


def _bool(value: str | bool) -> bool:
    from main_task_retrieval import str2bool

    return str2bool(value)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The entry point's model options (names and meaning as in main_task_retrieval.py);
    unset ones come from --init_model's checkpoint, the index, or the defaults."""
    model = parser.add_argument_group("model (default: the index's own model; a new index: meanP on ViT-B/32)")
    model.add_argument("--pretrained_clip_name", default=None, help="released CLIP (ViT-B/32, ...) or a CLIP file")
    model.add_argument("--clip_cache_dir", default=None)
    model.add_argument("--clip_config", default=None, help="JSON of CLIPConfig fields: a random CLIP (tests)")
    model.add_argument("--init_model", default=None, help="fine-tuned checkpoint folder (its meta.json gives the model)")
    model.add_argument("--clip_evl", type=_bool, nargs="?", const=True, default=None, help="InternVideo's video encoder")
    model.add_argument("--pretrained_path", default=None, help="InternVideo checkpoint for --clip_evl")
    model.add_argument("--mergeclip", type=_bool, nargs="?", const=True, default=None)
    model.add_argument("--mergeweight", type=float, default=None)
    model.add_argument("--sim_header", default=None, choices=["meanP", "seqLSTM", "seqTransf", "tightTransf"])
    model.add_argument("--loose_type", type=_bool, nargs="?", const=True, default=None)
    model.add_argument("--interaction", default=None, choices=["no", "wti", "ti"])
    model.add_argument("--frame_norm", default=None, choices=["none", "l2"])
    model.add_argument("--linear_patch", default=None, choices=["2d", "3d"])
    model.add_argument("--cross_num_hidden_layers", type=int, default=None)
    model.add_argument("--max_frames", type=int, default=None, help="frames per window (default 12, or the checkpoint's)")
    model.add_argument("--max_words", type=int, default=None, help="query tokens (default 32, or the checkpoint's)")
    model.add_argument("--feature_framerate", type=float, default=None,
                       help="frames per second inside a window when --window is not given (default 3, or the checkpoint's)")
    model.add_argument("--seed", type=int, default=None, help="seed of a random --clip_config CLIP")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="folders (or files) of videos; other files are ignored")
    parser.add_argument("--index", required=True, help="index folder (created when missing)")
    add_model_arguments(parser)
    win = parser.add_argument_group("windows")
    win.add_argument("--window", type=float, default=None,
                     help="window length in seconds (default max_frames / feature_framerate)")
    win.add_argument("--stride", type=float, default=None, help="seconds between window starts (default window / 2)")
    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, default=2, help="decoding processes (DataLoader workers)")
    run.add_argument("--batch_windows", type=int, default=16, help="windows decoded together and encoded in one batch")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: this rank's GPU, else CPU)")
    run.add_argument("--retry_bad", action="store_true", help="try again files that failed before and did not change")
    run.add_argument("--commit_windows", type=int, default=4096, help="commit after this many encoded windows")
    run.add_argument("--commit_seconds", type=float, default=30.0, help="... or after this many seconds")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    run.add_argument("--no_progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from engine import distributed
    from search.indexer import IndexOptions, format_summary, run_index

    options = IndexOptions(
        roots=args.dirs, index=args.index, model={k: getattr(args, k, None) for k in MODEL_KEYS},
        window=args.window, stride=args.stride, workers=args.workers, batch_windows=args.batch_windows,
        commit_windows=args.commit_windows, commit_seconds=args.commit_seconds, device=args.device,
        retry_bad=args.retry_bad, progress=not args.no_progress)
    try:
        summary = run_index(options)
    except (SearchIndexError, ValueError, FileNotFoundError) as err:  # SearchModelError is a ValueError
        print(f"search index: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary) if args.json else format_summary(summary))
    return 0
