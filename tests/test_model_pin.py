"""Pins the similarity matrices of tiny models built the way a run builds them.

Each case parses a command line with the entry script's parser, builds the model as a run
does and scores 3 captions against 3 videos drawn from fixed seeds. The expected values were
recorded before the model factory was written (issue 9): a refactor of how models are built
or how weights are read must leave them unchanged.

Unchanged means equal up to float32 rounding, not bit for bit. One CPU thread fixes the order
of the reductions, but the matmul kernels are chosen by the CPU (AVX2 or AVX-512/AMX): on a
Sapphire Rapids runner every case differed from the recording by at most 3.1e-6 (values up to
4), and forcing AVX2 did not change that. The smallest real change we tried, LayerNorm's eps
from 1e-5 to 1e-6, moves the outputs by 3.3e-2, so an absolute tolerance of 2e-5 tells a
changed model from another CPU with four orders of magnitude to spare.
"""

from __future__ import annotations

import json

import pytest
import torch

import main_task_retrieval
from engine.builders import build_model
from tests.tiny_clip import random_captions, random_video, tiny_clip_state_dict

TINY_CLIP_CONFIG = dict(embed_dim=64, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                        context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                        transformer_layers=2)

# name -> (extra command-line arguments, whether the case loads fine-tuned weights)
CASES = {
    "meanP": ("--sim_header meanP --loose_type", False),
    "meanP_3d_l2": ("--sim_header meanP --loose_type --linear_patch 3d --frame_norm l2", False),
    "seqTransf_random_clip": ("--sim_header seqTransf --loose_type --cross_num_hidden_layers 1 --clip_config {config}",
                              False),
    "seqTransf_finetuned": ("--sim_header seqTransf --loose_type --cross_num_hidden_layers 1", True),
    "tightTransf": ("--sim_header tightTransf --cross_num_hidden_layers 1", False),
    "meanP_wti": ("--sim_header meanP --loose_type --interaction wti --wti_arch 2", False),
    "evl": ("--clip_evl --max_words 77", False),
    "evl_finetuned": ("--clip_evl --max_words 77", True),
}

# Largest difference that float32 kernels of another CPU may make (see the module docstring).
CPU_ROUNDING = 2e-5

EXPECTED = {  # recorded on commit cd5a3a3, before the model factory
    'evl': [
        [-0.6551483869552612, -0.9822217226028442, -1.79379141330719],
        [-1.717193841934204, -1.8604063987731934, -2.1821720600128174],
        [-1.7131874561309814, -1.2755067348480225, -1.6668537855148315],
    ],
    'evl_finetuned': [
        [-2.872668504714966, -3.3083767890930176, -4.059113502502441],
        [-1.842140555381775, -2.235518217086792, -2.4233367443084717],
        [-0.8360904455184937, -1.0510743856430054, -1.7219645977020264],
    ],
    'meanP': [
        [-0.6138396263122559, -0.9704064130783081, -1.7810096740722656],
        [-1.5888376235961914, -1.7296850681304932, -2.1323866844177246],
        [-1.6743342876434326, -1.1763107776641846, -1.6139237880706787],
    ],
    'meanP_3d_l2': [
        [-0.5980100631713867, -0.9316054582595825, -1.7742960453033447],
        [-1.6047368049621582, -1.6671741008758545, -2.134793758392334],
        [-1.7112106084823608, -1.2101271152496338, -1.6174118518829346],
    ],
    'meanP_wti': [
        [0.613499641418457, 0.9343880414962769, 0.16754013299942017],
        [0.4501250088214874, 0.6769700050354004, -0.006904133595526218],
        [1.1864216327667236, 1.5801693201065063, 1.3146228790283203],
    ],
    'seqTransf_finetuned': [
        [1.842768907546997, 3.0187954902648926, 2.246955156326294],
        [0.9524261355400085, 1.6510833501815796, 0.7061578035354614],
        [0.7754899263381958, 0.9072154760360718, 0.22520366311073303],
    ],
    'seqTransf_random_clip': [
        [1.849351167678833, 1.7924433946609497, 1.987156629562378],
        [-1.4705709218978882, -1.9143342971801758, -1.4036895036697388],
        [0.49058860540390015, 0.12226217985153198, 0.08144336938858032],
    ],
    'tightTransf': [
        [0.015225895680487156, 0.012588201090693474, 0.01502957846969366],
        [-0.005128050688654184, -0.007910833694040775, -0.004519813694059849],
        [0.008543603122234344, 0.006530108395963907, 0.01078620832413435],
    ],
}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _args(tmp_path, extra: str, init_model=None):
    clip_file = tmp_path / "tiny_clip.pt"
    if not clip_file.exists():
        torch.save(tiny_clip_state_dict(seed=0), clip_file)
    argv = ["--do_eval", "--output_dir", str(tmp_path / "out"), "--pretrained_clip_name", str(clip_file),
            "--max_frames", "4", "--max_words", "16", "--seed", "7",
            "--clip_weights", "fp32"]  # recorded in fp32; auto would pick fp16 on a CUDA machine
    argv += extra.format(config=json.dumps(TINY_CLIP_CONFIG, separators=(",", ":"))).split()
    if init_model is not None:
        argv += ["--init_model", str(init_model)]
    return main_task_retrieval.get_args(argv)


def _build(args):
    torch.manual_seed(args.seed)  # as the run does (seed_everything) before building the model
    return build_model(args)


def _finetuned_file(tmp_path, args) -> str:
    """A CLIP4Clip-style pytorch_model.bin: the model's weights moved away from their start."""
    model = _build(args)
    gen = torch.Generator().manual_seed(3)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    return str(path)


def _similarity(model, max_words: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    ids, mask = random_captions(gen, [3, 7, 12], max_words)
    video, video_mask = random_video(gen, [4, 4, 4], 4)
    model.eval()
    with torch.no_grad():
        return model.similarity(model.encode_text(ids, mask), model.encode_video(video, video_mask))


def similarity_of_case(tmp_path, name: str) -> torch.Tensor:
    extra, finetuned = CASES[name]
    args = _args(tmp_path, extra)
    if finetuned:
        args = _args(tmp_path, extra, init_model=_finetuned_file(tmp_path, args))
    return _similarity(_build(args), args.max_words)


@pytest.mark.parametrize("name", sorted(CASES))
def test_similarity_is_pinned(tmp_path, one_thread, name):
    sim = similarity_of_case(tmp_path, name)
    expected = torch.tensor(EXPECTED[name], dtype=torch.float32)
    assert sim.dtype == torch.float32 and sim.shape == (3, 3)
    torch.testing.assert_close(sim, expected, atol=CPU_ROUNDING, rtol=0, msg=lambda report: (
        f"{name}: outputs changed. {report}\n{sim.tolist()}\nexpected\n{expected.tolist()}"))
