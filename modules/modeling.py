"""The retrieval model: CLIP towers, CLIP4Clip's temporal heads, similarity and training loss.

Parameter names follow CLIP4Clip's `pytorch_model.bin` (`clip.*`, `frame_position_embeddings`,
`transformerClip.*`, `lstm_visual.*`, `cross.*`, `similarity_dense`; InternVideo adds
`text_weight_fc` / `video_weight_fc`), so checkpoints trained with CLIP4Clip or with
InternVideo's stock tower load strictly (`load_clip4clip_state_dict`) and give the numbers
that code computes in fp32.

Data flow: `encode_text` and `encode_video` run once per caption / video and return dicts of
tensors; `similarity` scores every (text, video) pair from those dicts; `forward` returns the
symmetric contrastive loss over the global batch (see `modules/losses.py` for the
distributed scheme).

Differences from CLIP4Clip / InternVideo, on purpose:
- frames whose mask is 0 are not encoded at all with the 2-D patch (their slots hold zeros);
  with `linear_patch='3d'` all frames are encoded (the temporal conv needs neighbours) but
  padded frames are zeroed first, which is what CLIP4Clip's loaders feed. Either way, padding
  never changes a result;
- with 3d, conv1 is unused and never trained (under either freeze rule);
- tightTransf trains against the global batch (CLIP4Clip scored only the local batch);
- the temporal head's unused `frame_position_embeddings` under seqLSTM is kept (checkpoints
  have it) but does not require grad, so DDP needs no `find_unused_parameters`;
- with `--interaction wti|ti` the token-wise similarity sees the frames after the temporal
  head (identical for meanP, the only head InternVideo's scripts use; InternVideo skips
  other heads there), and it is always scaled by exp(logit_scale) (InternVideo scales only
  in training, which matters only for dual softmax).

Published behaviour kept by default, ours behind a `RetrievalConfig` field (issue 10):
`freeze_rule` (CLIP4Clip's name test, which freezes nothing with 3d and freezes InternVideo's
visual_proj / visual_ln_post / temporal_cls_token / balance), `evl_ignore_frame_mask`
(InternVideo encodes the padded zero frames), `evl_tokens` (InternVideo's token-wise
interaction: per-frame tokens for wti, the clip vector for ti, unprojected text tokens).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from modules import interaction
from modules.cdcr import CDCR_LAMBDA, CDCR_VARIANTS, cdcr_loss
from modules.clip import build_clip
from modules.losses import all_gather_with_grad, local_contrastive_loss, world_info
from modules.module_cross import CrossModel, MaskedTransformer, init_bert_style
from modules.weights import clip_subdict, load_state_dict_strict, strip_prefixes

logger = logging.getLogger(__name__)

SIM_HEADERS = ("meanP", "seqLSTM", "seqTransf", "tightTransf")
FREEZE_RULES = ("published", "symmetric")
EVL_TOKENS = ("published", "frames")
FRAME_NORMS = ("none", "l2")
INTERACTIONS = ("no", "wti", "ti")
LINEAR_PATCHES = ("2d", "3d")


@dataclass
class RetrievalConfig:
    """Model options, named as CLIP4Clip's / InternVideo's command-line arguments.

    loose_type: None means "dot-product heads unless sim_header is tightTransf"
    (CLIP4Clip requires `--loose_type` for meanP/seqLSTM/seqTransf and forbids it for
    tightTransf); this is the one place that decides it, and the model reads only sim_header.
    frame_norm: 'none' is InternVideo's meanP (masked mean, then L2), 'l2' is CLIP4Clip's
    (L2-normalise every frame first). freeze_layer_num: -1 freezes nothing; N >= 0 freezes
    CLIP parameters by `freeze_rule` (below).
    cross_pair_chunk: (text, video) pairs per cross-encoder pass for tightTransf.

    Published behaviour by default, the project's alternative one field away (README table):
    freeze_rule: 'published' is CLIP4Clip's / InternVideo's name test (`published_frozen`),
    'symmetric' freezes only embeddings and blocks below N in both towers (`symmetric_frozen`).
    evl_ignore_frame_mask: InternVideo's encoder ignores the frame mask, so padded zero frames
    are encoded (True, published); False drops them from the temporal module.
    evl_tokens: the token features of `--interaction wti|ti` with InternVideo's encoder.
    'published': wti compares the per-frame tokens (`visual_ln_post(frame CLS) @ visual_proj`,
    with the frame mask) and ti the clip vector with the *unprojected* text tokens (ln_final
    outputs), as InternVideo's code does; 'frames': per-frame tokens for both, projected text
    tokens (both sides in the joint space).
    cdcr: DRL's channel decorrelation regulariser (0 off, 1-3 its variants; `modules/cdcr.py`),
    training only, with wti/ti (variant 3 needs wti's token weights).
    """

    sim_header: str = "meanP"
    loose_type: bool | None = None
    linear_patch: str = "2d"
    cross_num_hidden_layers: int = 4
    frame_norm: str = "none"
    interaction: str = "no"
    wti_arch: int = 0
    freeze_layer_num: int = 0
    grad_checkpointing: bool = False
    cross_dropout: float = 0.1
    cross_pair_chunk: int = 1024
    mask_same_video_negatives: bool = False
    freeze_rule: str = "published"
    evl_ignore_frame_mask: bool = True
    evl_tokens: str = "published"
    cdcr: int = 0

    def __post_init__(self) -> None:
        _check_choice("sim_header", self.sim_header, SIM_HEADERS)
        _check_choice("frame_norm", self.frame_norm, FRAME_NORMS)
        _check_choice("interaction", self.interaction, INTERACTIONS)
        _check_choice("linear_patch", self.linear_patch, LINEAR_PATCHES)
        _check_choice("freeze_rule", self.freeze_rule, FREEZE_RULES)
        _check_choice("evl_tokens", self.evl_tokens, EVL_TOKENS)
        if self.cdcr not in CDCR_VARIANTS:
            raise ValueError(f"cdcr must be one of {CDCR_VARIANTS}, got {self.cdcr}")
        if self.cdcr and self.interaction == "no":
            raise ValueError("cdcr regularises the token-wise interaction: it needs interaction wti or ti")
        if self.cdcr == 3 and self.interaction != "wti":
            raise ValueError("cdcr=3 weights by wti's token weights: it needs interaction wti")
        tight = self.sim_header == "tightTransf"
        if tight and self.interaction != "no":
            raise ValueError("interaction wti/ti replaces the dot-product similarity; it cannot "
                             "be combined with sim_header=tightTransf")
        if self.loose_type is None:
            self.loose_type = not tight
        # Token-wise interaction ignores loose_type (as InternVideo does); otherwise only
        # tightTransf is a non-loose head.
        if self.loose_type == tight and (tight or self.interaction == "no"):
            raise ValueError(f"sim_header={self.sim_header} needs loose_type={not tight} "
                             "(tightTransf is the only non-loose head)")
        if self.freeze_layer_num < -1:
            raise ValueError(f"freeze_layer_num must be >= -1, got {self.freeze_layer_num}")
        if self.cross_num_hidden_layers < 1 or self.cross_pair_chunk < 1:
            raise ValueError("cross_num_hidden_layers and cross_pair_chunk must be positive")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


# ----------------------------------------------------------------------------- pure heads
def masked_mean(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the frames whose mask is 1; [N, T, E], [N, T] -> [N, E] (0 for no frames)."""
    keep = mask.to(torch.bool)[..., None]
    total = torch.where(keep, frames, torch.zeros((), dtype=frames.dtype, device=frames.device)).sum(1)
    return total / keep.sum(1).clamp(min=1).to(frames.dtype)


def mean_pool(frames: torch.Tensor, mask: torch.Tensor, frame_norm: str) -> torch.Tensor:
    """meanP: (optionally L2-normalised) frames -> masked mean -> L2-normalised [N, E]."""
    if frame_norm == "l2":
        frames = F.normalize(frames, dim=-1)
    return F.normalize(masked_mean(frames, mask), dim=-1)


def lstm_head(lstm: nn.LSTM, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """seqLSTM: the LSTM over the first sum(mask) frames of each video (packed), residual add.

    As in CLIP4Clip the valid frames must come first; padded slots keep their input value.
    """
    lengths = mask.to(torch.long).sum(-1).clamp(min=1).cpu()
    packed = pack_padded_sequence(frames, lengths, batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=frames.shape[1])
    return out + frames


def transformer_head(position_embeddings: nn.Embedding, transformer: MaskedTransformer,
                     frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """seqTransf: frame position embeddings, transformer with padded frames masked, residual add."""
    length = frames.shape[1]
    if length > position_embeddings.num_embeddings:
        raise ValueError(f"{length} frames exceed the {position_embeddings.num_embeddings} frame position embeddings")
    x = frames + position_embeddings.weight[:length].to(frames.dtype)
    return transformer(x, mask) + frames


# ----------------------------------------------------------------------------- model
class CLIP4Clip(nn.Module):
    """Video-text retrieval model around a CLIP (`self.clip`).

    `clip` is a `modules.clip.CLIP` (stock tower: per-frame image encoding) or any module with
    an `encode_video(video, video_mask)` method such as InternVideo's model, whose one vector
    per clip is then treated as a single frame with mask 1. Either must provide
    `encode_text(ids, return_hidden=...)`, `logit_scale`, `positional_embedding`,
    `ln_final`, `text_projection` and `transformer.resblocks` (OpenAI names).
    """

    def __init__(self, config: RetrievalConfig, clip: nn.Module):
        super().__init__()
        self.config = config
        self.clip = clip
        self.clip_evl = callable(getattr(clip, "encode_video", None))
        if self.clip_evl and config.linear_patch != "2d":
            raise ValueError("linear_patch='3d' applies to the stock CLIP tower only")
        width = clip.ln_final.weight.shape[0]
        heads = max(1, width // 64)
        context = clip.positional_embedding.shape[0]
        embed_dim = clip.text_projection.shape[1]
        header = config.sim_header
        if header != "meanP" and embed_dim != width:
            raise ValueError(f"sim_header={header} runs on frame features of size {embed_dim} with "
                             f"weights from the text transformer of width {width}; they must be equal")
        if self.unprojected_text_tokens and embed_dim != width:
            raise ValueError(f"evl_tokens='published' compares unprojected text tokens (width {width}) with "
                             f"projected frame tokens ({embed_dim}); they must be equal (use evl_tokens='frames')")
        layers = config.cross_num_hidden_layers
        if header in ("seqLSTM", "seqTransf"):
            self.frame_position_embeddings = nn.Embedding(context, width)
        if header == "seqTransf":
            self.transformerClip = MaskedTransformer(width, layers, heads)
        if header == "seqLSTM":
            self.lstm_visual = nn.LSTM(width, width, num_layers=1, batch_first=True)
            self.frame_position_embeddings.requires_grad_(False)  # unused, kept for checkpoints
        if header == "tightTransf":
            self.cross = CrossModel(width, layers, heads, context, config.cross_dropout)
            self.similarity_dense = nn.Linear(width, 1)
        self._init_heads()
        if config.interaction != "no":
            self._make_weight_fcs(embed_dim)
        self.set_grad_checkpointing(config.grad_checkpointing)
        self.freeze_clip_layers(config.freeze_layer_num)
        if config.linear_patch == "3d":
            clip.visual.conv1.weight.requires_grad_(False)  # unused with conv2, under either rule

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_clip_state_dict(cls, config: RetrievalConfig, clip_state_dict: dict[str, torch.Tensor]) -> CLIP4Clip:
        """Stock tower from an OpenAI-named CLIP state dict; heads initialised as CLIP4Clip does."""
        return cls(config, build_clip(dict(clip_state_dict), linear_patch=config.linear_patch))

    @classmethod
    def from_clip4clip_state_dict(cls, config: RetrievalConfig, state_dict: dict[str, torch.Tensor],
                                  source: str = "state dict") -> CLIP4Clip:
        """Stock tower and heads from a whole CLIP4Clip `pytorch_model.bin` state dict (strict)."""
        state_dict = strip_prefixes(state_dict)
        model = cls.from_clip_state_dict(config, clip_subdict(state_dict))
        load_clip4clip_state_dict(model, state_dict, source=source)
        return model

    def _init_heads(self) -> None:
        """CLIP4Clip's initialisation: `init_weights` everywhere, then frame/cross position
        embeddings from CLIP's text positional embedding and the first
        `cross_num_hidden_layers` text blocks copied into transformerClip / cross."""
        for name in ("frame_position_embeddings", "transformerClip", "cross", "similarity_dense"):
            if hasattr(self, name):
                getattr(self, name).apply(init_bert_style)
        text_pos = self.clip.positional_embedding.detach()
        text_blocks = self.clip.transformer.resblocks
        targets = []
        if hasattr(self, "frame_position_embeddings"):
            self.frame_position_embeddings.weight.data.copy_(text_pos)
        if hasattr(self, "transformerClip"):
            targets.append(("transformerClip", self.transformerClip.resblocks))
        if hasattr(self, "cross"):
            self.cross.embeddings.position_embeddings.weight.data.copy_(text_pos)
            targets.append(("cross.transformer", self.cross.transformer.resblocks))
        for name, blocks in targets:
            if len(blocks) > len(text_blocks):
                logger.warning("%s has %d layers but the text transformer only %d; layers %d.. keep "
                               "a random initialisation", name, len(blocks), len(text_blocks), len(text_blocks))
            for block, source in zip(blocks, text_blocks, strict=False):
                block.load_state_dict(source.state_dict())

    def _make_weight_fcs(self, dim: int) -> None:
        if self.config.interaction == "wti" or self.config.wti_arch > 0:
            self.text_weight_fc = interaction.make_weight_fc(self.config.wti_arch, dim)
            self.video_weight_fc = interaction.make_weight_fc(self.config.wti_arch, dim)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Pass through to the towers' `grad_checkpointing` attributes."""
        for tower in (getattr(self.clip, "visual", None), self.clip):
            transformer = getattr(tower, "transformer", None)
            if transformer is not None and hasattr(transformer, "grad_checkpointing"):
                transformer.grad_checkpointing = enabled

    def freeze_clip_layers(self, freeze_layer_num: int) -> list[str]:
        """`--freeze_layer_num N` under `config.freeze_rule`; returns the frozen parameter names.

        N = -1 freezes nothing. 'published' (`published_frozen`): CLIP4Clip's / InternVideo's
        name test, which on InternVideo's model also freezes visual_proj, visual_ln_post,
        temporal_cls_token and balance, and with linear_patch='3d' freezes nothing.
        'symmetric' (`symmetric_frozen`): the embeddings and the blocks below N of both
        towers; projections, final norms, conv2 and the temporal module train.
        """
        frozen = freeze_clip(self.clip, freeze_layer_num, self.config.freeze_rule, self.config.linear_patch)
        return ["clip." + name for name in frozen]

    @property
    def unprojected_text_tokens(self) -> bool:
        """InternVideo's token-wise interaction read its text tokens before text_projection."""
        return self.clip_evl and self.config.interaction != "no" and self.config.evl_tokens == "published"

    @property
    def evl_frame_tokens(self) -> bool:
        """Token-wise interaction on InternVideo's per-frame tokens (else its one clip vector)."""
        return self.clip_evl and (self.config.interaction == "wti" or
                                  (self.config.interaction == "ti" and self.config.evl_tokens == "frames"))

    # ------------------------------------------------------------------ encoders
    @property
    def uses_tokens(self) -> bool:
        return self.config.interaction != "no"

    def encode_text(self, input_ids: torch.Tensor, input_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """ids [N, L] -> {"text": [N, E] end-token feature, "mask": [N, L]} (+ "tokens": [N, L, E]
        for token-wise interaction). The attention is causal, so padding after the end token
        changes nothing."""
        input_ids = input_ids.reshape(-1, input_ids.shape[-1])
        mask = torch.ones_like(input_ids) if input_mask is None else input_mask.reshape(input_ids.shape)
        if self.uses_tokens:
            text, tokens = self.clip.encode_text(input_ids, return_hidden=True,
                                                 project_hidden=not self.unprojected_text_tokens)
            return {"text": text.float(), "tokens": tokens.float(), "mask": mask}
        return {"text": self.clip.encode_text(input_ids).float(), "mask": mask}

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """video [N, T, 3, H, W], mask [N, T] -> {"frames": [N, T', E] (after the temporal head;
        zeros at padded slots), "mask": [N, T']} plus, for the dot-product heads, "video":
        [N, E], the L2-normalised pooled vector. T' = 1 with InternVideo's encoder."""
        if video.dim() != 5 or video.shape[:2] != video_mask.shape:
            raise ValueError(f"encode_video expects video [N, T, 3, H, W] and mask [N, T]; got "
                             f"{tuple(video.shape)} and {tuple(video_mask.shape)}")
        if self.clip_evl:
            frames, mask = self._encode_evl(video, video_mask)
        else:
            frames, mask = self._encode_frames(video, video_mask), video_mask
        frames = self._temporal_head(frames, mask)
        frames = torch.where(mask.bool()[..., None], frames, torch.zeros((), dtype=frames.dtype, device=frames.device))
        out = {"frames": frames, "mask": mask}
        if self.config.sim_header != "tightTransf":
            out["video"] = mean_pool(frames, mask, self.config.frame_norm)
        return out

    def _encode_evl(self, video: torch.Tensor, video_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """InternVideo's encoder: its clip vector as one frame [N, 1, E] (mask of ones), or its
        per-frame tokens [N, T, E] with the frame mask for token-wise interaction (wti)."""
        encoder_mask = None if self.config.evl_ignore_frame_mask else video_mask
        if self.evl_frame_tokens:
            _, frames = self.clip.encode_video(video, encoder_mask, return_frames=True)
            return frames.float(), video_mask
        frames = self.clip.encode_video(video, encoder_mask).float()[:, None, :]
        return frames, torch.ones(frames.shape[:2], dtype=video_mask.dtype, device=frames.device)

    def _encode_frames(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-frame CLIP features [N, T, E]; padded slots are zeros."""
        n, t = mask.shape
        flat = video.reshape(n * t, *video.shape[2:])
        keep = mask.reshape(-1).bool()
        if self.config.linear_patch == "3d":
            flat = torch.where(keep[:, None, None, None], flat, torch.zeros((), dtype=flat.dtype, device=flat.device))
            return self.clip.encode_image(flat, video_frame=t).float().reshape(n, t, -1)
        if bool(keep.all()):
            return self.clip.encode_image(flat).float().reshape(n, t, -1)
        index = keep.nonzero().squeeze(1)
        features = self.clip.encode_image(flat[index]).float()
        out = features.new_zeros(n * t, features.shape[-1]).index_copy(0, index, features)
        return out.reshape(n, t, -1)

    def _temporal_head(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.config.sim_header == "seqLSTM":
            return lstm_head(self.lstm_visual, frames, mask)
        if self.config.sim_header == "seqTransf":
            return transformer_head(self.frame_position_embeddings, self.transformerClip, frames, mask)
        return frames

    # ------------------------------------------------------------------ similarity
    def similarity(self, text_feats: dict[str, torch.Tensor], video_feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores [Nt, Nv] for every (text, video) pair: exp(logit_scale) * cosine for the loose
        heads, the scaled token-wise score for wti/ti, the cross encoder's score for tightTransf."""
        if self.config.sim_header == "tightTransf":
            return self.cross_similarity(text_feats["text"], video_feats["frames"], video_feats["mask"])
        scale = self.clip.logit_scale.exp()
        if self.config.interaction == "no":
            return scale * F.normalize(text_feats["text"], dim=-1) @ video_feats["video"].t()
        if self.config.interaction == "wti":
            sim = interaction.wti_similarity(text_feats["tokens"], text_feats["mask"], video_feats["frames"],
                                             video_feats["mask"], self.text_weight_fc, self.video_weight_fc)
        else:
            sim = interaction.ti_similarity(text_feats["tokens"], text_feats["mask"], video_feats["frames"],
                                            video_feats["mask"])
        return scale * sim

    def cross_similarity(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tightTransf: one cross-encoder pass per (text, video) pair over [text; frames].

        Cost is O(Nt * Nv) transformer passes; pairs are processed `cross_pair_chunk` at a
        time (whole rows of texts) to bound memory.
        """
        n_text, n_video = text.shape[0], frames.shape[0]
        rows_per_chunk = max(1, self.config.cross_pair_chunk // max(1, n_video))
        pair_mask = torch.cat([mask.new_ones(n_video, 1), mask], dim=1)
        out = []
        for start in range(0, n_text, rows_per_chunk):
            chunk = text[start:start + rows_per_chunk]
            c = chunk.shape[0]
            tokens = torch.cat([chunk[:, None, None, :].expand(c, n_video, 1, -1),
                                frames[None].expand(c, -1, -1, -1)], dim=2)
            _, pooled = self.cross(tokens.reshape(c * n_video, *tokens.shape[2:]),
                                   pair_mask.repeat(c, 1))
            out.append(self.similarity_dense(pooled).reshape(c, n_video))
        return torch.cat(out, dim=0)

    # ------------------------------------------------------------------ training
    def similarity_keys(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The entries of the text / video dicts that `similarity` reads (what gets gathered)."""
        if self.config.sim_header == "tightTransf":
            return ("text",), ("frames", "mask")
        if self.config.interaction != "no":
            return ("tokens", "mask"), ("frames", "mask")
        return ("text",), ("video",)

    def forward(self, input_ids: torch.Tensor, input_mask: torch.Tensor, video: torch.Tensor,
                video_mask: torch.Tensor, video_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Symmetric contrastive loss of this rank's share of the global batch (modules/losses.py).

        `video_ids` [b] (e.g. the dataset's video index) is needed with
        `mask_same_video_negatives`: other captions of the same video in the batch are then
        not counted as negatives.
        """
        text_feats = self.encode_text(input_ids, input_mask)
        video_feats = self.encode_video(video, video_mask)
        return self.contrastive_loss(text_feats, video_feats, video_ids)

    def contrastive_loss(self, text_feats: dict[str, torch.Tensor], video_feats: dict[str, torch.Tensor],
                         video_ids: torch.Tensor | None = None) -> torch.Tensor:
        text_keys, video_keys = self.similarity_keys()
        text_feats = {k: text_feats[k] for k in text_keys}
        video_feats = {k: video_feats[k] for k in video_keys}
        b = next(iter(text_feats.values())).shape[0]
        world, rank = world_info()
        if world == 1:
            rows = cols = self.similarity(text_feats, video_feats)
        else:
            all_text = {k: all_gather_with_grad(v) for k, v in text_feats.items()}
            all_video = {k: all_gather_with_grad(v) for k, v in video_feats.items()}
            rows = self.similarity(text_feats, all_video)
            cols = self.similarity(all_text, video_feats)
        local_ids = all_ids = None
        if self.config.mask_same_video_negatives:
            if video_ids is None:
                raise ValueError("mask_same_video_negatives needs video_ids")
            local_ids = video_ids.reshape(-1).to(rows.device)
            all_ids = all_gather_with_grad(local_ids)
        loss = local_contrastive_loss(rows, cols, rank * b, local_ids, all_ids)
        if self.config.cdcr:
            loss = loss + CDCR_LAMBDA * self._cdcr(text_feats, video_feats)
        return loss

    def _cdcr(self, text_feats: dict[str, torch.Tensor], video_feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """DRL's decorrelation term on the global batch (every rank computes the same value;
        the gather's backward sums over ranks, so DDP's mean gives the full gradient)."""
        text = all_gather_with_grad(text_feats["tokens"])
        text_mask = all_gather_with_grad(text_feats["mask"])
        frames = all_gather_with_grad(video_feats["frames"])
        video_mask = all_gather_with_grad(video_feats["mask"])
        text_w = video_w = None
        if self.config.cdcr == 3:
            text_w, video_w = interaction.wti_weights(text, text_mask, frames, video_mask,
                                                      self.text_weight_fc, self.video_weight_fc)
        return cdcr_loss(text, text_mask, frames, video_mask, self.config.cdcr, text_w, video_w)


# ----------------------------------------------------------------------------- freezing
_EMBEDDING_PREFIXES = ("token_embedding.", "positional_embedding", "text_mask_embedding", "visual.conv1.",
                       "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.")
_BLOCK_PREFIXES = ("transformer.resblocks.", "visual.transformer.resblocks.")
# CLIP4Clip's "top layers always need to train", matched at the start of the name. InternVideo
# renamed visual.proj / visual.ln_post to visual_proj / visual_ln_post, which these miss.
_PUBLISHED_ALWAYS_TRAINED = ("ln_final.", "text_projection", "logit_scale", "visual.ln_post.", "visual.proj")


def _block_index(name: str) -> int | None:
    for prefix in _BLOCK_PREFIXES:
        if name.startswith(prefix):
            return int(name[len(prefix):].split(".")[0])
    return None


def symmetric_frozen(name: str, n: int, linear_patch: str = "2d") -> bool:
    """Our rule: embeddings and the residual blocks below N of both towers are frozen."""
    block = _block_index(name)
    return block < n if block is not None else name.startswith(_EMBEDDING_PREFIXES)


def published_frozen(name: str, n: int, linear_patch: str = "2d") -> bool:
    """CLIP4Clip's name test, with InternVideo's exception for its temporal module.

    Trains: names starting with a top-layer prefix, blocks >= N, names containing `.dpe.` or
    `.dec.`; everything else in the CLIP is frozen. With linear_patch='3d' CLIP4Clip's
    `name.find("conv2.")` is truthy for every name not starting with `conv2.`, so nothing is.
    """
    if name.startswith(_PUBLISHED_ALWAYS_TRAINED):
        return False
    block = _block_index(name)
    if block is not None and block >= n:
        return False
    if ".dpe." in name or ".dec." in name:
        return False
    return not (linear_patch == "3d" and not name.startswith("conv2."))


FREEZE_TESTS = {"published": published_frozen, "symmetric": symmetric_frozen}


def freeze_clip(clip: nn.Module, freeze_layer_num: int, rule: str = "published", linear_patch: str = "2d") -> list[str]:
    """`--freeze_layer_num N` on a CLIP or InternVideo model under `rule` (see
    `CLIP4Clip.freeze_clip_layers`); returns the names it froze."""
    if freeze_layer_num < -1:
        raise ValueError(f"freeze_layer_num must be >= -1, got {freeze_layer_num}")
    _check_choice("freeze_rule", rule, FREEZE_RULES)
    if freeze_layer_num < 0:
        return []
    frozen_by = FREEZE_TESTS[rule]
    frozen = []
    for name, param in clip.named_parameters():
        if frozen_by(name, freeze_layer_num, linear_patch):
            param.requires_grad_(False)
            frozen.append(name)
    logger.info("freeze_layer_num=%d (%s rule) froze %d CLIP tensors", freeze_layer_num, rule, len(frozen))
    if rule == "published" and linear_patch == "3d":
        logger.warning("freeze_layer_num with linear_patch 3d: the published rule freezes nothing "
                       "(CLIP4Clip's conv2 test); --freeze_rule symmetric freezes as documented")
    return frozen


# ----------------------------------------------------------------------------- checkpoints
def config_hints(state_dict: dict[str, torch.Tensor]) -> dict[str, object]:
    """Model options a CLIP4Clip/InternVideo checkpoint implies, read off its key names."""
    keys = list(strip_prefixes(state_dict))
    hints: dict[str, object] = {}
    for prefix, header in (("transformerClip.", "seqTransf"), ("lstm_visual.", "seqLSTM"), ("cross.", "tightTransf")):
        if any(k.startswith(prefix) for k in keys):
            hints["sim_header"] = header
    layers = {k[len(prefix):].split(".")[0] for k in keys
              for prefix in ("transformerClip.resblocks.", "cross.transformer.resblocks.") if k.startswith(prefix)}
    if layers:
        hints["cross_num_hidden_layers"] = len(layers)
    if "clip.visual.conv2.weight" in keys:
        hints["linear_patch"] = "3d"
    if any(k.startswith("text_weight_fc.") for k in keys):
        hints["interaction"] = "wti (or ti)"
    return hints


def load_clip4clip_state_dict(model: CLIP4Clip, state_dict: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Load a CLIP4Clip / InternVideo fine-tuned state dict strictly (DDP `module.` prefix removed).

    Raises `CheckpointError` listing every missing, unexpected and mis-shaped key at once,
    with the model options the checkpoint's keys suggest. fp16 tensors are cast on copy.
    """
    state_dict = strip_prefixes(state_dict)
    hints = config_hints(state_dict)
    hint = f"\n  the checkpoint's keys suggest: {hints}" if hints else ""
    load_state_dict_strict(model, state_dict, source=f"{source} ({model.config})", hint=hint)
