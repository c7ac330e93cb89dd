"""CLIP4Clip's small transformers: `transformerClip` (seqTransf) and the cross encoder (tightTransf).

Both reuse CLIP's residual attention block (same parameter names, so CLIP4Clip's
`transformerClip.resblocks.N.*` and `cross.transformer.resblocks.N.*` load as they are) with
the details of CLIP4Clip's `module_cross.py` that change numbers:

- its LayerNorms are the TF-style ones from `until_module.py`, eps 1e-12 (CLIP's are 1e-5),
  although the weights are copied from CLIP's text layers;
- padded positions are hidden by an *additive* -1e6 on the attention logits of the padded
  keys (not -inf), and there is no causal mask;
- the cross encoder adds position embeddings (no token-type embeddings, no LayerNorm),
  applies dropout 0.1, and pools with LayerNorm -> first token -> Linear -> QuickGELU.

Padded keys are hidden per sample in every head: the [N, L, L] mask reaches the heads in
the sample-major layout `nn.MultiheadAttention` reads (`repeat_interleave`), as in CLIP4Clip
since its fix of 2021-07-26 (issue #22, PR #24) and in InternVideo's copy. Only CLIP4Clip's
first release tiled it with `repeat(n_head, 1, 1)`, giving head h of sample b the mask of
sample `(b * n_head + h) % N`.
"""

from __future__ import annotations

import torch
from torch import nn

from modules.clip import LayerNorm, QuickGELU, ResidualAttentionBlock

TF_LAYER_NORM_EPS = 1e-12
MASK_VALUE = -1e6  # CLIP4Clip's additive value for padded keys


def tf_layer_norm(width: int) -> LayerNorm:
    """The LayerNorm of CLIP4Clip's until_module: eps 1e-12 inside the square root."""
    return LayerNorm(width, eps=TF_LAYER_NORM_EPS)


def key_padding_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[N, L] mask (1 = real) -> additive bias [N, 1, 1, L]: 0 for real keys, -1e6 for padded."""
    return ((1.0 - mask.to(dtype)) * MASK_VALUE)[:, None, None, :]


class CrossBlock(ResidualAttentionBlock):
    """CLIP's pre-norm block with CLIP4Clip's TF-style LayerNorms (eps 1e-12)."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__(d_model, n_head)
        self.ln_1 = tf_layer_norm(d_model)
        self.ln_2 = tf_layer_norm(d_model)


class MaskedTransformer(nn.Module):
    """`transformerClip` / `cross.transformer`: blocks over [N, L, D] with a key padding mask."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(CrossBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bias = key_padding_bias(mask, x.dtype)
        for block in self.resblocks:
            x = block(x, bias)
        return x


class CrossEmbeddings(nn.Module):
    def __init__(self, width: int, max_positions: int, dropout: float):
        super().__init__()
        self.position_embeddings = nn.Embedding(max_positions, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"cross encoder input of {length} positions exceeds its "
                             f"{self.position_embeddings.num_embeddings} position embeddings")
        return self.dropout(x + self.position_embeddings.weight[:length].to(x.dtype))


class CrossPooler(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ln_pool = tf_layer_norm(width)
        self.dense = nn.Linear(width, width)
        self.activation = QuickGELU()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(self.ln_pool(hidden)[:, 0]))


class CrossModel(nn.Module):
    """tightTransf's cross encoder over [text feature; frame features]."""

    def __init__(self, width: int, layers: int, heads: int, max_positions: int, dropout: float = 0.1):
        super().__init__()
        self.embeddings = CrossEmbeddings(width, max_positions, dropout)
        self.transformer = MaskedTransformer(width, layers, heads)
        self.pooler = CrossPooler(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, L, D], mask [N, L] -> (hidden [N, L, D], pooled [N, D])."""
        hidden = self.transformer(self.embeddings(x), mask)
        return hidden, self.pooler(hidden)


def init_bert_style(module: nn.Module, std: float = 0.02) -> None:
    """CLIP4Clip's `init_weights`, applied with `module.apply`: N(0, 0.02) Linear and
    Embedding weights, zero Linear biases, LayerNorm weight 1 and bias 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
