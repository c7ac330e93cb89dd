"""A checkpoint with CLIP4Clip's key names loads strictly and gives CLIP4Clip's numbers.

The reference below is written from the published definitions (CLIP4Clip's
modules/modeling.py, module_cross.py, until_module.py, module_clip.py), one caption / video /
pair at a time with explicit loops over heads and time steps; it shares no code with the
model. Like CLIP4Clip it encodes every frame slot, padded ones included (zero images), and
uses the -1e6 key mask, TF-style LayerNorm (eps 1e-12) in transformerClip and cross, CLIP's
LayerNorm (eps 1e-5) in the towers, residuals around the temporal heads, no causal mask there.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modules.modeling import CLIP4Clip, RetrievalConfig, load_clip4clip_state_dict
from modules.weights import CheckpointError
from tests.tiny_clip import random_captions, random_video, tiny_clip_state_dict

WIDTH = 128  # text width and embed dim: 2 heads, so per-head masking is exercised
VISION_WIDTH = 64
LAYERS = 2
T = 5
WORDS = 12
CLIP_EPS, TF_EPS = 1e-5, 1e-12


# ----------------------------------------------------------------------------- checkpoint
def _block_keys(gen, prefix, width):
    def rnd(*shape, std):
        return torch.randn(*shape, generator=gen) * std

    return {
        f"{prefix}.attn.in_proj_weight": rnd(3 * width, width, std=width**-0.5),
        f"{prefix}.attn.in_proj_bias": rnd(3 * width, std=0.05),
        f"{prefix}.attn.out_proj.weight": rnd(width, width, std=width**-0.5),
        f"{prefix}.attn.out_proj.bias": rnd(width, std=0.05),
        f"{prefix}.ln_1.weight": 1 + rnd(width, std=0.2),
        f"{prefix}.ln_1.bias": rnd(width, std=0.1),
        f"{prefix}.mlp.c_fc.weight": rnd(4 * width, width, std=width**-0.5),
        f"{prefix}.mlp.c_fc.bias": rnd(4 * width, std=0.05),
        f"{prefix}.mlp.c_proj.weight": rnd(width, 4 * width, std=(4 * width) ** -0.5),
        f"{prefix}.mlp.c_proj.bias": rnd(width, std=0.05),
        f"{prefix}.ln_2.weight": 1 + rnd(width, std=0.2),
        f"{prefix}.ln_2.bias": rnd(width, std=0.1),
    }


def clip4clip_checkpoint(sim_header: str, linear_patch: str = "2d", seed: int = 0, small: bool = False) -> dict:
    """A random `pytorch_model.bin`-style state dict with CLIP4Clip's key names, written out
    by hand (not taken from our model). `small` shrinks the frame features so that the
    LayerNorm eps (1e-12 vs CLIP's 1e-5) decides the result."""
    gen = torch.Generator().manual_seed(seed + 100)

    def rnd(*shape, std):
        return torch.randn(*shape, generator=gen) * std

    clip = tiny_clip_state_dict(
        seed, embed_dim=WIDTH, vision_width=VISION_WIDTH, text_width=WIDTH, vision_layers=LAYERS, text_layers=LAYERS
    )
    if small:
        clip["visual.proj"] = clip["visual.proj"] * 1e-3
    sd = {"clip." + k: v for k, v in clip.items()}
    if linear_patch == "3d":
        sd["clip.visual.conv2.weight"] = rnd(VISION_WIDTH, 3, 3, 16, 16, std=(3 * 3 * 256) ** -0.5)
    if sim_header in ("seqLSTM", "seqTransf"):
        sd["frame_position_embeddings.weight"] = rnd(77, WIDTH, std=1e-3 if small else 0.1)
    if sim_header == "seqTransf":
        for i in range(LAYERS):
            sd.update(_block_keys(gen, f"transformerClip.resblocks.{i}", WIDTH))
    if sim_header == "seqLSTM":
        sd.update(
            {
                "lstm_visual.weight_ih_l0": rnd(4 * WIDTH, WIDTH, std=WIDTH**-0.5),
                "lstm_visual.weight_hh_l0": rnd(4 * WIDTH, WIDTH, std=WIDTH**-0.5),
                "lstm_visual.bias_ih_l0": rnd(4 * WIDTH, std=0.1),
                "lstm_visual.bias_hh_l0": rnd(4 * WIDTH, std=0.1),
            }
        )
    if sim_header == "tightTransf":
        sd["cross.embeddings.position_embeddings.weight"] = rnd(77, WIDTH, std=1e-3 if small else 0.1)
        for i in range(LAYERS):
            sd.update(_block_keys(gen, f"cross.transformer.resblocks.{i}", WIDTH))
        sd.update(
            {
                "cross.pooler.ln_pool.weight": 1 + rnd(WIDTH, std=0.2),
                "cross.pooler.ln_pool.bias": rnd(WIDTH, std=0.1),
                "cross.pooler.dense.weight": rnd(WIDTH, WIDTH, std=WIDTH**-0.5),
                "cross.pooler.dense.bias": rnd(WIDTH, std=0.1),
                "similarity_dense.weight": rnd(1, WIDTH, std=WIDTH**-0.5),
                "similarity_dense.bias": rnd(1, std=0.1),
            }
        )
    return sd


# ----------------------------------------------------------------------------- reference
def ref_ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def ref_attention(x, sd, p, heads, bias):
    """Multi-head self-attention of one sequence x [L, D]; bias [L, L] added to the logits."""
    d = x.shape[1]
    hd = d // heads
    w, b = sd[p + "in_proj_weight"], sd[p + "in_proj_bias"]
    q, k, v = (x @ w[i * d : (i + 1) * d].T + b[i * d : (i + 1) * d] for i in range(3))
    outs = []
    for h in range(heads):
        s = slice(h * hd, (h + 1) * hd)
        logits = q[:, s] @ k[:, s].T / math.sqrt(hd)
        if bias is not None:
            logits = logits + bias
        outs.append(torch.softmax(logits, dim=-1) @ v[:, s])
    return torch.cat(outs, -1) @ sd[p + "out_proj.weight"].T + sd[p + "out_proj.bias"]


def ref_block(x, sd, p, heads, eps, bias):
    x = x + ref_attention(ref_ln(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps), sd, p + "attn.", heads, bias)
    h = (
        ref_ln(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps) @ sd[p + "mlp.c_fc.weight"].T
        + sd[p + "mlp.c_fc.bias"]
    )
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]


