"""Issue 10, model side: the published behaviour is the default, ours one flag away.

Each oracle below is written from the published code (CLIP4Clip `main_task_retrieval.py`,
InternVideo `modules/modeling.py`, openai/CLIP `convert_weights`), not from ours.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import main_task_retrieval
from engine.builders import model_spec_from_args
from modules import cdcr as cdcr_module
from modules.clip import CLIP, CLIPConfig, convert_weights_to_fp16
from modules.factory import CLIPSource, InternVideoSpec, ModelSpec, create_model, resolve_clip_weights
from modules.internvideo_checkpoint import load_internvideo_model
from modules.modeling import CLIP4Clip, RetrievalConfig
from modules.optimization import build_optimizer
from modules.video_encoder_evl import InternVideoCLIP, evl_config_from_clip
from modules.weights import CheckpointError, load_model_weights, write_model_weights
from tests.tiny_clip import random_captions, random_video

TWELVE_LAYERS = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=12, vision_width=64, vision_patch_size=16,
                           context_length=16, vocab_size=49408, transformer_width=32, transformer_heads=1,
                           transformer_layers=12)
SMALL = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
             context_length=16, vocab_size=49408, transformer_width=32, transformer_heads=1, transformer_layers=2)


def _trainable_clip(model: CLIP4Clip) -> set[str]:
    return {n.removeprefix("clip.") for n, p in model.named_parameters() if p.requires_grad and n.startswith("clip.")}


def _evl(config: CLIPConfig = TWELVE_LAYERS, seed: int = 0, **kw) -> InternVideoCLIP:
    torch.manual_seed(seed)
    return InternVideoCLIP(evl_config_from_clip(config, t_size=3, **kw))


# ----------------------------------------------------------------------------- item 2: freezing
def published_rule_frozen(name: str, freeze_layer_num: int, linear_patch: str) -> bool:
    """CLIP4Clip's loop body (with `str.find` as there) plus InternVideo's `.dpe.`/`.dec.` exception."""
    if name.find("ln_final.") == 0 or name.find("text_projection") == 0 or name.find("logit_scale") == 0 \
            or name.find("visual.ln_post.") == 0 or name.find("visual.proj") == 0:
        return False
    elif name.find("visual.transformer.resblocks.") == 0 or name.find("transformer.resblocks.") == 0:
        if int(name.split(".resblocks.")[1].split(".")[0]) >= freeze_layer_num:
            return False
    if name.find(".dpe.") > -1 or name.find(".dec.") > -1:
        return False
    if linear_patch == "3d" and name.find("conv2."):
        return False
    return True


@pytest.mark.parametrize("evl", [False, True], ids=["clip", "internvideo"])
@pytest.mark.parametrize("n", [0, 6, 12])
def test_published_freeze_rule_equals_the_original(evl, n):
    torch.manual_seed(0)
    clip = _evl() if evl else CLIP(TWELVE_LAYERS)
    names = [name for name, _ in clip.named_parameters()]
    model = CLIP4Clip(RetrievalConfig(freeze_layer_num=n), clip)
    assert _trainable_clip(model) == {name for name in names if not published_rule_frozen(name, n, "2d")}
    if evl:  # the four groups the issue names are frozen by the published rule
        frozen = set(names) - _trainable_clip(model)
        assert {"visual_proj", "visual_ln_post.weight", "visual_ln_post.bias",
                "visual.transformer.temporal_cls_token", "visual.transformer.balance"} <= frozen
        assert "text_projection" not in frozen and not any(".dec." in f or ".dpe." in f for f in frozen)


def test_published_freeze_rule_with_3d_freezes_nothing_but_the_unused_conv1():
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(**SMALL), linear_patch="3d")
    model = CLIP4Clip(RetrievalConfig(freeze_layer_num=1, linear_patch="3d"), clip)
    names = {name for name, _ in clip.named_parameters()}
    assert all(not published_rule_frozen(name, 1, "3d") for name in names)
    assert _trainable_clip(model) == names - {"visual.conv1.weight"}  # conv1 is unused with conv2


def test_symmetric_rule_trains_the_projections():
    model = CLIP4Clip(RetrievalConfig(freeze_layer_num=6, freeze_rule="symmetric"), _evl())
    trainable = _trainable_clip(model)
    assert {"visual_proj", "visual_ln_post.weight", "visual.transformer.temporal_cls_token",
            "visual.transformer.balance", "text_projection"} <= trainable
    assert "visual.transformer.resblocks.5.ln_1.weight" not in trainable
    assert "visual.transformer.resblocks.6.ln_1.weight" in trainable


# ----------------------------------------------------------------------------- the command line
def _args(*extra: str):
    return main_task_retrieval.get_args(["--do_eval", "--output_dir", "unused", *extra])


def test_protocol_flags_default_to_published_and_reach_the_spec():
    args = _args("--clip_evl", "--max_words", "77")
    spec = model_spec_from_args(args)
    head = spec.head
    assert (head.freeze_rule, head.evl_ignore_frame_mask, head.evl_tokens, head.cdcr) == ("published", True,
                                                                                         "published", 0)
    assert spec.internvideo.mlp_dropout == 0.0 and spec.clip_weights == "fp32"
    improved = _args("--clip_evl", "--max_words", "77", "--freeze_rule", "symmetric", "--evl_mlp_dropout", "0.5",
                     "--evl_ignore_frame_mask", "false", "--evl_tokens", "frames", "--interaction", "ti",
                     "--cdcr", "2")
    spec = model_spec_from_args(improved)
    assert (spec.head.freeze_rule, spec.head.evl_ignore_frame_mask, spec.head.evl_tokens, spec.head.cdcr) == (
        "symmetric", False, "frames", 2)
    assert spec.internvideo.mlp_dropout == 0.5
    assert model_spec_from_args(_args("--clip_weights", "fp16", "--device", "cpu")).clip_weights == "fp16"
    assert model_spec_from_args(_args("--device", "cpu")).clip_weights == "fp32"  # auto on CPU


@pytest.mark.parametrize("argv", [["--cdcr", "1"], ["--cdcr", "3", "--interaction", "ti"],
                                  ["--clip_weights", "fp16", "--clip_evl", "--max_words", "77"],
                                  ["--clip_weights", "fp16", "--precision", "fp16"]])
def test_protocol_flag_conflicts_are_errors(argv):
    with pytest.raises(SystemExit):
        _args(*argv)


def test_auto_clip_weights_is_published_where_the_published_code_ran():
    assert resolve_clip_weights("auto", clip_evl=False, device_type="cuda") == "fp16"
    assert resolve_clip_weights("auto", clip_evl=True, device_type="cuda") == "fp32"
    assert resolve_clip_weights("auto", clip_evl=False, device_type="cpu") == "fp32"
    assert resolve_clip_weights("auto", clip_evl=False, device_type="cuda", precision="bf16") == "fp32"
    assert resolve_clip_weights("fp32", clip_evl=False, device_type="cuda") == "fp32"


# ----------------------------------------------------------------------------- item 3: decoder dropout
def _dropouts(model: nn.Module) -> list[float]:
    return [m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout) and ".dec." in name]


def test_evl_decoder_dropout_is_published_zero_and_configurable():
    spec = ModelSpec(clip=CLIPSource(config=SMALL), head=RetrievalConfig(), internvideo=InternVideoSpec(t_size=2))
    torch.manual_seed(0)
    model = create_model(spec)
    assert _dropouts(model) and set(_dropouts(model)) == {0.0}
    torch.manual_seed(0)
    model_05 = create_model(ModelSpec(clip=spec.clip, head=spec.head,
                                      internvideo=InternVideoSpec(t_size=2, mlp_dropout=0.5)))
    assert set(_dropouts(model_05)) == {0.5}


# ----------------------------------------------------------------------------- item 5: fp16 weights
def openai_fp16_names(model: nn.Module) -> set[str]:
    """openai/CLIP `convert_weights`: Conv1d/Conv2d/Linear weight+bias, MHA projections,
    `text_projection` and `proj` attributes."""
    names = set()
    for module_name, module in model.named_modules():
        prefix = module_name + "." if module_name else ""
        if type(module) in (nn.Conv1d, nn.Conv2d) or isinstance(module, nn.Linear):
            names |= {prefix + "weight"} | ({prefix + "bias"} if module.bias is not None else set())
        if isinstance(module, nn.MultiheadAttention):
            names |= {prefix + a for a in ("in_proj_weight", "in_proj_bias") if getattr(module, a) is not None}
        names |= {prefix + a for a in ("text_projection", "proj") if isinstance(getattr(module, a, None), nn.Parameter)}
    return names


def test_convert_weights_to_fp16_casts_what_openai_casts():
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(**SMALL), linear_patch="3d")
    cast = set(convert_weights_to_fp16(clip))
    expected = openai_fp16_names(clip)
    assert cast == expected
    dtypes = {name: p.dtype for name, p in clip.named_parameters()}
    assert all(dtypes[n] == torch.float16 for n in expected)
    assert all(dtypes[n] == torch.float32 for n in set(dtypes) - expected)
    assert dtypes["visual.conv2.weight"] == torch.float32 and dtypes["logit_scale"] == torch.float32


@pytest.mark.parametrize("sim_header", ["meanP", "seqTransf"])
def test_fp16_clip_weights_train_encode_save_and_load(tmp_path, sim_header):
    head = RetrievalConfig(sim_header=sim_header, cross_num_hidden_layers=1, freeze_layer_num=0)
    spec = ModelSpec(clip=CLIPSource(config=SMALL), head=head, clip_weights="fp16")
    torch.manual_seed(0)
    model = create_model(spec)
    assert model.clip.visual.proj.dtype == torch.float16 and model.clip.token_embedding.weight.dtype == torch.float32
    gen = torch.Generator().manual_seed(1)
    ids, ids_mask = random_captions(gen, [2, 4], 8)
    video, video_mask = random_video(gen, [2, 3], 3)
    optimizer, scheduler = build_optimizer(model, lr=1e-3, coef_lr=1.0, total_steps=4, warmup_proportion=0.0)
    before = model.clip.visual.proj.detach().clone()
    model.train()
    loss = model(ids, ids_mask, video, video_mask)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    assert model.clip.visual.proj.dtype == torch.float16 and not torch.equal(model.clip.visual.proj, before)
    model.eval()
    with torch.no_grad():
        sim = model.similarity(model.encode_text(ids, ids_mask), model.encode_video(video, video_mask))
    assert sim.dtype == torch.float32 and torch.isfinite(sim).all()
    write_model_weights(model, tmp_path / "model.safetensors")
    torch.manual_seed(0)
    again = create_model(spec)
    load_model_weights(again, tmp_path / "model.safetensors")
    for name, value in model.state_dict().items():
        assert again.state_dict()[name].dtype == value.dtype and torch.equal(again.state_dict()[name], value), name
    assert ModelSpec.from_dict(spec.to_dict()).clip_weights == "fp16"


# ----------------------------------------------------------------------------- item 9: released checkpoint
def test_internvideo_checkpoint_extra_heads_are_dropped_clip_stays_strict(tmp_path, caplog):
    evl = _evl(CLIPConfig(**SMALL))
    released = {"clip." + k: v for k, v in evl.state_dict().items()}
    released["clip.visual.proj"] = released.pop("clip.visual_proj")  # the released file keeps OpenAI's names
    released["clip.visual.ln_post.weight"] = released.pop("clip.visual_ln_post.weight")
    released["clip.visual.ln_post.bias"] = released.pop("clip.visual_ln_post.bias")
    extra = {"caption_decoder.layers.0.weight": torch.randn(4, 4), "itm_head.bias": torch.randn(2)}
    path = tmp_path / "InternVideo-MM-L-14.ckpt"
    torch.save({"state_dict": {**released, **extra}, "epoch": 3}, path)
    with caplog.at_level(logging.INFO, logger="modules.internvideo_checkpoint"):
        model = load_internvideo_model(path, t_size=3)
    assert "caption_decoder" in caplog.text and "itm_head" in caplog.text
    for name, value in evl.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    del released["clip.visual.transformer.balance"]
    torch.save({"state_dict": {**released, **extra}}, path)
    with pytest.raises(CheckpointError, match="balance"):
        load_internvideo_model(path, t_size=3)


# ----------------------------------------------------------------------------- frame mask and item 10
def _randomized_evl(seed: int = 0) -> InternVideoCLIP:
    model = _evl(CLIPConfig(**SMALL), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():  # the decoder starts as an identity; make every part matter
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def test_published_evl_encodes_padded_zero_frames():
    clip = _randomized_evl()
    gen = torch.Generator().manual_seed(3)
    video, mask = random_video(gen, [2, 3], 3)
    published = CLIP4Clip(RetrievalConfig(), clip).eval()
    ours = CLIP4Clip(RetrievalConfig(evl_ignore_frame_mask=False), clip).eval()
    with torch.no_grad():
        padded = published.encode_video(video, mask)["video"]
        unmasked = published.encode_video(video, torch.ones_like(mask))["video"]
        masked = ours.encode_video(video, mask)["video"]
        alone = ours.encode_video(video[:1, :2], mask[:1, :2])["video"]
    torch.testing.assert_close(padded, unmasked, rtol=0, atol=0)
    assert not torch.allclose(masked[0], padded[0], atol=1e-4)  # the zero frame mattered
    torch.testing.assert_close(masked[0], alone[0], rtol=1e-5, atol=1e-5)  # ours: the real frames alone
    torch.testing.assert_close(masked[1], padded[1], rtol=1e-5, atol=1e-5)  # a full clip is the same


def _reference_token_interaction(text, text_mask, frames, frame_mask, text_w=None, video_w=None):
    """DRL's score, the maxima over real positions only, one pair at a time."""
    out = torch.zeros(text.shape[0], frames.shape[0])
    for a in range(text.shape[0]):
        t = nn.functional.normalize(text[a][text_mask[a].bool()], dim=-1)
        tw = text_w[a][text_mask[a].bool()] if text_w is not None else torch.full((len(t),), 1 / len(t))
        for b in range(frames.shape[0]):
            v = nn.functional.normalize(frames[b][frame_mask[b].bool()], dim=-1)
            vw = video_w[b][frame_mask[b].bool()] if video_w is not None else torch.full((len(v),), 1 / len(v))
            sim = t @ v.t()
            out[a, b] = ((sim.max(1).values * tw).sum() + (sim.max(0).values * vw).sum()) / 2
    return out


