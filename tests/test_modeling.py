"""The retrieval model: configuration, padding invariance, initialisation, freezing, hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules import interaction as drl
from modules import video_encoder_evl as evl
from modules.clip import build_clip, config_from_state_dict
from modules.modeling import CLIP4Clip, RetrievalConfig, load_clip4clip_state_dict, masked_mean
from modules.module_cross import TF_LAYER_NORM_EPS
from tests.tiny_clip import random_captions, random_video, tiny_clip_state_dict

HEADS = [
    dict(sim_header="meanP"), dict(sim_header="meanP", frame_norm="l2"), dict(sim_header="seqLSTM"),
    dict(sim_header="seqTransf"), dict(sim_header="tightTransf"), dict(sim_header="meanP", linear_patch="3d"),
    dict(sim_header="seqTransf", linear_patch="3d"),
]


def build(seed: int = 0, **options) -> CLIP4Clip:
    options.setdefault("cross_num_hidden_layers", 2)
    torch.manual_seed(seed)
    return CLIP4Clip.from_clip_state_dict(RetrievalConfig(**options), tiny_clip_state_dict(seed)).eval()


def scores(model, ids, ids_mask, video, video_mask):
    with torch.no_grad():
        text, vid = model.encode_text(ids, ids_mask), model.encode_video(video, video_mask)
        return text, vid, model.similarity(text, vid)


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("options", [
    dict(sim_header="meanp"), dict(frame_norm="L2"), dict(interaction="yes"), dict(linear_patch="2.5d"),
    dict(sim_header="tightTransf", loose_type=True), dict(sim_header="seqTransf", loose_type=False),
    dict(sim_header="tightTransf", interaction="wti"), dict(freeze_layer_num=-2),
])
def test_bad_configurations_are_refused(options):
    with pytest.raises(ValueError):
        RetrievalConfig(**options)


def test_loose_type_follows_the_head():
    assert RetrievalConfig().loose_type is True
    assert RetrievalConfig(sim_header="tightTransf").loose_type is False


def test_seq_heads_need_frame_features_of_text_width():
    sd = tiny_clip_state_dict(0, embed_dim=32)
    CLIP4Clip.from_clip_state_dict(RetrievalConfig(), sd)  # meanP has no weights: fine
    with pytest.raises(ValueError, match="must be equal"):
        CLIP4Clip.from_clip_state_dict(RetrievalConfig(sim_header="seqTransf"), sd)


# ----------------------------------------------------------------------------- padding
@pytest.mark.parametrize("options", HEADS, ids=lambda o: "-".join(map(str, o.values())))
def test_padding_changes_nothing(options):
    """Extra masked frames (with garbage pixels) and extra caption padding leave every score,
    text vector and video vector unchanged; so does the company of other videos."""
    model = build(**options)
    gen = torch.Generator().manual_seed(1)
    ids, ids_mask = random_captions(gen, [1, 5, 3], 9)
    video, video_mask = random_video(gen, [3, 1, 2], 3)
    text, vid, sim = scores(model, ids, ids_mask, video, video_mask)

    long_ids = torch.cat([ids, torch.zeros(3, 7, dtype=ids.dtype)], 1)
    long_ids_mask = torch.cat([ids_mask, torch.zeros(3, 7, dtype=ids_mask.dtype)], 1)
    garbage = torch.randn(3, 2, 3, 32, 32, generator=gen) * 3
    padded = torch.cat([video, garbage], 1)
    padded[1, 1:3] = torch.randn(2, 3, 32, 32, generator=gen)  # inside the old length too
    padded_mask = torch.cat([video_mask, torch.zeros(3, 2, dtype=video_mask.dtype)], 1)
    text2, vid2, sim2 = scores(model, long_ids, long_ids_mask, padded, padded_mask)

    torch.testing.assert_close(sim2, sim, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text2["text"], text["text"], atol=1e-6, rtol=1e-5)
    if "video" in vid:
        torch.testing.assert_close(vid2["video"], vid["video"], atol=1e-6, rtol=1e-5)
        alone = torch.cat([scores(model, ids[:1], ids_mask[:1], video[i:i + 1], video_mask[i:i + 1])[1]["video"]
                           for i in range(3)])
        torch.testing.assert_close(alone, vid["video"], atol=1e-6, rtol=1e-5)
    assert torch.all(vid2["frames"][padded_mask == 0] == 0)


@pytest.mark.parametrize("interaction", ["wti", "ti"])
def test_token_interaction_hook(interaction):
    model = build(interaction=interaction, wti_arch=2)
    assert isinstance(model.text_weight_fc, nn.Module) and isinstance(model.video_weight_fc, nn.Module)
    gen = torch.Generator().manual_seed(2)
    ids, ids_mask = random_captions(gen, [2, 6], 10)
    video, video_mask = random_video(gen, [3, 1, 2], 3)
    text, vid, sim = scores(model, ids, ids_mask, video, video_mask)
    assert text["tokens"].shape == (2, 10, 64)
    if interaction == "wti":
        raw = drl.wti_similarity(text["tokens"], ids_mask, vid["frames"], video_mask,
                                 model.text_weight_fc, model.video_weight_fc)
    else:
        raw = drl.ti_similarity(text["tokens"], ids_mask, vid["frames"], video_mask)
    torch.testing.assert_close(sim, model.clip.logit_scale.exp().detach() * raw)
    long_ids = torch.cat([ids, torch.zeros(2, 5, dtype=ids.dtype)], 1)
    long_mask = torch.cat([ids_mask, torch.zeros(2, 5, dtype=ids_mask.dtype)], 1)
    padded = torch.cat([video, torch.randn(3, 2, 3, 32, 32, generator=gen)], 1)
    padded_mask = torch.cat([video_mask, torch.zeros(3, 2, dtype=video_mask.dtype)], 1)
    torch.testing.assert_close(scores(model, long_ids, long_mask, padded, padded_mask)[2], sim, atol=1e-5, rtol=1e-5)
    model.train()
    model(ids[:2], ids_mask[:2], video[:2], video_mask[:2]).backward()
    assert model.text_weight_fc[0].weight.grad is not None or interaction == "ti"


def test_ti_without_wti_arch_has_no_weight_fcs():
    model = build(interaction="ti")
    assert not hasattr(model, "text_weight_fc")


# ----------------------------------------------------------------------------- heads
def test_tight_transf_chunking_gives_the_same_matrix():
    model = build(sim_header="tightTransf")
    gen = torch.Generator().manual_seed(3)
    ids, ids_mask = random_captions(gen, [1, 2, 3, 4, 5], 8)
    video, video_mask = random_video(gen, [3, 1, 2], 3)
    _, _, whole = scores(model, ids, ids_mask, video, video_mask)
    model.config.cross_pair_chunk = 1
    _, _, chunked = scores(model, ids, ids_mask, video, video_mask)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    assert whole.shape == (5, 3)


def test_masked_mean_of_no_frames_is_zero():
    frames = torch.randn(2, 3, 4)
    out = masked_mean(frames, torch.tensor([[1, 1, 0], [0, 0, 0]]))
    torch.testing.assert_close(out[0], frames[0, :2].mean(0))
    assert torch.all(out[1] == 0)


def test_meanp_frame_norm_forms():
    model_iv, model_c4c = build(), build(frame_norm="l2")
    gen = torch.Generator().manual_seed(4)
    video, mask = random_video(gen, [3, 2], 3)
    frames = model_iv.encode_video(video, mask)["frames"].detach()
    iv = model_iv.encode_video(video, mask)["video"].detach()
    c4c = model_c4c.encode_video(video, mask)["video"].detach()
    for i, n in enumerate([3, 2]):
        mean = frames[i, :n].mean(0)
        torch.testing.assert_close(iv[i], mean / mean.norm())
        unit = frames[i, :n] / frames[i, :n].norm(dim=-1, keepdim=True)
        torch.testing.assert_close(c4c[i], unit.mean(0) / unit.mean(0).norm())


# ----------------------------------------------------------------------------- initialisation
def test_heads_start_from_clip_text_weights():
    sd = tiny_clip_state_dict(0)
    for header in ("seqTransf", "seqLSTM", "tightTransf"):
        model = build(sim_header=header)
        state = model.state_dict()
        torch.testing.assert_close(state.get("frame_position_embeddings.weight", sd["positional_embedding"]),
                                   sd["positional_embedding"])
        prefix = {"seqTransf": "transformerClip.", "tightTransf": "cross.transformer."}.get(header)
        if prefix:
            for key, value in sd.items():
                if key.startswith("transformer.resblocks."):
                    torch.testing.assert_close(state[prefix + key[len("transformer."):]], value)
            blocks = model.transformerClip.resblocks if header == "seqTransf" else model.cross.transformer.resblocks
            assert all(b.ln_1.eps == b.ln_2.eps == TF_LAYER_NORM_EPS for b in blocks)
        if header == "tightTransf":
            torch.testing.assert_close(state["cross.embeddings.position_embeddings.weight"], sd["positional_embedding"])
            assert model.cross.pooler.ln_pool.eps == TF_LAYER_NORM_EPS
            assert torch.all(state["similarity_dense.bias"] == 0) and torch.all(state["cross.pooler.ln_pool.weight"] == 1)
            assert 0.01 < float(state["similarity_dense.weight"].std()) < 0.04
        if header == "seqLSTM":
            assert not model.frame_position_embeddings.weight.requires_grad  # unused by the LSTM


def test_conv2_starts_as_the_2d_patch():
    sd = tiny_clip_state_dict(0)
    model3d, model2d = build(linear_patch="3d"), build()
    conv2 = model3d.clip.visual.conv2.weight
    torch.testing.assert_close(conv2[:, :, 1], sd["visual.conv1.weight"])
    assert torch.all(conv2[:, :, 0] == 0) and torch.all(conv2[:, :, 2] == 0)
    gen = torch.Generator().manual_seed(5)
    video, mask = random_video(gen, [3, 2], 3)
    with torch.no_grad():
        torch.testing.assert_close(model3d.encode_video(video, mask)["frames"], model2d.encode_video(video, mask)["frames"],
                                   atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- freezing
def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_layer_num_symmetric():
    """Our rule (--freeze_rule symmetric); the published rule is tested in test_protocol_model."""
    everything = _trainable(build(freeze_layer_num=-1, freeze_rule="symmetric"))
    frozen0 = everything - _trainable(build(freeze_layer_num=0, freeze_rule="symmetric"))
    assert frozen0 == {"clip." + k for k in ("token_embedding.weight", "positional_embedding", "visual.conv1.weight",
                                             "visual.class_embedding", "visual.positional_embedding",
                                             "visual.ln_pre.weight", "visual.ln_pre.bias")}
    frozen1 = everything - _trainable(build(freeze_layer_num=1, freeze_rule="symmetric"))
    blocks = frozen1 - frozen0
    assert blocks and all(".resblocks.0." in n for n in blocks)
    assert any(n.startswith("clip.visual.transformer.") for n in blocks)
    assert any(n.startswith("clip.transformer.") for n in blocks)
    for kept in ("clip.ln_final.weight", "clip.text_projection", "clip.logit_scale", "clip.visual.proj",
                 "clip.visual.ln_post.weight", "clip.transformer.resblocks.1.attn.in_proj_weight"):
        assert kept in _trainable(build(freeze_layer_num=1, freeze_rule="symmetric"))
    # CLIP4Clip froze nothing at all with 3d; here conv2 trains, the rest as above, conv1 is unused.
    trainable3d = _trainable(build(freeze_layer_num=1, linear_patch="3d", freeze_rule="symmetric"))
    assert "clip.visual.conv2.weight" in trainable3d and "clip.visual.conv1.weight" not in trainable3d
    assert not (trainable3d & frozen1)


def test_grad_checkpointing_passes_through_and_changes_no_gradient():
    gen = torch.Generator().manual_seed(6)
    ids, ids_mask = random_captions(gen, [2, 3], 6)
    video, mask = random_video(gen, [2, 1], 2)
    grads = []
    for flag in (False, True):
        model = build(sim_header="seqTransf", grad_checkpointing=flag).train()
        assert model.clip.visual.transformer.grad_checkpointing is flag and model.clip.transformer.grad_checkpointing is flag
        model(ids, ids_mask, video, mask).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- training
def test_forward_is_the_symmetric_loss_and_every_trainable_tensor_gets_a_gradient():
    gen = torch.Generator().manual_seed(7)
    ids, ids_mask = random_captions(gen, [2, 3, 4], 6)
    video, mask = random_video(gen, [2, 1, 3], 3)
    for options in HEADS:
        model = build(freeze_layer_num=-1, cross_dropout=0.0, **options).train()
        loss = model(ids, ids_mask, video, mask)
        sim = model.similarity(model.encode_text(ids, ids_mask), model.encode_video(video, mask))
        target = torch.arange(3)
        expected = (nn.functional.cross_entropy(sim, target) + nn.functional.cross_entropy(sim.t(), target)) / 2
        torch.testing.assert_close(loss, expected)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == [] or (options["sim_header"] == "tightTransf" and missing == ["clip.logit_scale"]), missing


def test_mask_same_video_negatives_needs_ids():
    model = build(mask_same_video_negatives=True).train()
    gen = torch.Generator().manual_seed(8)
    ids, ids_mask = random_captions(gen, [2, 3, 4], 6)
    video, mask = random_video(gen, [2, 1, 3], 3)
    with pytest.raises(ValueError, match="video_ids"):
        model(ids, ids_mask, video, mask)
    masked = model(ids, ids_mask, video, mask, video_ids=torch.tensor([0, 1, 0]))
    plain = model(ids, ids_mask, video, mask, video_ids=torch.tensor([0, 1, 2]))
    assert masked < plain


# ----------------------------------------------------------------------------- InternVideo hook
class FakeVideoCLIP(nn.Module):
    """The parts of InternVideo's model the hook relies on: one vector per clip."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.inner = clip
        self.positional_embedding, self.ln_final = clip.positional_embedding, clip.ln_final
        self.text_projection, self.logit_scale, self.transformer = clip.text_projection, clip.logit_scale, clip.transformer
        self.calls = []

    def encode_text(self, ids, return_hidden=False):
        return self.inner.encode_text(ids, return_hidden=return_hidden)

    def encode_video(self, video, video_mask=None):
        self.calls.append(tuple(video.shape))
        return self.inner.encode_image(video[:, 0]) * 2