def ref_blocks(x, sd, prefix, eps, bias):
    heads = x.shape[1] // 64
    i = 0
    while f"{prefix}{i}.ln_1.weight" in sd:
        x = ref_block(x, sd, f"{prefix}{i}.", heads, eps, bias)
        i += 1
    return x


def ref_text(sd, ids):
    """CLIP text feature of one caption: projected ln_final state at the end token (argmax id)."""
    x = sd["clip.token_embedding.weight"][ids] + sd["clip.positional_embedding"][: len(ids)]
    causal = torch.full((len(ids), len(ids)), float("-inf")).triu(1)
    x = ref_blocks(x, sd, "clip.transformer.resblocks.", CLIP_EPS, causal)
    x = ref_ln(x, sd["clip.ln_final.weight"], sd["clip.ln_final.bias"], CLIP_EPS)
    return x[int(ids.argmax())] @ sd["clip.text_projection"]


def ref_patches(frame, weight):
    """Patch embedding of one frame [3, H, W] by an explicit loop over the patch grid."""
    p = weight.shape[-1]
    g = frame.shape[-1] // p
    out = [
        frame[:, gy * p : (gy + 1) * p, gx * p : (gx + 1) * p].reshape(-1) @ weight.reshape(weight.shape[0], -1).T
        for gy in range(g)
        for gx in range(g)
    ]
    return torch.stack(out)