@pytest.mark.parametrize("interaction", ["wti", "ti"])
def test_published_evl_token_interaction(interaction):
    clip = _randomized_evl()
    model = CLIP4Clip(RetrievalConfig(interaction=interaction, wti_arch=1), clip).eval()
    gen = torch.Generator().manual_seed(4)
    ids, ids_mask = random_captions(gen, [2, 5], 10)
    video, mask = random_video(gen, [3, 2], 3)
    with torch.no_grad():
        text = model.encode_text(ids, ids_mask)
        vid = model.encode_video(video, mask)
        sim = model.similarity(text, vid)
        # independent features: ln_final states before the projection; each frame's last-block
        # CLS through visual_ln_post and visual_proj, the encoder run without the mask
        hidden = clip.ln_final(clip.transformer(clip.token_embedding(ids) + clip.positional_embedding[:10],
                                                is_causal=True))
        _, frame_cls = clip.visual(video.permute(0, 2, 1, 3, 4))
        pooled = clip.encode_video(video)
        frames = clip.visual_ln_post(frame_cls) @ clip.visual_proj
    torch.testing.assert_close(text["tokens"], hidden, rtol=1e-5, atol=1e-5)
    if interaction == "wti":
        torch.testing.assert_close(vid["frames"], frames * mask[..., None], rtol=1e-5, atol=1e-5)
        text_w = torch.softmax(model.text_weight_fc(hidden).squeeze(-1).masked_fill(ids_mask == 0, -torch.inf), -1)
        video_w = torch.softmax(model.video_weight_fc(frames).squeeze(-1).masked_fill(mask == 0, -torch.inf), -1)
        expected = _reference_token_interaction(hidden, ids_mask, frames, mask, text_w, video_w)
    else:  # InternVideo's ti saw the one clip vector
        expected = _reference_token_interaction(hidden, ids_mask, pooled[:, None], torch.ones(2, 1))
    torch.testing.assert_close(sim, clip.logit_scale.exp() * expected, rtol=1e-4, atol=1e-5)


