"""InternVideo's video-text model (`--clip_evl`): a CLIP ViT with an EVL "global" temporal head.

Video path (frames enter as [B, 3, T, H, W]):
  1. A (1, p, p) Conv3d patch embedding, class and positional embeddings, `ln_pre`, then the
     usual CLIP ViT blocks on all B*T frames independently.
  2. After each block in `return_list` (the last four: 8-11 for B/16, 20-23 for L/14) the
     frames' patch tokens get a depth-wise 3x3x3 Conv3d position enhancement (`dpe`), and a
     cross-attention decoder layer (`dec`) updates one learned temporal query
     (`temporal_cls_token`) from all T*L tokens of the clip. The enhanced tokens only feed
     the decoder; the ViT stream itself is untouched. The decoder's output projections start
     at zero, so at initialisation the query stays equal to `temporal_cls_token`.
  3. Output = (1 - sigmoid(balance)) * query + sigmoid(balance) * mean_t(frame CLS tokens of
     the last block), then `visual_ln_post` and `visual_proj`: one vector per clip.
Text path: CLIP's text tower (`modules.clip.TextTower`: causal mask, `ln_final`,
`text_projection` at the end token).

Parameter names are InternVideo's (`visual.transformer.dpe.N.*`, `visual.transformer.dec.N.*`,
`visual.transformer.temporal_cls_token`, `visual.transformer.balance`, `visual_ln_post.*`,
`visual_proj`, `text_mask_embedding`, the text keys unchanged), so its released checkpoints
load with no missing or unexpected keys (`modules/internvideo_checkpoint.py`).

Differences from the published code (InternVideo1 Video-Text-Retrieval, `modules/clip_evl`):
  * Short clips. The published loader zero-pads clips shorter than `max_frames`, and the
    zero frames go through the temporal module (the frame mask is ignored), so a clip's
    feature depends on `max_frames`. The retrieval model reproduces that by default
    (`RetrievalConfig.evl_ignore_frame_mask`: no mask reaches this encoder). If a mask with
    padded slots is passed, padded frames are zeroed before `dpe` (exactly what the conv's
    own zero padding does at the clip's end), removed from the decoder's keys and from the
    CLS mean: the result equals running the real frames alone.
  * `t_size` only records the expected frame count. The published code reshapes with a
    hard-wired T = t_size; here T is read off the input. No parameter depends on T.
  * Text of any length up to the context length (the published tower requires exactly 77).
    `encode_text(..., return_hidden=True)` returns *projected* token features; the published
    DRL path compared unprojected text tokens with projected video tokens.
  * Gradient checkpointing is a flag (`set_grad_checkpointing`), off by default; the
    published model always checkpoints every ViT block.
  * Freezing (`CLIP4Clip.freeze_clip_layers`): the published rule (default) freezes
    `visual_proj`, `visual_ln_post`, `temporal_cls_token` and `balance` (their names do not
    match its keep-list) while `text_projection` trains; `freeze_rule='symmetric'` treats
    both towers alike (embeddings and blocks below N frozen, the rest trainable).
  * Batch-first tensors and `F.scaled_dot_product_attention` (numerically the same attention).
    The `mode='image'` and `return_all_feats` paths are not ported; `return_frames=True`
    gives the per-frame features (`visual_ln_post(frame CLS) @ visual_proj`) that DRL's
    token-wise interaction uses with this tower.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from modules.clip import CLIPConfig, LayerNorm, QuickGELU, ResidualAttentionBlock, TextTower, config_from_state_dict
from modules.weights import CheckpointError

logger = logging.getLogger(__name__)

NUM_EVL_LAYERS = 4  # InternVideo's decoder depth: the last four ViT blocks feed it


@dataclass(frozen=True)
class EVLConfig(CLIPConfig):
    """CLIP's sizes plus the temporal module's; `return_list` empty means "the last `num_evl_layers`"."""

    t_size: int = 8
    num_evl_layers: int = NUM_EVL_LAYERS
    return_list: tuple[int, ...] = field(default=())
    mlp_factor: float = 4.0
    # Dropout inside the decoder MLP (training only). InternVideo's retrieval loader
    # (`clip_evl.load`) passes 0.0; 0.5 is the default of its classification backbones.
    # (Its `cls_dropout` belonged to a classification head that the retrieval model lacks.)
    mlp_dropout: float = 0.0

    def __post_init__(self) -> None:
        layers = self.resolved_return_list
        if len(layers) != self.num_evl_layers:
            raise ValueError(f"return_list {layers} must name {self.num_evl_layers} blocks")
        if any(not 0 <= i < self.vision_layers for i in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"return_list {layers} must be distinct blocks in 0..{self.vision_layers - 1}")

    @property
    def resolved_return_list(self) -> tuple[int, ...]:
        if self.return_list:
            return tuple(self.return_list)
        return tuple(range(self.vision_layers - self.num_evl_layers, self.vision_layers))


def evl_config_from_state_dict(state_dict: dict, t_size: int = 8, mlp_dropout: float = 0.0) -> EVLConfig:
    """Read the sizes off an InternVideo-named state dict (after `visual_proj` renaming)."""
    if "visual_proj" not in state_dict:
        raise CheckpointError("not an InternVideo state dict: 'visual_proj' is missing")
    clip = config_from_state_dict({**state_dict, "visual.proj": state_dict["visual_proj"]})
    decoders = len({k.split(".")[3] for k in state_dict if k.startswith("visual.transformer.dec.")})
    return EVLConfig(**asdict(clip), t_size=t_size, num_evl_layers=decoders or NUM_EVL_LAYERS, mlp_dropout=mlp_dropout)


def evl_config_from_clip(config: CLIPConfig, t_size: int = 8, **overrides) -> EVLConfig:
    """The InternVideo model with the sizes of an OpenAI CLIP (B/16 -> blocks 8-11, L/14 -> 20-23)."""
    overrides.setdefault("num_evl_layers", min(NUM_EVL_LAYERS, config.vision_layers))
    return EVLConfig(**asdict(config), t_size=t_size, **overrides)


# ----------------------------------------------------------------------------- temporal module
class TemporalDecoderLayer(nn.Module):
    """One query attends to a clip's tokens, then an MLP (InternVideo's `Extractor`).

    Pre-norm: `ln_1` on the query, `ln_3` on the keys/values, `ln_2` before the MLP. The
    attention out-projection and the MLP's `c_proj` start at zero, so a fresh layer is the
    identity on the query.
    """

    def __init__(self, d_model: int, n_head: int, mlp_factor: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.n_head = n_head
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        d_mlp = round(mlp_factor * d_model)
        self.mlp = nn.Sequential(OrderedDict(
            c_fc=nn.Linear(d_model, d_mlp),
            gelu=QuickGELU(),
            dropout=nn.Dropout(dropout),
            c_proj=nn.Linear(d_mlp, d_model),
        ))
        self.ln_2 = LayerNorm(d_model)
        self.ln_3 = LayerNorm(d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.attn.in_proj_weight)
        nn.init.zeros_(self.attn.in_proj_bias)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)
        nn.init.xavier_uniform_(self.mlp.c_fc.weight)
        nn.init.zeros_(self.mlp.c_proj.weight)
        nn.init.zeros_(self.mlp.c_proj.bias)

    def cross_attention(self, query: torch.Tensor, tokens: torch.Tensor,
                        key_mask: torch.Tensor | None) -> torch.Tensor:
        """query [N, Q, D], tokens [N, S, D], key_mask [N, S] bool (True = attend) -> [N, Q, D]."""
        n, q_len, width = query.shape
        head_dim = width // self.n_head
        w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
        q = F.linear(query, w[:width], b[:width])
        k, v = F.linear(tokens, w[width:], b[width:]).chunk(2, dim=-1)
        q, k, v = (t.reshape(n, -1, self.n_head, head_dim).transpose(1, 2) for t in (q, k, v))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.attn.out_proj(out.transpose(1, 2).reshape(n, q_len, width))

    def forward(self, query: torch.Tensor, tokens: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        query = query + self.cross_attention(self.ln_1(query), self.ln_3(tokens), key_mask)
        return query + self.mlp(self.ln_2(query))


class EVLTransformer(nn.Module):
    """CLIP ViT blocks plus the global temporal module (`dpe`, `dec`, query, `balance`)."""

    def __init__(self, width: int, layers: int, heads: int, return_list: tuple[int, ...],
                 t_size: int = 8, mlp_factor: float = 4.0, mlp_dropout: float = 0.0):
        super().__init__()
        self.width = width
        self.layers = layers
        self.t_size = t_size
        self.return_list = tuple(return_list)
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        n_evl = len(self.return_list)
        self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.dpe = nn.ModuleList(
            nn.Conv3d(width, width, kernel_size=3, stride=1, padding=1, bias=True, groups=width)
            for _ in range(n_evl)
        )
        for conv in self.dpe:
            nn.init.zeros_(conv.bias)
        self.dec = nn.ModuleList(
            TemporalDecoderLayer(width, heads, mlp_factor=mlp_factor, dropout=mlp_dropout)
            for _ in range(n_evl)
        )
        self.balance = nn.Parameter(torch.zeros(width))
        self.grad_checkpointing = False

    def _run(self, fn, *args):
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def enhance(self, j: int, x: torch.Tensor, query: torch.Tensor, num_frames: int,
                frame_mask: torch.Tensor | None) -> torch.Tensor:
        """Position-enhance the patch tokens of block output x [N*T, L, D]; update the query."""
        nt, length, width = x.shape
        n, grid = nt // num_frames, math.isqrt(length - 1)
        tokens = x.reshape(n, num_frames, length, width)
        patches = tokens[:, :, 1:]
        conv_in = patches if frame_mask is None else patches * frame_mask[:, :, None, None].to(patches.dtype)
        conv_in = conv_in.permute(0, 3, 1, 2).reshape(n, width, num_frames, grid, grid)
        pos = self.dpe[j](conv_in).reshape(n, width, num_frames, length - 1).permute(0, 2, 3, 1)
        tokens = torch.cat([tokens[:, :, :1], patches + pos], dim=2).reshape(n, num_frames * length, width)
        key_mask = None if frame_mask is None else frame_mask.repeat_interleave(length, dim=1)
        return self.dec[j](query, tokens, key_mask)

    def forward(self, x: torch.Tensor, num_frames: int,
                frame_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N*T, L, D] (frame-major within each clip) -> (clip feature [N, D], frame CLS [N, T, D])."""
        nt, length, width = x.shape
        if nt % num_frames or math.isqrt(length - 1) ** 2 != length - 1:
            raise ValueError(f"tokens {tuple(x.shape)} do not split into {num_frames} frames of a square grid")
        n = nt // num_frames
        query = self.temporal_cls_token.to(x.dtype).expand(n, 1, width)
        return_at = {block: j for j, block in enumerate(self.return_list)}
        for i, block in enumerate(self.resblocks):
            x = self._run(block, x)
            if i in return_at:
                query = self._run(self.enhance, return_at[i], x, query, num_frames, frame_mask)
        frame_cls = x[:, 0].reshape(n, num_frames, width)
        if frame_mask is None:
            cls_mean = frame_cls.mean(dim=1)
        else:
            weights = frame_mask.to(frame_cls.dtype).unsqueeze(-1)
            cls_mean = (frame_cls * weights).sum(dim=1) / weights.sum(dim=1)
        gate = torch.sigmoid(self.balance).to(x.dtype)
        return (1 - gate) * query[:, 0] + gate * cls_mean, frame_cls


