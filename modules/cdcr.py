"""DRL's channel decorrelation regulariser (`--cdcr 1|2|3`, with `--interaction wti|ti`).

Pairs of L2-normalised token features are standardised per channel over the batch (mean 0,
unbiased std 1), their channel cross-correlation C [D, D] is formed, and the loss is
alpha1 * sum_i (C_ii - 1)^2 + alpha2 * sum_{i != j} C_ij^2 (InternVideo: alpha1 = 0.16,
alpha2 = 0), added to the contrastive loss times lambda = 0.001. The pairs:
  1. one random real text token and one random real frame of each matched (text, video);
  2. every real text token with its best-matching frame of its own video, and every real
     frame with its best-matching token of its own text; C is the mean of the two;
  3. as 2, each pair weighted by wti's token weight and the sums divided by the batch size.

Difference from the published code (InternVideo `modeling.py`, `wti_interaction`): there the
best match was taken after multiplying padded positions by 0, so a token whose similarities
were all negative could match a padded slot; here only real positions are candidates (as in
`modules/interaction.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CDCR_VARIANTS = (0, 1, 2, 3)
CDCR_ALPHA_ON_DIAGONAL = 0.16
CDCR_ALPHA_OFF_DIAGONAL = 0.0
CDCR_LAMBDA = 0.001


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per channel over the rows: (x - mean) / std (unbiased, as torch.std)."""
    return (x - x.mean(0)) / x.std(0)


def decorrelation(c: torch.Tensor) -> torch.Tensor:
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = (c - torch.diag_embed(torch.diagonal(c))).pow(2).sum()
    return CDCR_ALPHA_ON_DIAGONAL * on + CDCR_ALPHA_OFF_DIAGONAL * off


def _random_real_position(mask: torch.Tensor) -> torch.Tensor:
    """One index per row among its real positions (they come first)."""
    counts = mask.sum(-1)
    return torch.randint(0, 10000, counts.shape, device=mask.device) % counts


def _best_matches(text: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor,
                  video_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For matched pairs (row i with row i): each token's best real frame [B, L] and each
    frame's best real token [B, T]."""
    sim = torch.einsum("bld,btd->blt", text, video)
    best_frame = sim.masked_fill(~video_mask[:, None, :], float("-inf")).argmax(-1)
    best_token = sim.masked_fill(~text_mask[:, :, None], float("-inf")).argmax(-2)
    return best_frame, best_token


def cdcr_loss(text_tokens: torch.Tensor, text_mask: torch.Tensor, video_frames: torch.Tensor,
              video_mask: torch.Tensor, variant: int, text_weight: torch.Tensor | None = None,
              video_weight: torch.Tensor | None = None) -> torch.Tensor:
    """text [B, L, D] + mask [B, L], video [B, T, D] + mask [B, T] (row i of each is a matched
    pair) -> the weighted decorrelation loss (not yet times lambda). Variant 3 needs wti's
    weights [B, L] and [B, T]."""
    if variant not in (1, 2, 3):
        raise ValueError(f"cdcr variant must be 1, 2 or 3, got {variant}")
    text_mask, video_mask = text_mask.bool(), video_mask.bool()
    text = F.normalize(text_tokens, dim=-1)
    video = F.normalize(video_frames, dim=-1)
    rows = torch.arange(text.shape[0], device=text.device)
    if variant == 1:
        a = standardize(text[rows, _random_real_position(text_mask)])
        b = standardize(video[rows, _random_real_position(video_mask)])
        return decorrelation(a.t() @ b / a.shape[0])
    best_frame, best_token = _best_matches(text, text_mask, video, video_mask)
    t_feat, matched_v = text[text_mask], video[rows[:, None], best_frame][text_mask]
    v_feat, matched_t = video[video_mask], text[rows[:, None], best_token][video_mask]
    z_t, z_v = standardize(t_feat), standardize(matched_v)
    x_v, x_t = standardize(v_feat), standardize(matched_t)
    if variant == 2:
        c = (z_t.t() @ z_v / z_t.shape[0] + x_v.t() @ x_t / x_v.shape[0]) / 2
    else:
        if text_weight is None or video_weight is None:
            raise ValueError("cdcr variant 3 needs wti's text and video token weights")
        batch = text.shape[0]
        c1 = (z_t * text_weight[text_mask][:, None]).t() @ z_v / batch
        c2 = (x_v * video_weight[video_mask][:, None]).t() @ x_t / batch
        c = (c1 + c2) / 2
    return decorrelation(c)
