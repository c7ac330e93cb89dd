"""CLIP's two towers, built from a checkpoint's shapes, with OpenAI's parameter names.

One code path serves ViT-B/32, ViT-B/16, ViT-L/14 and ViT-L/14@336px: every size is read
off the state dict (`config_from_state_dict`). Tensors are batch-first ([N, L, D]) and
attention runs through `F.scaled_dot_product_attention` on the weights of an
`nn.MultiheadAttention`, so parameter names stay OpenAI's (`attn.in_proj_weight`, ...)
while the fused kernels do the work.

Loading: `resolve_clip_checkpoint` finds (or downloads, checking the SHA-256 that is part
of OpenAI's address) a released file; `modules.weights.load_clip_state_dict` reads it as
fp32; `build_clip` builds the model and loads it strictly. The text tower (`TextTower`) is
shared with InternVideo's model, which keeps its parameter names.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from modules.weights import CheckpointError, inflate_patch_conv, load_state_dict_strict, sha256_of, without_metadata

logger = logging.getLogger(__name__)

_OPENAI = "https://openaipublic.azureedge.net/clip/models"
CLIP_URLS = {
    "ViT-B/32": f"{_OPENAI}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": f"{_OPENAI}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": f"{_OPENAI}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": f"{_OPENAI}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
DEFAULT_CACHE_DIR = "~/.cache/clip"


# ----------------------------------------------------------------------------- layers
class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (as OpenAI's CLIP does).

    The affine parameters are upcast too: with fp16/bf16 weights (a `.half()` model, an
    OpenAI archive used as is) the CPU kernel refuses fp32 input with low-precision weights.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(d_model, d_model * 4),
                gelu=QuickGELU(),
                c_proj=nn.Linear(d_model * 4, d_model),
            )
        )
        self.ln_2 = LayerNorm(d_model)

    def attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                  is_causal: bool = False) -> torch.Tensor:
        n, length, width = x.shape
        qkv = F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.n_head, width // self.n_head).permute(2, 0, 3, 1, 4)
        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype) if attn_mask.is_floating_point() else attn_mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.attn.out_proj(out.transpose(1, 2).reshape(n, length, width))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x), attn_mask, is_causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks over batch-first tokens [N, L, D]."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, attn_mask, is_causal, use_reentrant=False)
            else:
                x = block(x, attn_mask, is_causal)
        return x


# ----------------------------------------------------------------------------- towers
class VisionTransformer(nn.Module):
    """CLIP's image tower; `linear_patch='3d'` adds CLIP4Clip's temporal patch conv (conv2)."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int,
                 heads: int, output_dim: int, linear_patch: str = "2d"):
        super().__init__()
        if linear_patch not in ("2d", "3d"):
            raise ValueError(f"linear_patch must be '2d' or '3d', got {linear_patch!r}")
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.linear_patch = linear_patch
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        if linear_patch == "3d":
            self.conv2 = nn.Conv3d(3, width, kernel_size=(3, patch_size, patch_size),
                                   stride=(1, patch_size, patch_size), padding=(1, 0, 0), bias=False)
        scale = width ** -0.5
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def patchify(self, x: torch.Tensor, video_frame: int = -1) -> torch.Tensor:
        """[N, 3, H, W] -> patch tokens [N, grid*grid, width]."""
        if self.linear_patch == "3d":
            if video_frame <= 0:
                raise ValueError("linear_patch='3d' needs video_frame, the number of frames per video")
            _, channels, height, width = x.shape
            clips = x.reshape(-1, video_frame, channels, height, width).permute(0, 2, 1, 3, 4)
            # conv2 is a Conv3d, which fp16 weights (`convert_weights_to_fp16`) leave in fp32
            x = self.conv2(clips.to(self.conv2.weight.dtype)).to(x.dtype).permute(0, 2, 1, 3, 4)  # [B, T, width, g, g]
            x = x.reshape(-1, *x.shape[2:])
        else:
            x = self.conv1(x)
        return x.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, video_frame: int = -1) -> torch.Tensor:
        x = self.patchify(x.to(self.conv1.weight.dtype), video_frame)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0, :]) @ self.proj


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int

    @property
    def vision_heads(self) -> int:
        return max(1, self.vision_width // 64)


class TextTower(nn.Module):
    """CLIP's text tower and `logit_scale`, held as attributes of the model itself (OpenAI's
    names: `transformer.*`, `token_embedding`, `positional_embedding`, `ln_final`,
    `text_projection`). CLIP and InternVideo's model build their `visual` first and then call
    `_build_text_tower`, so parameters are created (and drawn) in OpenAI's order."""

    visual: nn.Module

    def _build_text_tower(self, config: CLIPConfig) -> None:
        self.context_length = config.context_length
        self.transformer = Transformer(config.transformer_width, config.transformer_layers,
                                       config.transformer_heads)
        self.vocab_size = config.vocab_size
        self.token_embedding = nn.Embedding(config.vocab_size, config.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.transformer_width))
        self.ln_final = LayerNorm(config.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(config.transformer_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation; it matters only for models trained from scratch."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_text(self, text: torch.Tensor, return_hidden: bool = False, project_hidden: bool = True):
        """Token ids [N, L] -> [N, embed_dim], the projected state at the end token.

        The end token has the largest id (49407), so `argmax` finds it. With
        `return_hidden`, also returns every token's projected state [N, L, embed_dim]
        (the per-token features of token-wise interaction; with `project_hidden=False` the
        `ln_final` states before `text_projection`, what InternVideo's encoder returned). The
        attention is causal, so padding after the end token never changes the result.
        """
        length = text.shape[1]
        if length > self.context_length:
            raise ValueError(f"text length {length} exceeds the context length {self.context_length}")
        x = self.token_embedding(text).to(self.dtype) + self.positional_embedding[:length].to(self.dtype)
        x = self.ln_final(self.transformer(x, is_causal=True))
        eot = text.argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
        if return_hidden:
            return pooled, (x @ self.text_projection if project_hidden else x)
        return pooled


class CLIP(TextTower):
    def __init__(self, config: CLIPConfig, linear_patch: str = "2d"):
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(
            input_resolution=config.image_resolution,
            patch_size=config.vision_patch_size,
            width=config.vision_width,
            layers=config.vision_layers,
            heads=config.vision_heads,
            output_dim=config.embed_dim,
            linear_patch=linear_patch,
        )
        self._build_text_tower(config)
        self.initialize_parameters()

    def encode_image(self, image: torch.Tensor, video_frame: int = -1) -> torch.Tensor:
        """[N, 3, H, W] -> [N, embed_dim] (projected CLS token)."""
        return self.visual(image, video_frame=video_frame)


# ----------------------------------------------------------------------------- fp16 weights
def convert_weights_to_fp16(model: nn.Module) -> list[str]:
    """Cast CLIP's matrices to fp16 in place, as OpenAI's `convert_weights` does and as
    CLIP4Clip and InternVideo's stock tower train them: weights and biases of Conv1d/Conv2d/
    Linear layers, the attention in/out projections, and the `text_projection` / `proj`
    parameters. Embeddings, LayerNorms, `logit_scale` and Conv3d (CLIP4Clip's conv2) stay
    fp32. Returns the names of the parameters cast (relative to `model`)."""
    cast: list[str] = []

    def to_half(prefix: str, param: torch.Tensor | None, name: str) -> None:
        if param is not None and param.dtype != torch.float16:
            param.data = param.data.half()
            cast.append(prefix + name)

    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            to_half(prefix, module.weight, "weight")
            to_half(prefix, module.bias, "bias")
        if isinstance(module, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                         "bias_k", "bias_v"):
                to_half(prefix, getattr(module, attr, None), attr)
        for attr in ("text_projection", "proj"):
            value = getattr(module, attr, None)
            if isinstance(value, nn.Parameter):
                to_half(prefix, value, attr)
    return cast


# ----------------------------------------------------------------------------- building
def count_blocks(state_dict: dict, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in state_dict if k.startswith(prefix)}
    return len(indices)


def config_from_state_dict(state_dict: dict) -> CLIPConfig:
    """Read every size of a ViT CLIP off its OpenAI-named state dict."""
    if "visual.proj" not in state_dict:
        raise CheckpointError("not a ViT CLIP state dict: 'visual.proj' is missing "
                              "(ResNet CLIP models are not supported by the video model)")
    conv1 = state_dict["visual.conv1.weight"]
    vision_width, patch = conv1.shape[0], conv1.shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    width = state_dict["ln_final.weight"].shape[0]
    return CLIPConfig(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=patch * grid,
        vision_layers=count_blocks(state_dict, "visual.transformer.resblocks."),
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=width,
        transformer_heads=max(1, width // 64),
        transformer_layers=count_blocks(state_dict, "transformer.resblocks."),
    )


def build_clip(state_dict: dict, linear_patch: str = "2d", source: str = "CLIP state dict") -> CLIP:
    """Build CLIP from an OpenAI-named state dict and load it strictly (fp32)."""
    state_dict = without_metadata(state_dict)
    try:
        config = config_from_state_dict(state_dict)
    except KeyError as err:
        raise CheckpointError(f"{source}: missing key {err} needed to infer the CLIP architecture") from None
    # Every tensor comes from the (strict) load, so skip the random initialisation: build
    # on the meta device and allocate uninitialised storage (3x faster for ViT-B/32).
    with torch.device("meta"):
        model = CLIP(config, linear_patch=linear_patch)
    model = model.to_empty(device="cpu")
    unloaded = {n for n, _ in model.named_buffers()} - set(model.state_dict())
    assert not unloaded, f"non-persistent buffers {unloaded} would stay uninitialised after to_empty"
    if linear_patch == "3d" and "visual.conv2.weight" not in state_dict:
        state_dict["visual.conv2.weight"] = inflate_patch_conv(state_dict["visual.conv1.weight"])
    load_state_dict_strict(model, state_dict, source=source)
    return model.float()


# ----------------------------------------------------------------------------- released files
class CLIPDownloadError(RuntimeError):
    pass


def download_with_sha256(url: str, dest: Path, expected_sha256: str, timeout: float = 60.0) -> Path:
    """Stream `url` to `dest` through a temporary file; keep it only if the SHA-256 matches."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != expected_sha256:
            raise CLIPDownloadError(f"downloaded {url} but its SHA-256 is {digest.hexdigest()}, "
                                    f"expected {expected_sha256}; the file was discarded")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def resolve_clip_checkpoint(name_or_path: str, cache_dir: str | os.PathLike | None = None,
                            urls: dict[str, str] = CLIP_URLS) -> Path:
    """A path to an existing file, or a released name (`ViT-B/32`) found in the cache folder
    or downloaded into it (checking the SHA-256 in OpenAI's address)."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    if name_or_path not in urls:
        raise FileNotFoundError(f"--pretrained_clip_name {name_or_path!r} is neither an existing file "
                                f"nor one of {', '.join(urls)}")
    url = urls[name_or_path]
    filename, expected = url.rsplit("/", 1)[-1], url.rsplit("/", 2)[-2]
    cache = Path(cache_dir or os.environ.get("CLIP_CACHE_DIR") or DEFAULT_CACHE_DIR).expanduser()
    for folder in (Path(__file__).parent, cache):  # CLIP4Clip users drop files into modules/
        if (folder / filename).is_file():
            if sha256_of(folder / filename) == expected:
                return folder / filename
            logger.warning("%s exists but its SHA-256 is not %s; downloading again", folder / filename, expected)
    logger.info("downloading %s to %s", url, cache / filename)
    try:
        return download_with_sha256(url, cache / filename, expected)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise CLIPDownloadError(
            f"could not download CLIP {name_or_path} from {url} ({err}). Without internet, put "
            f"{filename} (SHA-256 {expected}) into {cache} (or set CLIP_CACHE_DIR), or pass the "
            f"file's path to --pretrained_clip_name") from err