def test_evl_tokens_frames_uses_projected_text_and_frame_tokens():
    clip = _randomized_evl()
    model = CLIP4Clip(RetrievalConfig(interaction="ti", evl_tokens="frames"), clip).eval()
    gen = torch.Generator().manual_seed(5)
    ids, ids_mask = random_captions(gen, [3], 10)
    video, mask = random_video(gen, [3], 3)
    with torch.no_grad():
        tokens = model.encode_text(ids, ids_mask)["tokens"]
        frames = model.encode_video(video, mask)["frames"]
        projected = clip.encode_text(ids, return_hidden=True)[1]
    torch.testing.assert_close(tokens, projected)
    assert frames.shape == (1, 3, SMALL["embed_dim"])


# ----------------------------------------------------------------------------- item 12: cdcr
def published_cdcr(text_feat, video_feat, text_mask, video_mask, variant, text_weight=None, video_weight=None):
    """InternVideo `wti_interaction`'s cdcr branch (features already L2-normalised)."""
    retrieve = torch.einsum("atd,bvd->abtv", text_feat, video_feat)
    retrieve = torch.einsum("abtv,at->abtv", retrieve, text_mask)
    retrieve = torch.einsum("abtv,bv->abtv", retrieve, video_mask)
    text_sum, video_sum = text_mask.sum(-1), video_mask.sum(-1)
    _, max_idx1 = retrieve.max(dim=-1)
    _, max_idx2 = retrieve.max(dim=-2)
    if variant == 1:
        _t = text_feat[torch.arange(text_feat.shape[0]), torch.randint_like(text_sum, 0, 10000) % text_sum, :]
        _v = video_feat[torch.arange(video_feat.shape[0]), torch.randint_like(video_sum, 0, 10000) % video_sum, :]
        za, zb = (_t - _t.mean(0)) / _t.std(0), (_v - _v.mean(0)) / _v.std(0)
        B, D = za.shape
        c = torch.einsum("ac,ad->cd", za, zb) / B
    else:
        max_idx1 = max_idx1[torch.arange(max_idx1.shape[0]), torch.arange(max_idx1.shape[1])]
        max_idx2 = max_idx2[torch.arange(max_idx2.shape[0]), torch.arange(max_idx2.shape[1])]
        max_t = text_feat[torch.arange(max_idx2.shape[0]).repeat_interleave(max_idx2.shape[1]), max_idx2.flatten()]
        max_v = video_feat[torch.arange(max_idx1.shape[0]).repeat_interleave(max_idx1.shape[1]), max_idx1.flatten()]
        t_mask, v_mask = text_mask.flatten().bool(), video_mask.flatten().bool()
        t = text_feat.reshape(-1, text_feat.shape[-1])[t_mask]
        v = video_feat.reshape(-1, video_feat.shape[-1])[v_mask]
        max_t, max_v = max_t[v_mask], max_v[t_mask]
        za, zb = (t - t.mean(0)) / t.std(0), (max_v - max_v.mean(0)) / max_v.std(0)
        xa, xb = (v - v.mean(0)) / v.std(0), (max_t - max_t.mean(0)) / max_t.std(0)
        if variant == 2:
            N, D = za.shape
            c1 = torch.einsum("ac,ad->cd", za, zb) / N
            N, D = xa.shape
            c2 = torch.einsum("ac,ad->cd", xa, xb) / N
        else:
            B, D = text_feat.shape[0], za.shape[1]
            c1 = torch.einsum("acd,a->cd", torch.einsum("ac,ad->acd", za, zb), text_weight.flatten()[t_mask]) / B
            c2 = torch.einsum("acd,a->cd", torch.einsum("ac,ad->acd", xa, xb), video_weight.flatten()[v_mask]) / B
        c = (c1 + c2) / 2
    on_diag = torch.diagonal(c).add(-1).pow(2).sum()
    off_diag = c.flatten()[1:].view(D - 1, D + 1)[:, :-1].pow(2).sum()
    return on_diag * 0.16 + off_diag * 0.0


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_cdcr_equals_the_published_formula(variant):
    gen = torch.Generator().manual_seed(variant)
    # positive features: every similarity > 0, where the published zero-filled maxima agree with ours
    text = torch.rand(5, 6, 8, generator=gen) + 0.1
    video = torch.rand(5, 4, 8, generator=gen) + 0.1
    text_mask = torch.tensor([[1] * n + [0] * (6 - n) for n in (2, 6, 3, 4, 5)])
    video_mask = torch.tensor([[1] * n + [0] * (4 - n) for n in (4, 1, 2, 3, 4)])
    text_w = torch.softmax(torch.randn(5, 6, generator=gen).masked_fill(text_mask == 0, -torch.inf), -1)
    video_w = torch.softmax(torch.randn(5, 4, generator=gen).masked_fill(video_mask == 0, -torch.inf), -1)
    torch.manual_seed(0)
    ours = cdcr_module.cdcr_loss(text, text_mask, video, video_mask, variant, text_w, video_w)
    torch.manual_seed(0)
    norm = nn.functional.normalize
    expected = published_cdcr(norm(text, dim=-1), norm(video, dim=-1), text_mask, video_mask, variant, text_w, video_w)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_cdcr_is_added_to_the_training_loss():
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(**SMALL))
    plain = CLIP4Clip(RetrievalConfig(interaction="wti", wti_arch=1, freeze_layer_num=-1), clip)
    with_cdcr = CLIP4Clip(RetrievalConfig(interaction="wti", wti_arch=1, freeze_layer_num=-1, cdcr=3), clip)
    with_cdcr.load_state_dict(plain.state_dict())
    gen = torch.Generator().manual_seed(2)
    ids, ids_mask = random_captions(gen, [2, 4, 3], 8)
    video, mask = random_video(gen, [2, 3, 1], 3)
    text, vid = plain.encode_text(ids, ids_mask), plain.encode_video(video, mask)
    text_w = torch.softmax(plain.text_weight_fc(text["tokens"]).squeeze(-1).masked_fill(ids_mask == 0, -torch.inf), -1)
    video_w = torch.softmax(plain.video_weight_fc(vid["frames"]).squeeze(-1).masked_fill(mask == 0, -torch.inf), -1)
    term = cdcr_module.cdcr_loss(text["tokens"], ids_mask, vid["frames"], mask, 3, text_w, video_w)
    difference = with_cdcr.contrastive_loss(text, vid) - plain.contrastive_loss(text, vid)
    torch.testing.assert_close(difference, 0.001 * term)
    with_cdcr.train()
    with_cdcr(ids, ids_mask, video, mask).backward()
    assert with_cdcr.text_weight_fc.weight.grad is not None


def test_cdcr_needs_token_interaction():
    with pytest.raises(ValueError, match="wti or ti"):
        RetrievalConfig(cdcr=1)
    with pytest.raises(ValueError, match="needs interaction wti"):
        RetrievalConfig(interaction="ti", cdcr=3)


def test_fp16_clip_weights_through_a_whole_run(synthetic_data, tmp_path):
    """The entry point trains one epoch with fp16 CLIP weights, evaluates and saves them as fp16."""
    from safetensors.torch import load_file

    from tests.engine_helpers import read_steps, tiny_run_args

    out = tmp_path / "fp16"
    main_task_retrieval.main(tiny_run_args(synthetic_data, out, "--do_train", "--epochs", "1", "--batch_size", "8",
                                           "--batch_size_val", "18", "--lr", "1e-3", "--clip_weights", "fp16",
                                           "--device", "cpu"))
    steps = read_steps(out)
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)
    weights = load_file(str(next(out.glob("checkpoints/*/model.safetensors"))))
    assert weights["clip.visual.proj"].dtype == torch.float16
    assert weights["clip.token_embedding.weight"].dtype == torch.float32
