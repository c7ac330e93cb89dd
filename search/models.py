"""The model behind an index: how it is described, built, fingerprinted and used.

An index stores a *spec*: ``{"model": modules.factory.ModelSpec.to_dict(), "max_frames",
"max_words", "feature_framerate"}`` (the model, and the inputs it was trained on), enough to
rebuild the same model for queries. Its *fingerprint* is a SHA-256 over that spec without file
locations plus the SHA-256 of every weights file it reads, so moving a checkpoint keeps the
fingerprint and changing a weight does not.

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

from modules.weights import sha256_of

logger = logging.getLogger(__name__)

# Arguments of main_task_retrieval.py a search index takes (model and inputs).
MODEL_KEYS = ("pretrained_clip_name", "clip_cache_dir", "clip_config", "init_model", "clip_evl", "pretrained_path",
              "mergeclip", "mergeweight", "sim_header", "loose_type", "linear_patch", "cross_num_hidden_layers",
              "max_frames", "max_words", "frame_norm", "interaction", "wti_arch", "seed", "feature_framerate")
INPUT_KEYS = ("max_frames", "max_words", "feature_framerate")
SEARCH_DEFAULTS = {"max_frames": 12, "max_words": 32, "feature_framerate": 3.0, "sim_header": "meanP", "seed": 42}


class SearchModelError(ValueError):
    """A model that cannot back a search index (the message says why and what to use)."""


def _entry_point_defaults() -> dict:
    from main_task_retrieval import build_parser

    return vars(build_parser().parse_args(["--output_dir", "-"]))


def _checkpoint_args(folder: Path) -> dict:
    """Arguments a fine-tuned checkpoint folder was trained with (its meta.json)."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise SearchModelError(f"--init_model {folder}: no meta.json in the folder (give one of our checkpoint "
                               f"folders, e.g. output/demo/seqTransf/checkpoints/best)")
    try:
        return json.loads(meta_path.read_text()).get("args") or {}
    except (OSError, ValueError) as err:
        raise SearchModelError(f"{meta_path}: unreadable checkpoint metadata ({err})") from err


def _joint_scoring(sim_header, loose_type, interaction) -> list[str]:
    problems = []
    if sim_header == "tightTransf":
        problems.append("sim_header tightTransf scores every (text, video) pair with a cross encoder")
    elif loose_type is False:
        problems.append("--loose_type is off (a tight head scores text and video jointly)")
    if interaction not in (None, "no"):
        problems.append(f"--interaction {interaction} scores text and video token by token")
    return problems


def _refuse(problems: list[str]) -> None:
    if problems:
        raise SearchModelError("this model cannot index videos for search: " + "; ".join(problems)
                               + ". Search needs one vector per video window: use a loose head "
                               "(meanP, seqLSTM or seqTransf with --loose_type) and --interaction no.")


def _model_spec_from(args: dict):
    from engine.builders import model_spec_from_args

    args = dict(args)
    if isinstance(args.get("clip_config"), str):
        text = args["clip_config"]
        args["clip_config"] = json.loads(Path(text).read_text() if not text.lstrip().startswith("{") else text)
    for key in ("clip_cache_dir", "init_model", "pretrained_path"):
        if args.get(key):
            args[key] = str(Path(args[key]).expanduser().resolve())
    return model_spec_from_args(argparse.Namespace(**args))


def _checkpoint_spec(folder: Path, saved: dict):
    """The checkpoint's own model_spec; an older folder without one: its arguments."""
    from modules.factory import spec_from_checkpoint
    from modules.weights import CheckpointError

    try:
        return spec_from_checkpoint(folder)
    except CheckpointError:
        return _model_spec_from({**_entry_point_defaults(), **saved, "init_model": str(folder)})