def ref_frames(sd, video, linear_patch):
    """CLIP4Clip's per-frame features [T, E] of one video [T, 3, H, W], padded slots included."""
    out = []
    for t in range(video.shape[0]):
        if linear_patch == "2d":
            tokens = ref_patches(video[t], sd["clip.visual.conv1.weight"])
        else:  # temporal kernel 3, padding 1: frames t-1, t, t+1 (zeros outside the clip)
            conv2 = sd["clip.visual.conv2.weight"]
            tokens = sum(
                ref_patches(video[t + k - 1], conv2[:, :, k]) for k in range(3) if 0 <= t + k - 1 < video.shape[0]
            )
        x = torch.cat([sd["clip.visual.class_embedding"][None], tokens]) + sd["clip.visual.positional_embedding"]
        x = ref_ln(x, sd["clip.visual.ln_pre.weight"], sd["clip.visual.ln_pre.bias"], CLIP_EPS)
        x = ref_blocks(x, sd, "clip.visual.transformer.resblocks.", CLIP_EPS, None)
        x = ref_ln(x[0], sd["clip.visual.ln_post.weight"], sd["clip.visual.ln_post.bias"], CLIP_EPS)
        out.append(x @ sd["clip.visual.proj"])
    return torch.stack(out)


def ref_key_bias(mask):
    return ((1.0 - mask.float()) * -1000000.0)[None, :].expand(len(mask), -1)


def ref_lstm(sd, frames):
    """nn.LSTM (gate order i, f, g, o) step by step over the given frames."""
    w_ih, w_hh = sd["lstm_visual.weight_ih_l0"], sd["lstm_visual.weight_hh_l0"]
    b = sd["lstm_visual.bias_ih_l0"] + sd["lstm_visual.bias_hh_l0"]
    h = c = torch.zeros(w_hh.shape[1])
    out = []
    for x in frames:
        i, f, g, o = (w_ih @ x + w_hh @ h + b).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out)


def ref_video_vector(sd, frames, mask, sim_header, frame_norm):
    """Loose heads: temporal head on one video's frames [T, E], then CLIP4Clip's pooling."""
    n = int(mask.sum())
    if sim_header == "seqLSTM":  # packed: only the n valid frames go through the LSTM
        frames = torch.cat([ref_lstm(sd, frames[:n]) + frames[:n], frames[n:]])
    elif sim_header == "seqTransf":
        x = frames + sd["frame_position_embeddings.weight"][: len(frames)]
        x = ref_blocks(x, sd, "transformerClip.resblocks.", TF_EPS, ref_key_bias(mask))
        frames = x + frames
    valid = frames[:n]
    if frame_norm == "l2":
        valid = valid / valid.norm(dim=-1, keepdim=True)
    pooled = valid.sum(0) / n
    return pooled / pooled.norm()


def ref_tight_score(sd, text, frames, mask):
    x = torch.cat([text[None], frames])
    x = x + sd["cross.embeddings.position_embeddings.weight"][: len(x)]
    x = ref_blocks(
        x, sd, "cross.transformer.resblocks.", TF_EPS, ref_key_bias(torch.cat([torch.ones(1), mask.float()]))
    )
    pooled = ref_ln(x, sd["cross.pooler.ln_pool.weight"], sd["cross.pooler.ln_pool.bias"], TF_EPS)[0]
    pooled = pooled @ sd["cross.pooler.dense.weight"].T + sd["cross.pooler.dense.bias"]
    pooled = pooled * torch.sigmoid(1.702 * pooled)
    return pooled @ sd["similarity_dense.weight"][0] + sd["similarity_dense.bias"][0]


def ref_similarity(sd, ids, video, video_mask, sim_header, linear_patch, frame_norm):
    texts = torch.stack([ref_text(sd, row) for row in ids])
    frames = [ref_frames(sd, v, linear_patch) for v in video]
    if sim_header == "tightTransf":
        pairs = list(zip(frames, video_mask, strict=True))
        sim = torch.tensor([[float(ref_tight_score(sd, t, f, m)) for f, m in pairs] for t in texts])
        return texts, None, sim
    videos = torch.stack([ref_video_vector(sd, f, m, sim_header, frame_norm) for f, m in zip(frames, video_mask, strict=True)])
    sim = sd["clip.logit_scale"].exp() * (texts / texts.norm(dim=-1, keepdim=True)) @ videos.T
    return texts, videos, sim