def test_clip_evl_hook_treats_the_clip_vector_as_one_frame():
    clip = FakeVideoCLIP(build_clip(tiny_clip_state_dict(0)))
    model = CLIP4Clip(RetrievalConfig(), clip).eval()
    assert model.clip_evl
    gen = torch.Generator().manual_seed(9)
    video, mask = random_video(gen, [3, 2], 3)
    with torch.no_grad():
        out = model.encode_video(video, mask)
    assert clip.calls == [(2, 3, 3, 32, 32)]
    assert out["frames"].shape == (2, 1, 64) and out["mask"].tolist() == [[1], [1]]
    expected = clip.inner.encode_image(video[:, 0]).detach()
    torch.testing.assert_close(out["video"], expected / expected.norm(dim=-1, keepdim=True))
    with pytest.raises(ValueError, match="3d"):
        CLIP4Clip(RetrievalConfig(linear_patch="3d"), clip)


def test_from_clip4clip_state_dict_round_trip():
    model = build(sim_header="seqTransf")
    state = {"module." + k: v for k, v in model.state_dict().items()}
    again = CLIP4Clip.from_clip4clip_state_dict(RetrievalConfig(sim_header="seqTransf", cross_num_hidden_layers=2), state)
    for name, value in again.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
    load_clip4clip_state_dict(again, model.state_dict())


