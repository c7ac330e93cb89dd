"""Strict state-dict loading with one error that lists everything wrong."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint file or state dict that cannot be used; the message names the source."""


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


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """`load_state_dict(strict=True)`, but the error lists missing, unexpected and mis-shaped keys at once."""
    problems = state_dict_problems(module, state_dict)
    if problems:
        raise CheckpointError(f"{source} does not match {type(module).__name__}:\n  " + "\n  ".join(problems))
    module.load_state_dict(state_dict, strict=True)


def strip_prefixes(state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.",)) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes such as DDP's `module.` from every key that has them."""
    out = {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def sha256_of(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in chunks (checkpoints and downloaded weights are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
