"""InternVideo's EVL video encoder, its checkpoint loading, mergeclip and freezing."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modules.clip import VisionTransformer
from modules.internvideo_checkpoint import (
    load_internvideo_model,
    merge_clip_weights,
    normalize_internvideo_keys,
    read_internvideo_checkpoint,
)
from modules.modeling import CLIP4Clip, RetrievalConfig, freeze_clip
from modules.video_encoder_evl import (
    EVLConfig,
    InternVideoCLIP,
    TemporalDecoderLayer,
    evl_config_from_state_dict,
)
from modules.weights import CheckpointError

# ----------------------------------------------------------------------------- written-down specs
# InternVideo1 Video-Text-Retrieval, modules/clip_evl/model.py (CLIP) with the backbone of
# evl_utils/clip_vit_only_global.py, keys as in its released checkpoints (after the loader's
# `clip.` stripping and visual.proj -> visual_proj, visual.ln_post -> visual_ln_post renaming).
L14 = dict(
    width=1024,
    layers=24,
    patch=14,
    grid=16,
    embed=768,
    text_width=768,
    text_layers=12,
    context=77,
    vocab=49408,
    n_dec=4,
)
TINY = dict(width=64, layers=3, patch=8, grid=4, embed=32, text_width=64, text_layers=2, context=16, vocab=100, n_dec=2)


def _block_spec(prefix: str, d: int) -> dict[str, tuple]:
    return {
        f"{prefix}.attn.in_proj_weight": (3 * d, d),
        f"{prefix}.attn.in_proj_bias": (3 * d,),
        f"{prefix}.attn.out_proj.weight": (d, d),
        f"{prefix}.attn.out_proj.bias": (d,),
        f"{prefix}.ln_1.weight": (d,),
        f"{prefix}.ln_1.bias": (d,),
        f"{prefix}.mlp.c_fc.weight": (4 * d, d),
        f"{prefix}.mlp.c_fc.bias": (4 * d,),
        f"{prefix}.mlp.c_proj.weight": (d, 4 * d),
        f"{prefix}.mlp.c_proj.bias": (d,),
        f"{prefix}.ln_2.weight": (d,),
        f"{prefix}.ln_2.bias": (d,),
    }


def _text_spec(s: dict) -> dict[str, tuple]:
    tw = s["text_width"]
    spec = {
        "token_embedding.weight": (s["vocab"], tw),
        "positional_embedding": (s["context"], tw),
        "ln_final.weight": (tw,),
        "ln_final.bias": (tw,),
        "text_projection": (tw, s["embed"]),
        "logit_scale": (),
    }
    for i in range(s["text_layers"]):
        spec.update(_block_spec(f"transformer.resblocks.{i}", tw))
    return spec


def _vit_spec(s: dict, conv_shape: tuple) -> dict[str, tuple]:
    w = s["width"]
    spec = {
        "visual.conv1.weight": conv_shape,
        "visual.class_embedding": (w,),
        "visual.positional_embedding": (s["grid"] ** 2 + 1, w),
        "visual.ln_pre.weight": (w,),
        "visual.ln_pre.bias": (w,),
    }
    for i in range(s["layers"]):
        spec.update(_block_spec(f"visual.transformer.resblocks.{i}", w))
    return spec


def internvideo_spec(s: dict) -> dict[str, tuple]:
    """Every key and shape of InternVideo's clip_evl model."""
    w = s["width"]
    spec = _vit_spec(s, (w, 3, 1, s["patch"], s["patch"]))
    spec["visual.transformer.temporal_cls_token"] = (1, 1, w)
    spec["visual.transformer.balance"] = (w,)
    for j in range(s["n_dec"]):
        spec[f"visual.transformer.dpe.{j}.weight"] = (w, 1, 3, 3, 3)
        spec[f"visual.transformer.dpe.{j}.bias"] = (w,)
        spec.update(_block_spec(f"visual.transformer.dec.{j}", w))
        spec[f"visual.transformer.dec.{j}.ln_3.weight"] = (w,)
        spec[f"visual.transformer.dec.{j}.ln_3.bias"] = (w,)
    spec.update(
        {
            "visual_ln_post.weight": (w,),
            "visual_ln_post.bias": (w,),
            "visual_proj": (w, s["embed"]),
            "text_mask_embedding": (1, 1, s["text_width"]),
        }
    )
    spec.update(_text_spec(s))
    return spec


