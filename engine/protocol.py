"""Published or improved: the command-line settings whose defaults reproduce the published runs.

Every setting in :data:`SETTINGS` defaults to what InternVideo's retrieval code (or, with
``--published_codebase clip4clip``, CLIP4Clip) does. ``--improved`` turns on this project's
alternative for all of them at once; a flag given explicitly on the command line always wins
over both. The values are resolved once, in :func:`resolve`, right after parsing, so the rest
of the program only ever sees concrete values (and the run's ``meta.json`` records them).
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

Value = Any | Callable[[argparse.Namespace], Any]


@dataclass(frozen=True)
class Setting:
    published: Value  # a value, or a function of the parsed arguments
    improved: Value
    why: str  # what the improved value changes, for --help and the README

    def value(self, improved: bool, args: argparse.Namespace) -> Any:
        chosen = self.improved if improved else self.published
        return chosen(args) if callable(chosen) else chosen


def _improved_grid(args: argparse.Namespace) -> str:
    return "segments" if args.clip_evl else "framerate"


def _published_lsmdc_slice(args: argparse.Namespace) -> bool:
    return args.published_codebase == "internvideo"


# dest -> published default, improved value. The model-side settings are
# `main_task_retrieval.py`'s "protocol" group; the rest are the engine's.
SETTINGS: dict[str, Setting] = {
    "optimizer": Setting("bertadam", "adamw", "Adam's bias correction (torch AdamW)"),
    "no_decay": Setting("clip4clip", "bias_and_norm", "no weight decay on any norm weight (CLIP's ln_*)"),
    "frame_grid": Setting("published", _improved_grid,
                          "segment centres with --clip_evl, an even frame-rate grid otherwise"),
    "selection_split": Setting("test", "val", "select the checkpoint on val where the dataset has one"),
    "lsmdc_internvideo_train_slice": Setting(_published_lsmdc_slice, False,
                                             "LSMDC: train on every clip (InternVideo drops 100)"),
    "freeze_rule": Setting("published", "symmetric", "freeze the same layers of both towers"),
    "evl_mlp_dropout": Setting(0.0, 0.5, "dropout 0.5 in InternVideo's temporal decoder MLP"),
    "clip_weights": Setting("auto", "fp32", "CLIP weights trained in fp32"),
    "evl_ignore_frame_mask": Setting(True, False, "padded frames stay out of InternVideo's temporal module"),
    "evl_tokens": Setting("published", "frames", "token interaction on per-frame tokens and projected text"),
}


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The destinations the command line sets itself (defaults excluded)."""
    probe = copy.deepcopy(parser)
    probe._defaults.clear()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    namespace, _ = probe.parse_known_args(argv)
    return set(vars(namespace))


def resolve(args: argparse.Namespace, explicit: set[str]) -> argparse.Namespace:
    """Give every setting of :data:`SETTINGS` the command line did not set its published
    value, or its improved one under ``--improved``; return ``args``."""
    known = set(vars(args))
    for dest, setting in SETTINGS.items():
        if dest in known and dest not in explicit:
            setattr(args, dest, setting.value(args.improved, args))
    if args.improved:
        kept = sorted(dest for dest in explicit if dest in SETTINGS)
        logger.info("--improved: this project's alternatives%s", f" (explicit flags kept: {', '.join(kept)})"
                    if kept else "")
    return args


def improved_help() -> str:
    return "turn on this project's alternatives together (an explicit flag still wins): " + "; ".join(
        f"--{dest}: {setting.why}" for dest, setting in SETTINGS.items())
