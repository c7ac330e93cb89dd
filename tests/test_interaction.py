"""DRL token-wise interaction (ti / wti) against a direct per-pair loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules.interaction import make_weight_fc, ti_similarity, wti_similarity


def _inputs(seed: int = 0, nt: int = 3, nv: int = 4, length: int = 5, frames: int = 6, dim: int = 8):
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(nt, length, dim, generator=gen)
    video = torch.randn(nv, frames, dim, generator=gen)
    text_mask = torch.zeros(nt, length, dtype=torch.long)
    for i, n in enumerate([5, 2, 3][:nt]):
        text_mask[i, :n] = 1
    video_mask = torch.zeros(nv, frames, dtype=torch.long)
    for i, n in enumerate([6, 1, 4, 3][:nv]):
        video_mask[i, :n] = 1
    return text, text_mask, video, video_mask


def _loop_reference(text, text_mask, video, video_mask, text_fc=None, video_fc=None) -> torch.Tensor:
    """Each pair on its own: only real tokens / frames, cosine, max, (weighted) mean."""
    out = torch.zeros(text.shape[0], video.shape[0])
    for a in range(text.shape[0]):
        t = text[a][text_mask[a].bool()]
        for b in range(video.shape[0]):
            v = video[b][video_mask[b].bool()]
            sim = torch.stack([torch.stack([torch.cosine_similarity(ti, vj, dim=0) for vj in v]) for ti in t])
            t_best, v_best = sim.max(dim=1).values, sim.max(dim=0).values
            if text_fc is None:
                t2v, v2t = t_best.mean(), v_best.mean()
            else:
                t2v = (torch.softmax(text_fc(t).squeeze(-1), dim=0) * t_best).sum()
                v2t = (torch.softmax(video_fc(v).squeeze(-1), dim=0) * v_best).sum()
            out[a, b] = (t2v + v2t) / 2
    return out


def test_ti_matches_loop():
    text, tm, video, vm = _inputs()
    torch.testing.assert_close(
        ti_similarity(text, tm, video, vm), _loop_reference(text, tm, video, vm), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("arch", [1, 2, 3])
def test_wti_matches_loop(arch):
    torch.manual_seed(arch)
    text, tm, video, vm = _inputs(seed=arch)
    text_fc, video_fc = make_weight_fc(arch, 8, init_std=0.5), make_weight_fc(arch, 8, init_std=0.5)
    got = wti_similarity(text, tm, video, vm, text_fc, video_fc)
    torch.testing.assert_close(got, _loop_reference(text, tm, video, vm, text_fc, video_fc), atol=1e-5, rtol=1e-5)


def test_padding_content_is_ignored():
    text, tm, video, vm = _inputs()
    noisy_text, noisy_video = text.clone(), video.clone()
    noisy_text[~tm.bool()] = 100.0
    noisy_video[~vm.bool()] = -100.0
    fc_t, fc_v = make_weight_fc(2, 8), make_weight_fc(2, 8)
    torch.testing.assert_close(ti_similarity(noisy_text, tm, noisy_video, vm), ti_similarity(text, tm, video, vm))
    torch.testing.assert_close(
        wti_similarity(noisy_text, tm, noisy_video, vm, fc_t, fc_v), wti_similarity(text, tm, video, vm, fc_t, fc_v)
    )


def test_negative_similarities_do_not_pick_padding():
    """The published code multiplied padding to 0 before the max; here padding never wins."""
    text = torch.tensor([[[1.0, 0.0]]])
    video = torch.tensor([[[-1.0, 0.1], [0.0, 0.0]]])  # second frame is padding
    score = ti_similarity(text, torch.ones(1, 1), video, torch.tensor([[1, 0]]))
    assert score.item() < -0.9


def test_chunked_equals_unchunked_and_grads_flow():
    text, tm, video, vm = _inputs()
    text.requires_grad_(True)
    full = ti_similarity(text, tm, video, vm)
    chunked = ti_similarity(text, tm, video, vm, max_elements=1)
    torch.testing.assert_close(chunked, full)
    chunked.sum().backward()
    assert text.grad is not None and torch.isfinite(text.grad).all()
    assert torch.count_nonzero(text.grad[1, 2:]) == 0  # padded tokens get no gradient


def test_make_weight_fc_names_and_validation():
    names = {arch: [n for n, _ in make_weight_fc(arch, 16).named_parameters()] for arch in (1, 2, 3)}
    assert names[1] == ["weight", "bias"]
    assert names[2] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert names[3] == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    fc = make_weight_fc(3, 16)
    assert fc[4].weight.shape == (1, 16) and torch.count_nonzero(fc[0].bias) == 0
    assert isinstance(make_weight_fc(1, 4, init_std=None), nn.Linear)
    with pytest.raises(ValueError):
        make_weight_fc(0, 16)


def test_invalid_masks():
    text, tm, video, vm = _inputs()
    bad = vm.clone()
    bad[0] = 0
    with pytest.raises(ValueError, match="video_mask"):
        ti_similarity(text, tm, video, bad)
    with pytest.raises(ValueError, match="text_mask"):
        ti_similarity(text, tm[:, :3], video, vm)