def build_spec(options: dict) -> dict:
    """A search spec from command-line options (None = not given). A checkpoint folder given
    as ``init_model`` brings its model and the inputs it was trained on (max_frames,
    max_words, feature_framerate); options it does not set fill the rest."""
    given = {k: v for k, v in options.items() if k in MODEL_KEYS and v is not None}
    _refuse(_joint_scoring(given.get("sim_header"), given.get("loose_type"), given.get("interaction")))
    init_model = given.get("init_model")
    if init_model and Path(init_model).is_dir():
        folder = Path(init_model).expanduser().resolve()
        saved = _checkpoint_args(folder)
        # (not its loose_type: the head decides that, whatever the flag said)
        _refuse(_joint_scoring(saved.get("sim_header"), None, saved.get("interaction")))
        model = _checkpoint_spec(folder, saved)
        inputs = {k: saved.get(k, given.get(k, SEARCH_DEFAULTS[k])) for k in INPUT_KEYS}
    else:
        args = {**_entry_point_defaults(), **SEARCH_DEFAULTS, **given}
        model = _model_spec_from(args)
        inputs = {k: args[k] for k in INPUT_KEYS}
    if model.internvideo is not None and "max_words" not in given:
        inputs["max_words"] = 77  # InternVideo's text tower is used at its full context (as the entry point requires)
    spec = {"model": model.to_dict(), **inputs}
    check_searchable(spec)
    return spec


def check_searchable(spec: dict) -> None:
    head = spec["model"]["head"]
    _refuse(_joint_scoring(head["sim_header"], head["loose_type"], head["interaction"]))


# ----------------------------------------------------------------------------- files and fingerprint


def weights_files(spec: dict) -> list[Path]:
    """The files ``modules.factory.create_model`` reads for this spec."""
    from modules.clip import resolve_clip_checkpoint
    from modules.weights import weights_file

    model = spec["model"]
    if model["init_model"]:  # its own tensors define the CLIP (and InternVideo's tower)
        return [weights_file(model["init_model"])]
    files = []
    if not model["clip"]["config"]:
        files.append(resolve_clip_checkpoint(model["clip"]["name"], model["clip"]["cache_dir"]))
    if model["internvideo"] and model["internvideo"]["pretrained_path"]:
        files.append(Path(model["internvideo"]["pretrained_path"]))
    return files


def fingerprint(spec: dict, file_hash=sha256_of) -> str:
    """Identity of the model's vectors: the spec without file locations, and the weights' hashes."""
    identity = copy.deepcopy(spec)
    identity.pop("feature_framerate", None)  # decides the windows, which the index checks itself
    model = identity["model"]
    model["init_model"] = bool(model["init_model"])
    model["clip"]["cache_dir"] = None
    name = str(model["clip"]["name"])
    if os.sep in name or Path(name).suffix:  # a path, not a released name: its hash identifies it
        model["clip"]["name"] = "<file>"
    if model["internvideo"]:
        model["internvideo"]["pretrained_path"] = bool(model["internvideo"]["pretrained_path"])
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for path in weights_files(spec):
        digest.update(file_hash(path).encode())
    return digest.hexdigest()[:24]


def describe(spec: dict) -> str:
    model = spec["model"]
    if model["init_model"]:
        source = f"checkpoint {model['init_model']}"
    elif model["clip"]["config"]:
        source = f"random CLIP {json.dumps(model['clip']['config'], sort_keys=True)} (seed {model['seed']})"
    else:
        source = f"CLIP {model['clip']['name']}"
    if model["internvideo"]:
        source += f" + InternVideo {model['internvideo']['pretrained_path'] or '(checkpoint weights)'}"
    return f"{model['head']['sim_header']} on {source}, {spec['max_frames']} frames"


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
    from modules.factory import ModelSpec, create_model

    check_searchable(spec)
    model_spec = ModelSpec.from_dict(spec["model"])
    torch.manual_seed(model_spec.seed)
    model = create_model(model_spec)
    context = model.clip.positional_embedding.shape[0]
    if int(spec["max_words"]) > context:
        raise SearchModelError(f"max_words {spec['max_words']} exceeds the text tower's context length {context}")
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return SearchModel(model=model, spec=spec, device=device)
