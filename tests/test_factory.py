"""The model factory: specs as JSON, rebuilding a saved model from its checkpoint folder alone."""

from __future__ import annotations

import json

import pytest
import torch

from engine.run_folder import save_checkpoint
from modules.factory import CLIPSource, InternVideoSpec, ModelSpec, create_model, spec_from_checkpoint
from modules.modeling import RetrievalConfig
from modules.weights import CheckpointError
from tests.tiny_clip import random_captions, random_video, tiny_clip_state_dict


def _spec(tmp_path, **head) -> ModelSpec:
    clip_file = tmp_path / "tiny_clip.pt"
    torch.save(tiny_clip_state_dict(seed=0), clip_file)
    return ModelSpec(clip=CLIPSource(name=str(clip_file)), head=RetrievalConfig(**head), seed=3)


def _similarity(model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    ids, mask = random_captions(gen, [2, 6], 16)
    video, video_mask = random_video(gen, [3, 2], 3)
    model.eval()
    with torch.no_grad():
        return model.similarity(model.encode_text(ids, mask), model.encode_video(video, video_mask))


def test_spec_survives_json():
    spec = ModelSpec(clip=CLIPSource(config={"embed_dim": 64}, cache_dir="/c"),
                     head=RetrievalConfig(sim_header="tightTransf", cross_num_hidden_layers=2),
                     init_model="run/checkpoints/epoch_1",
                     internvideo=InternVideoSpec(pretrained_path="iv.ckpt", mergeclip=True, t_size=4), seed=9)
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.head.loose_type is False


def test_checkpoint_folder_rebuilds_the_model_without_other_files(tmp_path):
    spec = _spec(tmp_path, sim_header="seqTransf", cross_num_hidden_layers=1, freeze_layer_num=1)
    torch.manual_seed(0)
    model = create_model(spec)
    with torch.no_grad():
        model.frame_position_embeddings.weight.add_(1.0)  # as if trained
    folder = save_checkpoint(tmp_path / "run", model, epoch=1, step=1, save_training_state=False, model_spec=spec)
    (tmp_path / "tiny_clip.pt").unlink()  # the fine-tuned weights carry their CLIP
    saved = spec_from_checkpoint(folder)
    assert saved.init_model == str(folder) and saved.head == spec.head
    rebuilt = create_model(saved)
    assert torch.equal(_similarity(rebuilt), _similarity(model))
    trainable = {n for n, p in rebuilt.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}
    assert "clip.transformer.resblocks.0.attn.in_proj_weight" not in trainable


def test_checkpoint_without_spec_is_refused(tmp_path):
    spec = _spec(tmp_path)
    folder = save_checkpoint(tmp_path / "run", create_model(spec), epoch=1, step=1, save_training_state=False)
    with pytest.raises(CheckpointError, match="model_spec"):
        spec_from_checkpoint(folder)
