"""The model behind an index: how it is described, built, fingerprinted and used.

An index stores a *spec*: the model-defining arguments of ``main_task_retrieval.py`` (a JSON
dict), enough to rebuild the same model for queries. Its *fingerprint* is a SHA-256 over that
spec without file locations plus the SHA-256 of every weights file it reads, so moving a
checkpoint keeps the fingerprint and changing a weight does not.

Only heads that give one vector per video can be searched: tightTransf (``loose_type`` off)
and token-wise interaction (``--interaction wti|ti``) score each (text, video) pair jointly
and are refused.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modules.state_dict_utils import sha256_of

logger = logging.getLogger(__name__)

# Arguments of main_task_retrieval.py that define the model an index was built with.
MODEL_KEYS = ("pretrained_clip_name", "clip_cache_dir", "clip_config", "init_model", "clip_evl", "pretrained_path",
              "mergeclip", "mergeweight", "sim_header", "loose_type", "linear_patch", "cross_num_hidden_layers",
              "max_frames", "max_words", "frame_norm", "interaction", "wti_arch", "seed", "feature_framerate")
# Spec entries that are file locations: replaced by file hashes in the fingerprint.
LOCATION_KEYS = ("clip_cache_dir", "init_model", "pretrained_path")
SEARCH_DEFAULTS = {"max_frames": 12, "max_words": 32, "sim_header": "meanP", "loose_type": True, "seed": 42}


class SearchModelError(ValueError):
    """A model that cannot back a search index (the message says why and what to use)."""


def _entry_point_defaults() -> dict:
    from main_task_retrieval import build_parser

    return {k: v for k, v in vars(build_parser().parse_args(["--output_dir", "-"])).items() if k in MODEL_KEYS}


def _checkpoint_args(folder: Path) -> dict:
    """Model arguments a fine-tuned checkpoint folder was trained with (its meta.json)."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise SearchModelError(f"--init_model {folder}: no meta.json in the folder (give one of our checkpoint "
                               f"folders, e.g. output/demo/seqTransf/checkpoints/best)")
    try:
        saved = json.loads(meta_path.read_text()).get("args") or {}
    except (OSError, ValueError) as err:
        raise SearchModelError(f"{meta_path}: unreadable checkpoint metadata ({err})") from err
    return {k: saved[k] for k in MODEL_KEYS if k in saved}


def build_spec(options: dict) -> dict:
    """A model spec from command-line options (None = not given). A checkpoint folder given
    as ``init_model`` brings the arguments it was trained with; options given explicitly
    only fill what the checkpoint does not say."""
    spec = _entry_point_defaults()
    spec.update(SEARCH_DEFAULTS)
    given = {k: v for k, v in options.items() if k in MODEL_KEYS and v is not None}
    init_model = options.get("init_model")
    if init_model and Path(init_model).is_dir():
        saved = _checkpoint_args(Path(init_model))
        saved.pop("init_model", None)  # what that run started from, not this checkpoint
        spec.update(saved)
        given = {k: v for k, v in given.items() if k not in saved}
    spec.update(given)
    if spec.get("clip_evl") and "max_words" not in given:
        spec["max_words"] = 77  # InternVideo's text tower is used at its full context (as the entry point requires)
    if isinstance(spec.get("clip_config"), str):
        text = spec["clip_config"]
        spec["clip_config"] = json.loads(Path(text).read_text() if not text.lstrip().startswith("{") else text)
    for key in LOCATION_KEYS:
        if spec.get(key):
            spec[key] = str(Path(spec[key]).expanduser().resolve())
    check_searchable(spec)
    return spec


def check_searchable(spec: dict) -> None:
    problems = []
    if spec.get("sim_header") == "tightTransf":
        problems.append("sim_header tightTransf scores every (text, video) pair with a cross encoder")
    elif spec.get("loose_type") is False:
        problems.append("--loose_type is off (a tight head scores text and video jointly)")
    if spec.get("interaction", "no") != "no":
        problems.append(f"--interaction {spec['interaction']} scores text and video token by token")
    if problems:
        raise SearchModelError("this model cannot index videos for search: " + "; ".join(problems)
                               + ". Search needs one vector per video window: use a loose head "
                               "(meanP, seqLSTM or seqTransf with --loose_type) and --interaction no.")