# ----------------------------------------------------------------------------- tests
def _inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids, ids_mask = random_captions(gen, [1, 4, 9, 2], WORDS)
    video, video_mask = random_video(gen, [T, 2, 1], T)
    return ids, ids_mask, video, video_mask


CASES = [
    ("meanP", "2d", "l2"),
    ("meanP", "2d", "none"),
    ("meanP", "3d", "l2"),
    ("seqLSTM", "2d", "l2"),
    ("seqTransf", "2d", "l2"),
    ("seqTransf", "3d", "none"),
    ("tightTransf", "2d", "none"),
]


@pytest.mark.parametrize("sim_header,linear_patch,frame_norm", CASES)
def test_matches_reference(sim_header, linear_patch, frame_norm):
    sd = clip4clip_checkpoint(sim_header, linear_patch)
    config = RetrievalConfig(
        sim_header=sim_header, linear_patch=linear_patch, frame_norm=frame_norm, cross_num_hidden_layers=LAYERS
    )
    model = CLIP4Clip.from_clip4clip_state_dict(config, sd).eval()
    ids, ids_mask, video, video_mask = _inputs()
    with torch.no_grad():
        text_feats = model.encode_text(ids, ids_mask)
        video_feats = model.encode_video(video, video_mask)
        sim = model.similarity(text_feats, video_feats)
        ref_texts, ref_videos, ref_sim = ref_similarity(
            sd, ids, video, video_mask, sim_header, linear_patch, frame_norm
        )
    torch.testing.assert_close(text_feats["text"], ref_texts, atol=1e-5, rtol=1e-4)
    if ref_videos is not None:
        torch.testing.assert_close(video_feats["video"], ref_videos, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sim, ref_sim, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("sim_header", ["seqTransf", "tightTransf"])
def test_layer_norm_eps_is_clip4clips(sim_header):
    """With tiny frame features the eps decides the numbers; the reference uses 1e-12."""
    sd = clip4clip_checkpoint(sim_header, small=True)
    model = CLIP4Clip.from_clip4clip_state_dict(
        RetrievalConfig(sim_header=sim_header, cross_num_hidden_layers=LAYERS), sd
    ).eval()
    ids, ids_mask, video, video_mask = _inputs(2)
    with torch.no_grad():
        sim = model.similarity(model.encode_text(ids, ids_mask), model.encode_video(video, video_mask))
        _, _, ref = ref_similarity(sd, ids, video, video_mask, sim_header, "2d", "none")
        for module in model.modules():  # CLIP's eps instead: the result must move
            if isinstance(module, nn.LayerNorm) and module.eps == TF_EPS:
                module.eps = CLIP_EPS
        moved = model.similarity(model.encode_text(ids, ids_mask), model.encode_video(video, video_mask))
    torch.testing.assert_close(sim, ref, atol=2e-4, rtol=1e-4)
    assert (moved - ref).abs().max() > 1e-2


def test_module_prefix_and_fp16_checkpoint_load():
    """DDP's `module.` prefix is removed; CLIP4Clip saved CLIP's matrices in fp16: cast on copy."""
    sd = clip4clip_checkpoint("seqTransf")
    ddp = {"module." + k: v.half() if k.startswith("clip.") else v for k, v in sd.items()}
    config = RetrievalConfig(sim_header="seqTransf", cross_num_hidden_layers=LAYERS)
    model = CLIP4Clip.from_clip_state_dict(config, {k[5:]: v for k, v in sd.items() if k.startswith("clip.")})
    load_clip4clip_state_dict(model, ddp)
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value, ddp["module." + name].float(), atol=0, rtol=0)