def openai_clip_spec(s: dict) -> dict[str, tuple]:
    """OpenAI CLIP ViT keys (2D patch conv, visual.ln_post, visual.proj)."""
    w = s["width"]
    spec = _vit_spec(s, (w, 3, s["patch"], s["patch"]))
    spec.update({"visual.ln_post.weight": (w,), "visual.ln_post.bias": (w,), "visual.proj": (w, s["embed"])})
    spec.update(_text_spec(s))
    return spec


def config_of(s: dict, **kw) -> EVLConfig:
    return EVLConfig(
        embed_dim=s["embed"],
        image_resolution=s["patch"] * s["grid"],
        vision_layers=s["layers"],
        vision_width=s["width"],
        vision_patch_size=s["patch"],
        context_length=s["context"],
        vocab_size=s["vocab"],
        transformer_width=s["text_width"],
        transformer_heads=max(1, s["text_width"] // 64),
        transformer_layers=s["text_layers"],
        num_evl_layers=s["n_dec"],
        **kw,
    )


def random_state_dict(spec: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: 0.1 * torch.randn(shape, generator=gen) for k, shape in spec.items()}


def tiny_model(seed: int = 0, **kw) -> InternVideoCLIP:
    torch.manual_seed(seed)
    return InternVideoCLIP(config_of(TINY, **kw)).eval()


def randomize_(model: nn.Module, seed: int = 1) -> None:
    """Non-zero values everywhere (including the zero-initialised decoder outputs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
        for name, p in model.named_parameters():
            if name.endswith(
                ("ln_1.weight", "ln_2.weight", "ln_3.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")
            ):
                p.add_(1.0)


def clip_video(b: int = 2, t: int = 4, seed: int = 3) -> torch.Tensor:
    return torch.randn(b, t, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- key names
def test_l14_keys_and_shapes_match_internvideo():
    config = config_of(L14)
    assert config.resolved_return_list == (20, 21, 22, 23)
    with torch.device("meta"):
        model = InternVideoCLIP(config)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = internvideo_spec(L14)
    assert sorted(set(got) - set(expected)) == [] and sorted(set(expected) - set(got)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    # The sizes are read back from such a state dict.
    meta_sd = {k: torch.empty(shape, device="meta") for k, shape in expected.items()}
    assert evl_config_from_state_dict(meta_sd, t_size=12) == config_of(L14, t_size=12)


def test_b16_default_return_list():
    b16 = dict(L14, width=768, layers=12, patch=16, grid=14, embed=512, text_width=512)
    assert config_of(b16).resolved_return_list == (8, 9, 10, 11)


# ----------------------------------------------------------------------------- forward
def test_shapes_and_layout():
    model = tiny_model()
    video = clip_video()
    out, frames = model.encode_video(video, return_frames=True)
    assert out.shape == (2, 32) and frames.shape == (2, 4, 32)
    feat, frame_cls = model.visual(video.permute(0, 2, 1, 3, 4))
    torch.testing.assert_close(out, model.visual_ln_post(feat) @ model.visual_proj)
    torch.testing.assert_close(frames, model.visual_ln_post(frame_cls) @ model.visual_proj)
    ids = torch.randint(1, 50, (3, 9))
    ids[:, 6] = TINY["vocab"] - 1
    pooled, hidden = model.encode_text(ids, return_hidden=True)
    assert pooled.shape == (3, 32) and hidden.shape == (3, 9, 32)
    torch.testing.assert_close(pooled, hidden[:, 6])
    with pytest.raises(ValueError):
        model.encode_video(video.permute(0, 2, 1, 3, 4))  # [B, 3, T, H, W] is the internal layout
    with pytest.raises(ValueError):
        model.encode_text(torch.ones(1, TINY["context"] + 1, dtype=torch.long))


def _frame_cls_tokens(model: InternVideoCLIP, video: torch.Tensor) -> torch.Tensor:
    """Frame CLS tokens from the lead's plain CLIP ViT, loaded with the EVL backbone's weights."""
    vis = model.visual
    vit = VisionTransformer(32, TINY["patch"], TINY["width"], TINY["layers"], 1, TINY["embed"]).eval()
    sd = {
        k.removeprefix("visual."): v
        for k, v in model.state_dict().items()
        if k.startswith("visual.")
        and ".dec." not in k
        and ".dpe." not in k
        and not k.endswith(("temporal_cls_token", "balance"))
    }
    sd["conv1.weight"] = vis.conv1.weight[:, :, 0]
    sd["ln_post.weight"], sd["ln_post.bias"] = torch.ones(TINY["width"]), torch.zeros(TINY["width"])
    sd["proj"] = torch.eye(TINY["width"], TINY["embed"])
    vit.load_state_dict(sd)
    b, t = video.shape[:2]
    frames = video.reshape(b * t, 3, 32, 32)
    x = vit.conv1(frames).flatten(2).transpose(1, 2)
    x = torch.cat([vit.class_embedding.expand(b * t, 1, -1), x], dim=1) + vit.positional_embedding
    return vit.transformer(vit.ln_pre(x))[:, 0].reshape(b, t, -1)


def test_initial_output_is_gated_mean_of_frame_cls():
    model = tiny_model()
    with torch.no_grad():  # everything but the decoder's zero-initialised outputs random
        model.visual.transformer.temporal_cls_token.normal_()
        model.visual.transformer.balance.normal_()
        for conv in model.visual.transformer.dpe:
            conv.weight.normal_()
            conv.bias.normal_()
    video = clip_video()
    with torch.no_grad():
        out = model.encode_video(video)
        cls_mean = _frame_cls_tokens(model, video).mean(dim=1)
        gate = torch.sigmoid(model.visual.transformer.balance)
        token = model.visual.transformer.temporal_cls_token[0, 0]
        expected = (
            F.layer_norm(
                (1 - gate) * token + gate * cls_mean,
                (TINY["width"],),
                model.visual_ln_post.weight,
                model.visual_ln_post.bias,
            )
            @ model.visual_proj
        )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_decoder_attention_equals_multihead_attention():
    torch.manual_seed(0)
    layer = TemporalDecoderLayer(64, 4).eval()
    randomize_(layer)
    q, kv = torch.randn(3, 1, 64), torch.randn(3, 10, 64)
    ours = layer.cross_attention(q, kv, None)
    ref = layer.attn(q.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1), need_weights=False)[0]
    torch.testing.assert_close(ours, ref.transpose(0, 1), atol=1e-5, rtol=1e-4)


def _reference_forward(model: InternVideoCLIP, video: torch.Tensor) -> torch.Tensor:
    """The published forward, sequence-first ([L, N*T, C]), written out step by step."""
    vis, tr = model.visual, model.visual.transformer
    x = F.conv3d(video.permute(0, 2, 1, 3, 4), vis.conv1.weight, stride=vis.conv1.stride)
    n, c, t, h, w = x.shape
    x = x.permute(0, 2, 3, 4, 1).reshape(n * t, h * w, c)
    x = torch.cat([vis.class_embedding + torch.zeros(n * t, 1, c), x], dim=1) + vis.positional_embedding
    x = vis.ln_pre(x).permute(1, 0, 2)  # [L, NT, C]
    length = x.shape[0]
    cls_token = tr.temporal_cls_token.repeat(1, n, 1)  # [1, N, C]
    j = -1
    for i, block in enumerate(tr.resblocks):
        x = block(x.transpose(0, 1)).transpose(0, 1)
        if i in tr.return_list:
            j += 1
            tmp = x.reshape(length, n, t, c)
            feats = tmp[1:].permute(1, 3, 2, 0).reshape(n, c, t, h, w)
            feats = tr.dpe[j](feats).reshape(n, c, t, length - 1).permute(3, 0, 2, 1)
            tmp = torch.cat([tmp[:1], tmp[1:] + feats], dim=0).permute(2, 0, 1, 3).flatten(0, 1)
            dec = tr.dec[j]
            y = dec.ln_3(tmp)
            attn = dec.attn(dec.ln_1(cls_token), y, y, need_weights=False)[0]
            cls_token = cls_token + attn
            cls_token = cls_token + dec.mlp(dec.ln_2(cls_token))
    gate = torch.sigmoid(tr.balance)
    feats = (1 - gate) * cls_token[0] + gate * x.reshape(length, n, t, c)[0].mean(1)
    return model.visual_ln_post(feats) @ model.visual_proj


def test_forward_matches_published_layout_with_random_weights():
    model = tiny_model()
    randomize_(model)
    video = clip_video(t=3)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(video), _reference_forward(model, video), atol=1e-4, rtol=1e-4)


def test_masked_frames_equal_running_real_frames_alone():
    model = tiny_model()
    randomize_(model)
    video = clip_video(b=2, t=5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        masked = model.encode_video(video, mask)
        short = model.encode_video(video[:1, :3])
        full = model.encode_video(video[1:])
        unmasked = model.encode_video(video)
    torch.testing.assert_close(masked[0], short[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked[1], full[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(unmasked[0], masked[0], atol=1e-3)
    with torch.no_grad():  # an all-ones mask is the unmasked path
        torch.testing.assert_close(model.encode_video(video, torch.ones(2, 5)), unmasked)
    with pytest.raises(ValueError):
        model.encode_video(video, torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]))


def test_grad_checkpointing_same_values_and_grads():
    model = tiny_model()
    randomize_(model)
    video = clip_video()

    def run():
        model.zero_grad()
        out = model.encode_video(video)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_out, plain_grads = run()
    model.set_grad_checkpointing(True)
    ckpt_out, ckpt_grads = run()
    torch.testing.assert_close(ckpt_out, plain_out)
    assert set(ckpt_grads) == set(plain_grads) and "visual.transformer.dec.0.mlp.c_fc.weight" in plain_grads
    for name in plain_grads:
        torch.testing.assert_close(ckpt_grads[name], plain_grads[name], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- checkpoints
def _save_lightning(path, state_dict, prefix="clip.", openai_names=True):
    sd = dict(state_dict)
    if openai_names:  # the released files keep CLIP's names for these three
        sd["visual.proj"] = sd.pop("visual_proj")
        sd["visual.ln_post.weight"] = sd.pop("visual_ln_post.weight")
        sd["visual.ln_post.bias"] = sd.pop("visual_ln_post.bias")
    torch.save(
        {
            "state_dict": {prefix + k: v for k, v in sd.items()},
            "epoch": 3,
            "hyper_parameters": argparse.Namespace(lr=1e-4),
        },
        path,
    )


@pytest.mark.parametrize("prefix", ["clip.", "module.clip.", ""])
def test_random_internvideo_checkpoint_loads_strictly(tmp_path, prefix):
    expected = random_state_dict(internvideo_spec(TINY))
    path = tmp_path / "internvideo.ckpt"
    _save_lightning(path, expected, prefix=prefix)
    model = load_internvideo_model(path, t_size=4)
    assert model.config == config_of(TINY, t_size=4)
    got = model.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value)


def test_2d_patch_conv_is_inflated(tmp_path):
    sd = random_state_dict(internvideo_spec(TINY))
    conv3d = sd["visual.conv1.weight"]
    sd["visual.conv1.weight"] = conv3d[:, :, 0].clone()
    path = tmp_path / "iv.ckpt"
    _save_lightning(path, sd)
    model = load_internvideo_model(path, t_size=4)
    torch.testing.assert_close(model.visual.conv1.weight, conv3d)


def test_strict_load_lists_every_problem(tmp_path):
    sd = random_state_dict(internvideo_spec(TINY))
    del sd["visual.transformer.balance"]
    sd["visual.transformer.extra"] = torch.zeros(3)
    sd["visual.transformer.temporal_cls_token"] = torch.zeros(1, 2, TINY["width"])
    path = tmp_path / "bad.ckpt"
    _save_lightning(path, sd)
    with pytest.raises(CheckpointError) as err:
        load_internvideo_model(path, t_size=4)
    message = str(err.value)
    for needle in (
        "bad.ckpt",
        "missing",
        "visual.transformer.balance",
        "unexpected",
        "visual.transformer.extra",
        "wrong shapes",
        "temporal_cls_token",
    ):
        assert needle in message
    with pytest.raises(FileNotFoundError):
        load_internvideo_model(tmp_path / "absent.ckpt", t_size=4)


def test_normalize_keys():
    sd = {
        "module.clip.visual.proj": torch.zeros(2, 2),
        "clip.visual.ln_post.weight": torch.ones(2),
        "visual.ln_post.bias": torch.zeros(2),
        "clip.input_resolution": torch.tensor(224),
        "clip.logit_scale": torch.tensor(1.0, dtype=torch.float16),
    }
    out = normalize_internvideo_keys(sd)
    assert set(out) == {"visual_proj", "visual_ln_post.weight", "visual_ln_post.bias", "logit_scale"}
    assert out["logit_scale"].dtype == torch.float32


def test_mergeclip_arithmetic(tmp_path):
    iv = random_state_dict(internvideo_spec(TINY), seed=1)
    clip = random_state_dict(openai_clip_spec(TINY), seed=2)
    clip["input_resolution"] = torch.tensor(32)
    w = 0.25
    path = tmp_path / "iv.ckpt"
    _save_lightning(path, iv)
    model = load_internvideo_model(path, clip_state_dict=clip, t_size=4, mergeclip=True, mergeweight=w)
    got = model.state_dict()
    kept = {"visual_proj", "visual_ln_post.weight", "visual_ln_post.bias", "text_mask_embedding"}
    for key, value in iv.items():
        evl_only = ".dpe." in key or ".dec." in key or key.endswith(("temporal_cls_token", "balance"))
        if key in kept or evl_only:
            torch.testing.assert_close(got[key], value, msg=key)
        elif key == "visual.conv1.weight":
            torch.testing.assert_close(got[key], w * clip[key].unsqueeze(2) + (1 - w) * value)
        else:
            torch.testing.assert_close(got[key], w * clip[key] + (1 - w) * value, msg=key)
    _, merged = merge_clip_weights(normalize_internvideo_keys(iv), clip, w)
    assert set(merged) == set(iv) - kept - {
        k for k in iv if ".dpe." in k or ".dec." in k or k.endswith(("temporal_cls_token", "balance"))
    }
    with pytest.raises(ValueError):
        merge_clip_weights(iv, clip, 1.5)
    wrong = dict(clip, positional_embedding=torch.zeros(7, TINY["text_width"]))
    with pytest.raises(CheckpointError, match="positional_embedding"):
        merge_clip_weights(normalize_internvideo_keys(iv), wrong, w)


def test_start_from_clip_alone():
    clip = random_state_dict(openai_clip_spec(TINY), seed=2)
    model = load_internvideo_model(None, clip_state_dict=clip, t_size=4).eval()
    torch.testing.assert_close(model.visual_proj, clip["visual.proj"])
    torch.testing.assert_close(model.visual_ln_post.weight, clip["visual.ln_post.weight"])
    torch.testing.assert_close(model.visual.conv1.weight[:, :, 0], clip["visual.conv1.weight"])
    assert torch.count_nonzero(model.visual.transformer.dec[0].attn.out_proj.weight) == 0
    with pytest.raises(ValueError):
        load_internvideo_model(None, clip_state_dict=None)


def test_checkpoint_reader_never_runs_pickled_code(tmp_path):
    path = tmp_path / "ck.ckpt"
    sd = random_state_dict(internvideo_spec(TINY))
    torch.save({"state_dict": {"clip." + k: v for k, v in sd.items()}, "callbacks": _Exploding()}, path)
    out = read_internvideo_checkpoint(path)
    assert set(out) == set(sd)


class _Exploding:
    def __reduce__(self):
        return (math.factorial, (-1,))  # raises ValueError if it were ever called


# ----------------------------------------------------------------------------- freezing
def _trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_rules_symmetric():
    model = tiny_model()
    assert freeze_clip(model, -1, "symmetric") == [] and _trainable(model) == {n for n, _ in model.named_parameters()}
    frozen = set(freeze_clip(model, 1, "symmetric"))
    embeddings = {
        "token_embedding.weight",
        "positional_embedding",
        "text_mask_embedding",
        "visual.conv1.weight",
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.ln_pre.weight",
        "visual.ln_pre.bias",
    }
    assert embeddings <= frozen
    assert {n for n in frozen if "resblocks" in n} == {n for n, _ in model.named_parameters() if ".resblocks.0." in n}
    trainable = _trainable(model)
    for name in (
        "visual_proj",
        "visual_ln_post.weight",
        "text_projection",
        "ln_final.weight",
        "logit_scale",
        "visual.transformer.temporal_cls_token",
        "visual.transformer.balance",
        "visual.transformer.dpe.0.weight",
        "visual.transformer.dec.1.attn.in_proj_weight",
        "transformer.resblocks.1.attn.in_proj_weight",
        "visual.transformer.resblocks.2.ln_1.weight",
    ):
        assert name in trainable, name
    with pytest.raises(ValueError):
        freeze_clip(model, -2)


def test_freeze_through_the_retrieval_model():
    wrapper = CLIP4Clip(RetrievalConfig(freeze_layer_num=-1, freeze_rule="symmetric"), tiny_model())
    frozen = wrapper.freeze_clip_layers(0)
    assert "clip.visual.conv1.weight" in frozen and "clip.token_embedding.weight" in frozen
    assert not any("resblocks" in n or n.startswith("head") for n in frozen)


def test_config_validation():
    with pytest.raises(ValueError):
        config_of(TINY, return_list=(0, 5))
    with pytest.raises(ValueError):
        config_of(TINY, return_list=(1, 1))
    assert isinstance(config_of(TINY), EVLConfig)
