"""Token-wise text-video interaction from DRL (`--interaction ti|wti`, `--wti_arch`).

For every text-video pair, the cosine similarity of each text token with each frame:
  * t2v: each real text token keeps its best-matching real frame;
  * v2t: each real frame keeps its best-matching real text token;
  * `ti`  averages t2v over the real text tokens and v2t over the real frames;
  * `wti` weights them instead with softmax weights from small MLPs on the (unnormalised)
    token / frame features, softmax over the real positions only;
  * score = (t2v + v2t) / 2, a cosine-scale number: the caller multiplies by
    `exp(logit_scale)` (the published code did so in training only).

Differences from the published code (DRL, copied into InternVideo's `modeling.py`): there,
padded positions were multiplied to 0 before the max, so a real token whose similarities
were all negative picked the 0 of a padding slot. Here padded positions never take part:
the maxima run over real positions only. With no negative similarities the two agree.
A row with no real position is an error rather than a NaN.

Pairs are scored in chunks of text rows so that the [Nt, Nv, L, T] similarity tensor stays
bounded (`max_elements`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_weight_fc(wti_arch: int, dim: int, init_std: float | None = 0.02) -> nn.Module:
    """The token-weight MLP: 1 = Linear(dim, 1); 2 = Linear-ReLU-Linear; 3 = two hidden layers.

    Hidden widths equal `dim`. Sequential indices (0, 2[, 4]) give DRL/InternVideo's
    parameter names (`text_weight_fc.0.weight`, ...). `init_std` re-initialises weights
    N(0, init_std) with zero biases, as CLIP4Clip/DRL's `init_weights` does; None keeps
    PyTorch's default (what InternVideo's clip_evl path ended up with).
    """
    if wti_arch == 1:
        module: nn.Module = nn.Linear(dim, 1)
    elif wti_arch == 2:
        module = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
    elif wti_arch == 3:
        module = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
    else:
        raise ValueError(f"wti_arch must be 1, 2 or 3 for --interaction wti, got {wti_arch}")
    if init_std is not None:
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=init_std)
                nn.init.zeros_(layer.bias)
    return module


def _bool_mask(mask: torch.Tensor, shape: tuple[int, int], name: str) -> torch.Tensor:
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(mask.shape)} does not match the features {tuple(shape)}")
    mask = mask.bool()
    if not bool(mask.any(dim=1).all()):
        raise ValueError(f"{name} has a row without any real position")
    return mask


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def _pair_scores(text: torch.Tensor, text_mask: torch.Tensor, text_w: torch.Tensor,
                 video: torch.Tensor, video_mask: torch.Tensor, video_w: torch.Tensor) -> torch.Tensor:
    """Normalised tokens and per-position weights (zero on padding) -> [nt, Nv] scores."""
    sim = torch.einsum("ald,btd->ablt", text, video)  # [nt, Nv, L, T]
    t2v = sim.masked_fill(~video_mask[None, :, None, :], float("-inf")).amax(dim=-1)  # [nt, Nv, L]
    v2t = sim.masked_fill(~text_mask[:, None, :, None], float("-inf")).amax(dim=-2)  # [nt, Nv, T]
    # Padded text rows / frame columns still hold finite maxima here; their weight is 0.
    t2v = torch.einsum("abl,al->ab", t2v, text_w)
    v2t = torch.einsum("abt,bt->ab", v2t, video_w)
    return (t2v + v2t) / 2


def _score(text_tokens, text_mask, video_frames, video_mask, text_w, video_w, max_elements) -> torch.Tensor:
    text = F.normalize(text_tokens, dim=-1)
    video = F.normalize(video_frames, dim=-1)
    per_row = max(1, video.shape[0] * text.shape[1] * video.shape[1])
    step = max(1, max_elements // per_row)
    rows = [
        _pair_scores(text[i:i + step], text_mask[i:i + step], text_w[i:i + step], video, video_mask, video_w)
        for i in range(0, text.shape[0], step)
    ]
    return torch.cat(rows, dim=0)


def ti_similarity(text_tokens: torch.Tensor, text_mask: torch.Tensor, video_frames: torch.Tensor,
                  video_mask: torch.Tensor, max_elements: int = 1 << 26) -> torch.Tensor:
    """Token-wise interaction: text [Nt, L, E] + mask [Nt, L], video [Nv, T, E] + mask [Nv, T] -> [Nt, Nv]."""
    text_mask = _bool_mask(text_mask, text_tokens.shape[:2], "text_mask")
    video_mask = _bool_mask(video_mask, video_frames.shape[:2], "video_mask")
    text_w = text_mask.to(text_tokens.dtype)
    text_w = text_w / text_w.sum(dim=1, keepdim=True)
    video_w = video_mask.to(video_frames.dtype)
    video_w = video_w / video_w.sum(dim=1, keepdim=True)
    return _score(text_tokens, text_mask, video_frames, video_mask, text_w, video_w, max_elements)


def wti_weights(text_tokens: torch.Tensor, text_mask: torch.Tensor, video_frames: torch.Tensor,
                video_mask: torch.Tensor, text_weight_fc: nn.Module,
                video_weight_fc: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """wti's per-position weights: softmax over the real positions of the fcs' outputs on the
    unnormalised features -> ([Nt, L], [Nv, T])."""
    text_mask = _bool_mask(text_mask, text_tokens.shape[:2], "text_mask")
    video_mask = _bool_mask(video_mask, video_frames.shape[:2], "video_mask")
    return (_masked_softmax(text_weight_fc(text_tokens).squeeze(-1), text_mask),
            _masked_softmax(video_weight_fc(video_frames).squeeze(-1), video_mask))


def wti_similarity(text_tokens: torch.Tensor, text_mask: torch.Tensor, video_frames: torch.Tensor,
                   video_mask: torch.Tensor, text_weight_fc: nn.Module, video_weight_fc: nn.Module,
                   max_elements: int = 1 << 26) -> torch.Tensor:
    """Weighted token-wise interaction (DRL's wti); weights from the fcs on unnormalised features."""
    text_w, video_w = wti_weights(text_tokens, text_mask, video_frames, video_mask, text_weight_fc, video_weight_fc)
    text_mask = _bool_mask(text_mask, text_tokens.shape[:2], "text_mask")
    video_mask = _bool_mask(video_mask, video_frames.shape[:2], "video_mask")
    return _score(text_tokens, text_mask, video_frames, video_mask, text_w, video_w, max_elements)