# ----------------------------------------------------------------------------- files and fingerprint


def weights_files(spec: dict) -> list[Path]:
    """The files ``engine.builders.build_model`` reads for this spec."""
    from modules import checkpoint as ckpt
    from modules.clip import resolve_clip_checkpoint

    files: list[Path] = []
    if spec.get("init_model"):  # its own tensors define the CLIP (and InternVideo's tower)
        return [ckpt._resolve_weights_file(Path(spec["init_model"]))]
    if not spec.get("clip_config"):
        files.append(resolve_clip_checkpoint(spec["pretrained_clip_name"], spec.get("clip_cache_dir")))
    if spec.get("clip_evl") and spec.get("pretrained_path"):
        files.append(Path(spec["pretrained_path"]))
    return files


def fingerprint(spec: dict, file_hash=sha256_of) -> str:
    identity = {k: v for k, v in spec.items() if k not in LOCATION_KEYS}
    name = str(identity.get("pretrained_clip_name", ""))
    if os.sep in name or Path(name).suffix:  # a path, not a released name: its hash identifies it
        identity["pretrained_clip_name"] = "<file>"
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for path in weights_files(spec):
        digest.update(file_hash(path).encode())
    return digest.hexdigest()[:24]


def describe(spec: dict) -> str:
    if spec.get("init_model"):
        source = f"checkpoint {spec['init_model']}"
    elif spec.get("clip_config"):
        source = f"random CLIP {json.dumps(spec['clip_config'], sort_keys=True)} (seed {spec.get('seed')})"
    else:
        source = f"CLIP {spec.get('pretrained_clip_name')}"
    if spec.get("clip_evl"):
        source += f" + InternVideo {spec.get('pretrained_path') or '(checkpoint weights)'}"
    return f"{spec.get('sim_header')} on {source}, {spec.get('max_frames')} frames"


# ----------------------------------------------------------------------------- the model


@dataclass
class SearchModel:
    model: torch.nn.Module
    spec: dict
    device: torch.device

    @property
    def image_resolution(self) -> int:
        return int(self.model.clip.visual.input_resolution)

    @torch.inference_mode()
    def encode_windows(self, video: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        """L2-normalised window vectors, float32 [W, E]."""
        out = self.model.encode_video(video.to(self.device), mask.to(self.device))["video"].float()
        return torch.nn.functional.normalize(out, dim=-1).cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, text: str) -> np.ndarray:
        """L2-normalised text vector, float32 [E]."""
        from modules.tokenization_clip import get_tokenizer, tokenize_caption

        ids, mask = tokenize_caption(_tokenizer(get_tokenizer), text, int(self.spec["max_words"]))
        ids = torch.from_numpy(ids)[None].to(self.device)
        mask = torch.from_numpy(mask)[None].to(self.device)
        out = self.model.encode_text(ids, mask)["text"].float()
        return torch.nn.functional.normalize(out, dim=-1)[0].cpu().numpy()


_tokenizers: dict = {}


def _tokenizer(factory):
    if "tok" not in _tokenizers:
        _tokenizers["tok"] = factory()
    return _tokenizers["tok"]


def load_model(spec: dict, device: str | torch.device | None = None) -> SearchModel:
    """Build the spec's model in eval mode (a random CLIP is drawn from the spec's seed)."""
    from engine.builders import build_model

    check_searchable(spec)
    args = argparse.Namespace(**{**_entry_point_defaults(), **copy.deepcopy(spec)})
    for name, default in (("freeze_layer_num", 0), ("grad_checkpointing", False), ("mask_same_video_negatives", False)):
        setattr(args, name, getattr(args, name, default))
    torch.manual_seed(int(spec.get("seed", 42)))
    model = build_model(args)
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return SearchModel(model=model, spec=spec, device=device)
