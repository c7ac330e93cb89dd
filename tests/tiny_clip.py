"""Tiny random CLIP state dicts with OpenAI's key names, for tests that need a whole CLIP.

Defaults: width 64 (one head), 2 layers per tower, patch 16 on 32-pixel images (4 patches),
context 77 and the real vocabulary size 49408, so real token ids work. Weights are drawn at
scales that keep activations O(1) (LayerNorm gains and biases are perturbed away from 1 and
0 so that a mix-up of parameters shows in the outputs).
"""

from __future__ import annotations

import math

import torch


def _block(gen: torch.Generator, prefix: str, width: int) -> dict[str, torch.Tensor]:
    def rnd(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    return {
        f"{prefix}.attn.in_proj_weight": rnd(3 * width, width, std=width**-0.5),
        f"{prefix}.attn.in_proj_bias": rnd(3 * width, std=0.02),
        f"{prefix}.attn.out_proj.weight": rnd(width, width, std=width**-0.5),
        f"{prefix}.attn.out_proj.bias": rnd(width, std=0.02),
        f"{prefix}.ln_1.weight": 1 + rnd(width, std=0.1),
        f"{prefix}.ln_1.bias": rnd(width, std=0.1),
        f"{prefix}.mlp.c_fc.weight": rnd(4 * width, width, std=width**-0.5),
        f"{prefix}.mlp.c_fc.bias": rnd(4 * width, std=0.02),
        f"{prefix}.mlp.c_proj.weight": rnd(width, 4 * width, std=(4 * width) ** -0.5),
        f"{prefix}.mlp.c_proj.bias": rnd(width, std=0.02),
        f"{prefix}.ln_2.weight": 1 + rnd(width, std=0.1),
        f"{prefix}.ln_2.bias": rnd(width, std=0.1),
    }


def tiny_clip_state_dict(
    seed: int = 0,
    *,
    embed_dim: int = 64,
    vision_width: int = 64,
    vision_layers: int = 2,
    patch_size: int = 16,
    image_resolution: int = 32,
    text_width: int = 64,
    text_layers: int = 2,
    context_length: int = 77,
    vocab_size: int = 49408,
    with_metadata: bool = False,
) -> dict[str, torch.Tensor]:
    """A random ViT CLIP state dict (fp32) with OpenAI's key names and the given sizes.

    Heads follow OpenAI's rule (width // 64). `with_metadata` adds the scalar entries
    `input_resolution`, `context_length`, `vocab_size` that OpenAI's archives carry.
    """
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    grid = image_resolution // patch_size
    sd: dict[str, torch.Tensor] = {
        "visual.conv1.weight": rnd(vision_width, 3, patch_size, patch_size, std=(3 * patch_size**2) ** -0.5),
        "visual.class_embedding": rnd(vision_width, std=vision_width**-0.5),
        "visual.positional_embedding": rnd(grid * grid + 1, vision_width, std=vision_width**-0.5),
        "visual.ln_pre.weight": 1 + rnd(vision_width, std=0.1),
        "visual.ln_pre.bias": rnd(vision_width, std=0.1),
    }
    for i in range(vision_layers):
        sd.update(_block(gen, f"visual.transformer.resblocks.{i}", vision_width))
    sd.update(
        {
            "visual.ln_post.weight": 1 + rnd(vision_width, std=0.1),
            "visual.ln_post.bias": rnd(vision_width, std=0.1),
            "visual.proj": rnd(vision_width, embed_dim, std=vision_width**-0.5),
            "token_embedding.weight": rnd(vocab_size, text_width, std=0.02),
            "positional_embedding": rnd(context_length, text_width, std=0.01),
        }
    )
    for i in range(text_layers):
        sd.update(_block(gen, f"transformer.resblocks.{i}", text_width))
    sd.update(
        {
            "ln_final.weight": 1 + rnd(text_width, std=0.1),
            "ln_final.bias": rnd(text_width, std=0.1),
            "text_projection": rnd(text_width, embed_dim, std=text_width**-0.5),
            "logit_scale": torch.tensor(math.log(1 / 0.07)),
        }
    )
    if with_metadata:
        sd.update(
            input_resolution=torch.tensor(image_resolution),
            context_length=torch.tensor(context_length),
            vocab_size=torch.tensor(vocab_size),
        )
    return sd


def random_captions(
    gen: torch.Generator, lengths: list[int], max_words: int, vocab_size: int = 49408
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [N, max_words] laid out as the loaders do: SOT, words, EOT (49407, the
    largest id), zero padding; and the mask (1 on real tokens). `lengths` counts words."""
    ids = torch.zeros(len(lengths), max_words, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, 0] = 49406
        ids[i, 1 : n + 1] = torch.randint(1, min(vocab_size, 49406), (n,), generator=gen)
        ids[i, n + 1] = 49407
        mask[i, : n + 2] = 1
    return ids, mask


def random_video(
    gen: torch.Generator, valid: list[int], max_frames: int, size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Video [N, max_frames, 3, size, size] with `valid[i]` real frames first, padded slots zero
    (as the loaders write them), and the frame mask (int64)."""
    video = torch.zeros(len(valid), max_frames, 3, size, size)
    mask = torch.zeros(len(valid), max_frames, dtype=torch.long)
    for i, n in enumerate(valid):
        video[i, :n] = torch.randn(n, 3, size, size, generator=gen)
        mask[i, :n] = 1
    return video, mask