def test_mismatched_checkpoint_lists_every_problem_with_hints():
    sd = clip4clip_checkpoint("seqTransf")
    del sd["clip.ln_final.bias"]
    sd["clip.logit_scale"] = torch.zeros(2)
    model = CLIP4Clip.from_clip_state_dict(
        RetrievalConfig(), tiny_clip_state_dict(0, embed_dim=WIDTH, text_width=WIDTH)
    )
    with pytest.raises(CheckpointError) as err:
        load_clip4clip_state_dict(model, sd, source="pytorch_model.bin")
    message = str(err.value)
    for needle in (
        "pytorch_model.bin",
        "missing keys: clip.ln_final.bias",
        "unexpected keys",
        "transformerClip.resblocks.0",
        "clip.logit_scale: checkpoint (2,)",
        "'sim_header': 'seqTransf'",
        "'cross_num_hidden_layers': 2",
    ):
        assert needle in message, needle


def _literal_clip4clip_seq_transf(sd, frames, video_mask, first_release=False):
    """CLIP4Clip's seqTransf exactly as published: LND layout, nn.MultiheadAttention and the
    [N, T, T] mask expanded to the heads with `repeat_interleave(n_head, dim=0)` (since its
    fix of 2021-07-26, PR #24), or with `repeat(n_head, 1, 1)` as its first release did."""
    heads = WIDTH // 64
    x = frames + sd["frame_position_embeddings.weight"][: frames.shape[1]]
    mask = ((1.0 - video_mask.float()[:, None, :]) * -1000000.0).expand(-1, frames.shape[1], -1)
    x = x.permute(1, 0, 2)
    for i in range(LAYERS):
        p = f"transformerClip.resblocks.{i}."
        attn = nn.MultiheadAttention(WIDTH, heads)
        attn.load_state_dict({k[len(p + "attn.") :]: v for k, v in sd.items() if k.startswith(p + "attn.")})
        h = ref_ln(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], TF_EPS)
        head_mask = mask.repeat(heads, 1, 1) if first_release else mask.repeat_interleave(heads, dim=0)
        x = x + attn(h, h, h, need_weights=False, attn_mask=head_mask)[0]
        h = (
            ref_ln(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], TF_EPS) @ sd[p + "mlp.c_fc.weight"].T
            + sd[p + "mlp.c_fc.bias"]
        )
        x = x + (h * torch.sigmoid(1.702 * h)) @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    out = x.permute(1, 0, 2) + frames
    keep = video_mask.float()[..., None]
    pooled = (out / out.norm(dim=-1, keepdim=True) * keep).sum(1) / keep.sum(1)
    return pooled / pooled.norm(dim=-1, keepdim=True)


def test_published_seq_transf_mask_layout():
    """CLIP4Clip's current head-mask layout (`repeat_interleave`) equals ours on every batch;
    its first release (`repeat`) agrees only when a batch shares one mask."""
    sd = clip4clip_checkpoint("seqTransf")
    model = CLIP4Clip.from_clip4clip_state_dict(
        RetrievalConfig(sim_header="seqTransf", frame_norm="l2", cross_num_hidden_layers=LAYERS), sd
    ).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for valid, same in (([3, 3, 3], True), ([T, 2, 1], False)):
            video, mask = random_video(gen, valid, T)
            ours = model.encode_video(video, mask)["video"]
            frames = torch.stack([ref_frames(sd, v, "2d") for v in video])
            alone = torch.cat(
                [model.encode_video(video[i : i + 1], mask[i : i + 1])["video"] for i in range(len(valid))]
            )
            torch.testing.assert_close(ours, alone, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(ours, _literal_clip4clip_seq_transf(sd, frames, mask), atol=1e-5, rtol=1e-4)
            first_release = _literal_clip4clip_seq_transf(sd, frames, mask, first_release=True)
            if same:
                torch.testing.assert_close(ours, first_release, atol=1e-5, rtol=1e-4)
            else:
                assert (ours - first_release).abs().max() > 1e-3