class EVLVisionTransformer(nn.Module):
    """Patch embedding ((1, p, p) Conv3d), embeddings, `ln_pre`, then `EVLTransformer`."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 return_list: tuple[int, ...], t_size: int = 8, mlp_factor: float = 4.0,
                 mlp_dropout: float = 0.0):
        super().__init__()
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.conv1 = nn.Conv3d(3, width, kernel_size=(1, patch_size, patch_size),
                               stride=(1, patch_size, patch_size), bias=False)
        scale = width ** -0.5
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = EVLTransformer(width, layers, heads, return_list, t_size=t_size,
                                          mlp_factor=mlp_factor, mlp_dropout=mlp_dropout)

    def forward(self, video: torch.Tensor,
                frame_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """video [N, 3, T, H, W] -> (clip feature [N, width], last-block frame CLS [N, T, width])."""
        x = self.conv1(video.to(self.conv1.weight.dtype))  # [N, width, T, g, g]
        n, width, num_frames = x.shape[:3]
        x = x.permute(0, 2, 3, 4, 1).reshape(n * num_frames, -1, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, width)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.transformer(self.ln_pre(x), num_frames, frame_mask)


# ----------------------------------------------------------------------------- the model
class InternVideoCLIP(TextTower):
    """InternVideo's CLIP: EVL video tower + CLIP's text tower, InternVideo's parameter names."""

    def __init__(self, config: EVLConfig):
        super().__init__()
        self.config = config
        self.visual = EVLVisionTransformer(
            input_resolution=config.image_resolution, patch_size=config.vision_patch_size,
            width=config.vision_width, layers=config.vision_layers, heads=config.vision_heads,
            return_list=config.resolved_return_list, t_size=config.t_size,
            mlp_factor=config.mlp_factor, mlp_dropout=config.mlp_dropout,
        )
        self.visual_ln_post = LayerNorm(config.vision_width)
        scale = config.vision_width ** -0.5
        self.visual_proj = nn.Parameter(scale * torch.randn(config.vision_width, config.embed_dim))
        self._build_text_tower(config)
        # A masked-language-modelling leftover of pretraining, unused in retrieval; kept so
        # that released checkpoints load strictly.
        self.text_mask_embedding = nn.Parameter(torch.empty(1, 1, config.transformer_width))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        super().initialize_parameters()
        nn.init.normal_(self.text_mask_embedding, std=0.02)

    def set_grad_checkpointing(self, vision: bool = True, text: bool = False) -> None:
        """Recompute ViT blocks (and the temporal module) in backward instead of storing them."""
        self.visual.transformer.grad_checkpointing = vision
        self.transformer.grad_checkpointing = text

    def project_video(self, features: torch.Tensor) -> torch.Tensor:
        return self.visual_ln_post(features) @ self.visual_proj

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor | None = None,
                     return_frames: bool = False):
        """video [B, T, 3, H, W] (+ optional mask [B, T]) -> one vector per clip [B, embed_dim].

        With `return_frames`, also the projected per-frame features [B, T, embed_dim]
        (last-block frame CLS tokens through `visual_ln_post` and `visual_proj`).
        """
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"encode_video expects [B, T, 3, H, W], got {tuple(video.shape)}")
        mask = _frame_mask(video_mask, video.shape[:2], video.device)
        clip_feat, frame_cls = self.visual(video.permute(0, 2, 1, 3, 4), mask)
        pooled = self.project_video(clip_feat)
        if return_frames:
            return pooled, self.project_video(frame_cls)
        return pooled

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (video x text, text x video), scaled by exp(logit_scale)."""
        video_feat = F.normalize(self.encode_video(video), dim=-1)
        text_feat = F.normalize(self.encode_text(text), dim=-1)
        logits = self.logit_scale.exp() * video_feat @ text_feat.t()
        return logits, logits.t()


def _frame_mask(video_mask: torch.Tensor | None, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
    """A bool [B, T] mask, or None when every frame is real (the fast, published path)."""
    if video_mask is None:
        return None
    if tuple(video_mask.shape) != tuple(shape):
        raise ValueError(f"video_mask shape {tuple(video_mask.shape)} does not match video {tuple(shape)}")
    mask = video_mask.to(device=device).bool()
    if bool(mask.all()):
        return None
    if not bool(mask.any(dim=1).all()):
        raise ValueError("video_mask has a clip without any real frame")
    return mask
