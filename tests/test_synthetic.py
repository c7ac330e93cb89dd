"""Synthetic temporal benchmark: determinism, MSR-VTT format, twin property, eval helpers, twin sampler."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch

import dataloaders
from dataloaders.base import TrainPairDataset
from dataloaders.options import DataOptions
from dataloaders.video_reader import FrameSampling, read_clip
from modules.tokenization_clip import get_tokenizer
from synthetic import generate as syn
from synthetic.twin_metrics import (
    TemporalReport,
    temporal_query_groups,
    temporal_recall_at_1,
    temporal_report,
    twin_accuracy,
    twin_query_pairs,
)
from synthetic.twin_sampler import TwinBatchSampler, twin_pairs_from_meta

REPO = Path(__file__).resolve().parents[1]
SMALL = syn.SyntheticConfig(seed=0, num_train=12, num_test=9)
ANNOTATIONS = (syn.DATA_JSON, syn.TRAIN_CSV, syn.TEST_CSV, syn.META_FILE)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return syn.generate(tmp_path_factory.mktemp("syn") / "a", SMALL, workers=1)


@pytest.fixture(scope="module")
def meta(dataset) -> dict:
    return syn.load_meta(dataset)


@pytest.fixture(scope="module")
def frames(dataset, meta) -> dict[str, np.ndarray]:
    return {v["video_id"]: syn.decode_mp4(dataset / "videos" / f"{v['video_id']}.mp4") for v in meta["videos"]}


def _videos_by_id(meta: dict) -> dict[str, dict]:
    return {v["video_id"]: v for v in meta["videos"]}


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_annotations_and_frames_via_cli(dataset, frames, tmp_path):
    """The CLI with 2 worker processes reproduces the in-process, 1-worker run exactly."""
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "synthetic.generate", "--out", str(out), "--seed", "0",
           "--num_train", str(SMALL.num_train), "--num_test", str(SMALL.num_test), "--workers", "2"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=120)
    for name in ANNOTATIONS:
        assert (out / name).read_bytes() == (dataset / name).read_bytes(), name
    for video_id, expected in frames.items():
        assert np.array_equal(syn.decode_mp4(out / "videos" / f"{video_id}.mp4"), expected), video_id


def test_other_seed_other_dataset(meta):
    other = syn.meta_json(syn.sample_clips(syn.SyntheticConfig(seed=1, num_train=12, num_test=9)), SMALL)
    assert [v["caption"] for v in other["videos"]] != [v["caption"] for v in meta["videos"]]


# ----------------------------------------------------------------------------- format


def test_msrvtt_json_format(dataset, meta):
    data = json.loads((dataset / syn.DATA_JSON).read_text())
    assert set(data) == {"info", "videos", "sentences"}
    videos = data["videos"]
    assert [v["video_id"] for v in videos] == [f"video{i}" for i in range(21)]
    assert [v["id"] for v in videos] == list(range(21))
    for v in videos:
        assert set(v) == {"category", "url", "video_id", "start time", "end time", "split", "id"}
        assert v["end time"] == pytest.approx(SMALL.num_frames / SMALL.fps)
    assert [v["split"] for v in videos] == ["train"] * 12 + ["test"] * 9
    sentences = data["sentences"]
    assert [s["sen_id"] for s in sentences] == list(range(21))
    assert all(set(s) == {"caption", "video_id", "sen_id"} for s in sentences)
    assert [s["caption"] for s in sentences] == [v["caption"] for v in meta["videos"]]


def test_csv_formats(dataset):
    train = pd.read_csv(dataset / syn.TRAIN_CSV)
    assert list(train.columns) == ["video_id"]
    assert list(train["video_id"]) == [f"video{i}" for i in range(12)]
    test = pd.read_csv(dataset / syn.TEST_CSV)
    assert list(test.columns) == ["key", "vid_key", "video_id", "sentence"]
    assert list(test["key"]) == [f"ret{i}" for i in range(9)]
    assert list(test["vid_key"]) == [f"msr{i}" for i in range(12, 21)]
    assert list(test["video_id"]) == [f"video{i}" for i in range(12, 21)]
    captions = {s["video_id"]: s["caption"] for s in json.loads((dataset / syn.DATA_JSON).read_text())["sentences"]}
    assert list(test["sentence"]) == [captions[v] for v in test["video_id"]]


def test_videos_h264_8fps_and_match_rendering(dataset, meta, frames):
    with av.open(str(dataset / "videos" / "video0.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert float(stream.average_rate) == SMALL.fps
    for v in meta["videos"]:
        spec = _spec(v)
        rendered = syn.render_clip(spec, SMALL.size, SMALL.event_frames).astype(int)
        decoded = frames[v["video_id"]]
        assert decoded.shape == (SMALL.num_frames, SMALL.size, SMALL.size, 3)
        # Only chroma subsampling at shape edges differs from the rendering.
        assert np.abs(decoded - rendered).mean() < 3.0


def _split_args(dataset: Path) -> DataOptions:
    return DataOptions(
        data_path=str(dataset / syn.DATA_JSON), features_path=str(dataset / "videos"),
        train_csv=str(dataset / syn.TRAIN_CSV), val_csv=str(dataset / syn.TEST_CSV),
        expand_msrvtt_sentences=True,
    )


def test_msrvtt_loader_reads_it_unchanged(dataset, meta):
    train = dataloaders.load_split("msrvtt", _split_args(dataset), "train")
    assert [v.video_id for v in train.videos] == [f"video{i}" for i in range(12)]
    assert all(Path(v.path).is_file() for v in train.videos)
    by_id = _videos_by_id(meta)
    assert list(train.captions) == [by_id[train.videos[i].video_id]["caption"] for i in train.caption_video]
    test = dataloaders.load_split("msrvtt", _split_args(dataset), "test")
    assert [v.video_id for v in test.videos] == meta["test_video_ids"]
    assert list(test.caption_video) == list(range(9))
    assert list(test.captions) == [by_id[v]["caption"] for v in meta["test_video_ids"]]


def test_synthetic_datatype_attaches_the_temporal_report(dataset, meta, tmp_path):
    test = dataloaders.load_split("synthetic", _split_args(dataset), "test")
    assert test.name == "synthetic test" and test.batch_sampler is None
    assert isinstance(test.report, TemporalReport) and test.report.name == "temporal"
    sim = np.random.default_rng(0).normal(size=(test.sentence_num, test.video_num))
    assert test.report(sim) == temporal_report(sim, meta, video_ids=test.video_ids)
    text = test.report.format(test.report(sim))
    assert "temporal twins direction" in text and "temporal twins order" in text
    # Not the meta file's test split (here: the first 3 test rows only): no report.
    short = tmp_path / "short_test.csv"
    short.write_text("".join((dataset / syn.TEST_CSV).read_text().splitlines(True)[:4]))
    other = dataloaders.load_split("synthetic", replace(_split_args(dataset), val_csv=str(short)), "test")
    assert other.report(np.zeros((3, 3))) is None
    # MSR-VTT's own loader knows nothing of twins.
    plain = dataloaders.load_split("msrvtt", _split_args(dataset), "test")
    assert plain.report is None and plain.batch_sampler is None


def test_synthetic_datatype_needs_the_meta_file(dataset, tmp_path):
    (tmp_path / syn.DATA_JSON).write_bytes((dataset / syn.DATA_JSON).read_bytes())
    with pytest.raises(FileNotFoundError, match="synthetic.generate"):
        dataloaders.load_split("synthetic", replace(_split_args(dataset), data_path=str(tmp_path / syn.DATA_JSON)),
                               "test")


def test_video_reader_reads_every_frame(dataset, frames):
    sampling = FrameSampling(max_frames=SMALL.num_frames, feature_framerate=SMALL.fps, image_resolution=SMALL.size)
    video, mask = read_clip(dataset / "videos" / "video0.mp4", sampling=sampling)
    assert tuple(video.shape) == (SMALL.num_frames, 3, SMALL.size, SMALL.size)
    assert list(np.asarray(mask)) == [1] * SMALL.num_frames
    # Frames come in file order: per-frame means follow the decoded frames' means.
    means = np.asarray(video).mean(axis=(1, 2, 3))
    expected = frames["video0"].astype(float).mean(axis=(1, 2, 3))
    assert np.corrcoef(means, expected)[0, 1] > 0.99


# ----------------------------------------------------------------------------- content and twins


def _spec(v: dict) -> syn.ClipSpec:
    return syn.ClipSpec(events=tuple(syn.Event(**e) for e in v["events"]), background=v["background"],
                        template=v["template"])


def test_captions_follow_grammar_and_contents_are_distinct(meta):
    keys = {}
    for v in meta["videos"]:
        spec = _spec(v)
        assert v["caption"] == spec.caption()
        for e in spec.events:
            assert f"a {e.colour} {e.shape} moves {e.direction}" in v["caption"]
        first, second = spec.events
        assert (first.colour, first.shape) != (second.colour, second.shape)
        keys[v["video_id"]] = (v["split"], spec.content_key())
    contents = [k for _, k in keys.values()]
    assert len(set(contents)) == len(contents)
    train = {k for s, k in keys.values() if s == "train"}
    assert not train & {k for s, k in keys.values() if s == "test"}


def test_twin_layout(meta):
    roles = [v["role"] for v in meta["videos"]]
    assert roles[12:] == ["base", "direction_twin", "order_twin"] * 3
    assert all(roles[i] == "base" and roles[i + 1] != "base" for i in range(0, 12, 2))
    assert len(meta["twin_pairs"]["train"]) == 6 and len(meta["twin_pairs"]["test"]) == 6
    by_id = _videos_by_id(meta)
    for split in ("train", "test"):
        for base, twin, kind in meta["twin_pairs"][split]:
            assert by_id[twin]["twin_of"] == base and by_id[twin]["role"] == f"{kind}_twin"
            assert by_id[base]["split"] == by_id[twin]["split"] == split


def test_twins_hold_the_same_frames_in_another_order(meta, frames):
    n = SMALL.event_frames
    by_id = _videos_by_id(meta)
    for split in ("train", "test"):
        for base, twin, kind in meta["twin_pairs"][split]:
            a, b = frames[base], frames[twin]
            if kind == "order":
                expected = np.concatenate([a[n:], a[:n]])
                caption = syn.TEMPLATES[by_id[base]["template"]].format(
                    a=_spec(by_id[base]).events[1].phrase(), b=_spec(by_id[base]).events[0].phrase())
                assert by_id[twin]["caption"] == caption
            else:
                changed = [i for i in range(2) if by_id[base]["events"][i] != by_id[twin]["events"][i]]
                assert len(changed) == 1
                which = changed[0]
                expected = a.copy()
                expected[which * n:(which + 1) * n] = a[which * n:(which + 1) * n][::-1]
                words = by_id[base]["caption"].split(), by_id[twin]["caption"].split()
                diff = [(x, y) for x, y in zip(*words, strict=True) if x != y]
                assert len(diff) == 1 and syn.OPPOSITE[diff[0][0].rstrip(",")] == diff[0][1].rstrip(",")
            assert np.array_equal(b, expected), (base, twin, kind)
            # The same multiset of frames, hence the same frame average, bit for bit.
            assert np.array_equal(a.mean(axis=0), b.mean(axis=0))


def test_motion_spans_the_frame_in_the_stated_direction(meta, frames):
    n, size = SMALL.event_frames, SMALL.size
    for v in meta["videos"]:
        clip = frames[v["video_id"]].astype(int)
        for i, event in enumerate(v["events"]):
            fg = np.abs(clip[i * n:(i + 1) * n] - v["background"]).sum(-1) > 60  # [n, H, W]
            ys, xs = np.indices((size, size))
            cx = np.array([xs[f].mean() for f in fg]) / size
            cy = np.array([ys[f].mean() for f in fg]) / size
            along = {"left": -cx, "right": cx, "up": -cy, "down": cy}[event["direction"]]
            assert np.all(np.diff(along) > 0), (v["video_id"], event)
            assert along[-1] - along[0] > 0.4


def test_config_validation():
    with pytest.raises(ValueError, match="even"):
        syn.SyntheticConfig(num_train=3).validate()
    with pytest.raises(ValueError, match="multiple of 3"):
        syn.SyntheticConfig(num_test=10).validate()
    with pytest.raises(ValueError, match="size"):
        syn.SyntheticConfig(size=33).validate()


# ----------------------------------------------------------------------------- eval helpers


def test_query_groups(meta):
    groups = temporal_query_groups(meta)
    by_row = [_videos_by_id(meta)[v]["role"] for v in meta["test_video_ids"]]
    assert [by_row[i] for i in groups["direction"]] == ["base", "direction_twin"] * 3
    assert [by_row[i] for i in groups["order"]] == ["base", "order_twin"] * 3


def _bag_of_frames_sim(meta, frames, order_aware: bool) -> np.ndarray:
    """Scores of a toy model: caption i vs video j from frame features, with or without order."""
    ids = meta["test_video_ids"]
    feats = np.stack([frames[v].reshape(SMALL.num_frames, -1).astype(np.float64) for v in ids])
    if order_aware:  # a "perfect" model: its own clip's exact frame sequence matches best
        video = feats.reshape(len(ids), -1)
        return -((video[:, None] - video[None]) ** 2).mean(-1)
    pooled = feats.mean(axis=1)
    text = pooled + np.random.default_rng(0).normal(0, 1e-3, pooled.shape)  # caption ~ its clip's content
    return -((text[:, None] - pooled[None]) ** 2).mean(-1)


def test_frame_averaging_ties_on_twins(meta, frames):
    sim = _bag_of_frames_sim(meta, frames, order_aware=False)
    for kind in ("direction", "order"):
        assert twin_accuracy(sim, meta, kind) == 0.5
        assert temporal_recall_at_1(sim, meta, kind) == 0.0
    report = temporal_report(sim, meta)
    assert report["direction"] == {"queries": 6, "R1": 0.0, "twin_acc": 50.0}


def test_order_aware_model_wins_on_twins(meta, frames):
    sim = _bag_of_frames_sim(meta, frames, order_aware=True)
    for kind in ("direction", "order"):
        assert twin_accuracy(sim, meta, kind) == 1.0
        assert temporal_recall_at_1(sim, meta, kind) == 100.0
    # A permuted gallery gives the same answers when its order is passed.
    perm = np.random.default_rng(1).permutation(9)
    ids = [meta["test_video_ids"][i] for i in perm]
    assert twin_accuracy(sim[:, perm], meta, "order", video_ids=ids) == 1.0
    assert twin_accuracy(-sim, meta, "order") == 0.0  # own video scored below its twin


def test_twin_query_pairs_and_nan(meta):
    q = twin_query_pairs(meta, "direction")
    assert q.shape == (6, 3) and np.array_equal(q[:, 0], q[:, 1])
    sim = np.zeros((9, 9))
    sim[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        twin_accuracy(sim, meta, "order")
    with pytest.raises(ValueError, match="kind"):
        twin_accuracy(np.zeros((9, 9)), meta, "colour")


# ----------------------------------------------------------------------------- twin sampler


def _pairs(n: int) -> tuple[list[str], list[tuple[str, str]]]:
    videos = [f"video{i}" for i in range(2 * n)]
    return videos, [(videos[2 * i], videos[2 * i + 1]) for i in range(n)]


def _twin_of(pairs):
    twin = {}
    for a, b in pairs:
        twin[a], twin[b] = b, a
    return twin


def test_sampler_batches_hold_twin_halves(meta):
    videos = [f"video{i}" for i in range(12)]
    pairs = twin_pairs_from_meta(meta, "train")
    sampler = TwinBatchSampler(videos, pairs, batch_size=4, num_replicas=1, rank=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    twin = _twin_of(pairs)
    for batch in batches:
        k = len(batch) // 2
        assert len(set(batch)) == len(batch) == 4
        assert all(twin[videos[a]] == videos[b] for a, b in zip(batch[:k], batch[k:], strict=True))
    assert sorted(i for b in batches for i in b) == list(range(12))


def test_sampler_distributed_disjoint_and_epochs():
    videos, pairs = _pairs(21)
    ranks = [TwinBatchSampler(videos, pairs, batch_size=6, num_replicas=2, rank=r, seed=3) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3  # 21 pairs, 6 per global step, last 3 dropped
    seen = []
    for step in zip(*[list(s) for s in ranks], strict=True):
        assert not set(step[0]) & set(step[1])
        seen += step[0] + step[1]
    assert len(seen) == len(set(seen)) == 36
    first = list(ranks[0])
    assert list(ranks[0]) == first
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != first


def test_sampler_keep_last_and_multi_caption_items():
    videos, pairs = _pairs(5)
    items = [v for v in videos for _ in range(2)]  # two captions per video
    sampler = TwinBatchSampler(items, pairs, batch_size=4, num_replicas=1, rank=0, drop_last=False)
    batches = list(sampler)
    assert len(batches) == 3
    twin = _twin_of(pairs)
    for batch in batches:
        assert len({items[i] for i in batch}) == 4
        assert all(twin[items[a]] == items[b] for a, b in zip(batch[:2], batch[2:], strict=True))
    covered = {items[i] for b in batches for i in b}
    assert covered == set(videos)


def test_sampler_rejects_bad_input():
    videos, pairs = _pairs(4)
    with pytest.raises(ValueError, match="even"):
        TwinBatchSampler(videos, pairs, batch_size=3, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="one pair only"):
        TwinBatchSampler(videos, pairs + [(videos[0], videos[3])], batch_size=2, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="no item"):
        TwinBatchSampler(videos[:-1], pairs, batch_size=2, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="rank"):
        TwinBatchSampler(videos, pairs, batch_size=2, num_replicas=2, rank=2)


def test_sampler_through_the_training_dataset(dataset, meta):
    """Real pipeline: synthetic loader -> TrainPairDataset -> DataLoader(batch_sampler=the split's own sampler)."""
    split = dataloaders.load_split("synthetic", _split_args(dataset), "train")
    assert split.report is None and split.batch_sampler is not None
    sampling = FrameSampling(max_frames=SMALL.num_frames, feature_framerate=SMALL.fps, image_resolution=SMALL.size)
    data = TrainPairDataset(split, get_tokenizer(), sampling, max_words=32)
    sampler = split.batch_sampler(data.pair_video_ids, batch_size=4, num_replicas=1, rank=0, seed=0)
    assert isinstance(sampler, TwinBatchSampler)
    twin = _twin_of(twin_pairs_from_meta(meta))
    batches = list(torch.utils.data.DataLoader(data, batch_sampler=sampler))
    assert len(batches) == 3
    for batch in batches:
        ids = [split.videos[i].video_id for i in batch["video_index"].tolist()]
        assert ids[2:] == [twin[v] for v in ids[:2]]
        video = batch["video"].double()
        assert torch.all(batch["video_mask"] == 1)
        for k in range(2):  # a twin pair: same frames in another order
            assert not torch.equal(video[k], video[k + 2])
            torch.testing.assert_close(video[k].mean(0), video[k + 2].mean(0), rtol=0, atol=1e-6)