def test_internvideo_encoder_through_the_hook():
    torch.manual_seed(0)
    config = evl.evl_config_from_clip(config_from_state_dict(tiny_clip_state_dict(0)), t_size=3)
    model = CLIP4Clip(RetrievalConfig(freeze_layer_num=1, freeze_rule="symmetric"), evl.InternVideoCLIP(config)).eval()
    gen = torch.Generator().manual_seed(10)
    video, mask = random_video(gen, [3, 3], 3)
    ids, ids_mask = random_captions(gen, [2, 4], 6)
    with torch.no_grad():
        out = model.encode_video(video, mask)
        expected = model.clip.encode_video(video, mask)
    torch.testing.assert_close(out["video"], expected / expected.norm(dim=-1, keepdim=True))
    trainable = _trainable(model)
    assert {"clip.visual_proj", "clip.visual_ln_post.weight", "clip.logit_scale"} <= trainable
    assert any(".dec." in n for n in trainable) and any(".dpe." in n for n in trainable)
    assert "clip.visual.conv1.weight" not in trainable and "clip.token_embedding.weight" not in trainable
    model.train()
    model(ids, ids_mask, video, mask).backward()
    assert model.clip.visual_proj.grad is not None


def test_token_interaction_ignores_loose_type():
    config = RetrievalConfig(interaction="ti", loose_type=False)
    assert config.loose_type is False and config.sim_header == "meanP"
