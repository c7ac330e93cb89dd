"""Dataset modules (annotation parsing, splits, missing videos, malformed files) and base datasets."""

from __future__ import annotations

import json
import logging
import math
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dataloaders import DATASETS, load_split
from dataloaders import lsmdc as lsmdc_module
from dataloaders.base import (
    MAX_REPLACEMENT_ATTEMPTS,
    AnnotationError,
    MissingVideosError,
    RetrievalSplit,
    TextDataset,
    TrainPairDataset,
    VideoDataset,
    VideoIndex,
    VideoItem,
    clear_video_index_cache,
    video_index,
)
from dataloaders.video_reader import FrameSampling, VideoDecodeError
from modules.tokenization_clip import get_tokenizer
from tests import annotation_fixtures as fx

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_index():
    clear_video_index_cache()
    yield
    clear_video_index_cache()


def write(name: str, tmp_path: Path):
    return fx.WRITERS[name](tmp_path)


# --------------------------------------------------------------------------- counts per dataset

COUNT_CASES = [
    ("msrvtt", "test", fx.MSRVTT_EXPECTED["test"]),
    ("msrvtt", "val", fx.MSRVTT_EXPECTED["test"]),
    ("msvd", "train", fx.MSVD_EXPECTED["train"]),
    ("msvd", "val", fx.MSVD_EXPECTED["val"]),
    ("msvd", "test", fx.MSVD_EXPECTED["test"]),
    ("lsmdc", "train", fx.LSMDC_EXPECTED["train"]),
    ("lsmdc", "val", fx.LSMDC_EXPECTED["val"]),
    ("lsmdc", "test", fx.LSMDC_EXPECTED["test"]),
    ("activity", "train", fx.ANET_EXPECTED["train"]),
    ("activity", "val", fx.ANET_EXPECTED["test"]),
    ("activity", "test", fx.ANET_EXPECTED["test"]),
    ("didemo", "train", fx.DIDEMO_EXPECTED["train"]),
    ("didemo", "val", fx.DIDEMO_EXPECTED["val"]),
    ("didemo", "test", fx.DIDEMO_EXPECTED["test"]),
    ("vatex", "train", fx.VATEX_EXPECTED["train"]),
    ("vatex", "test", fx.VATEX_EXPECTED["test"]),
]


@pytest.mark.parametrize("name,subset,expected", COUNT_CASES, ids=[f"{n}-{s}" for n, s, _ in COUNT_CASES])
def test_split_counts(tmp_path, name, subset, expected):
    split = load_split(name, write(name, tmp_path), subset)
    assert split.video_num == expected["videos"] == len(split.videos)
    assert split.sentence_num == expected["captions"] == len(split.captions)
    assert split.is_grouped
    if "cut_off_points" in expected:
        assert split.cut_off_points == expected["cut_off_points"]
    assert split.cut_off_points[-1] == split.sentence_num
    assert split.multi_sentence_per_video == (split.sentence_num != split.video_num)
    assert all(v.path.is_file() for v in split.videos)
    assert len({v.video_id for v in split.videos}) == split.video_num
    if "paragraph" in expected:
        assert split.captions[0] == expected["paragraph"]


def test_registry_names_and_unknown():
    assert set(DATASETS) == {"msrvtt", "msvd", "lsmdc", "activity", "didemo", "vatex", "synthetic"}
    assert [n for n, e in DATASETS.items() if e.has_val_split] == ["msvd", "lsmdc", "didemo"]
    with pytest.raises(ValueError, match="unknown --datatype"):
        load_split("youcook", fx.make_args(), "test")
    with pytest.raises(ValueError, match="subset"):
        load_split("msvd", fx.make_args(data_path="x", features_path="y"), "dev")


def test_registry_import_is_light():
    code = ("import sys, dataloaders; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(len(dataloaders.DATASETS))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "7"


# --------------------------------------------------------------------------- MSR-VTT


def test_msrvtt_expand_sentences_one_item_per_pair(tmp_path):
    args = write("msrvtt", tmp_path)
    args = replace(args, expand_msrvtt_sentences=True)
    split = load_split("msrvtt", args, "train")
    assert split.sample_unit == "caption"
    assert (split.video_num, split.sentence_num) == (4, 12)
    ds = TrainPairDataset(split, get_tokenizer(), FrameSampling(), 16)
    assert len(ds) == 12
    assert ds.pair_video_ids == [v for v in fx.MSRVTT_TRAIN for _ in range(3)]
    assert [c[0] for c in ds.pair_captions] == [c for v in fx.MSRVTT_TRAIN for c in fx.MSRVTT_CAPTIONS[v]]


def test_msrvtt_without_expand_one_random_caption_per_video(tmp_path):
    split = load_split("msrvtt", write("msrvtt", tmp_path), "train")
    assert split.sample_unit == "video"
    ds = TrainPairDataset(split, get_tokenizer(), FrameSampling(), 16)
    assert len(ds) == 4
    assert ds.pair_video_ids == fx.MSRVTT_TRAIN
    assert ds.pair_captions[1] == fx.MSRVTT_CAPTIONS["video1"]
    torch.manual_seed(0)
    drawn = {ds._caption(1) for _ in range(60)}
    assert drawn == set(fx.MSRVTT_CAPTIONS["video1"])


def test_msrvtt_data_path_folder_and_webm_fallback(tmp_path):
    args = write("msrvtt", tmp_path)
    args = replace(args, data_path=str(Path(args.data_path).parent))
    webm = Path(args.features_path) / "video1.webm"
    (Path(args.features_path) / "video1.mp4").rename(webm)
    split = load_split("msrvtt", args, "train")
    assert split.videos[1].path == webm


def test_msrvtt_train_video_without_sentences_is_skipped_and_logged(tmp_path, caplog):
    args = write("msrvtt", tmp_path)
    with open(args.train_csv, "a") as f:
        f.write("video99\n")
    with caplog.at_level(logging.WARNING):
        split = load_split("msrvtt", args, "train")
    assert split.video_num == 4
    assert "1 listed videos have no captions" in caplog.text and "video99" in caplog.text


# --------------------------------------------------------------------------- missing videos


def first_video_of(name: str, args, subset: str) -> tuple[str, Path, int, int]:
    split = load_split(name, args, subset)
    clear_video_index_cache()
    v = split.videos[0]
    return v.video_id, v.path, split.video_num, split.sentence_num


@pytest.mark.parametrize("name", sorted(fx.WRITERS))
def test_missing_video_error_and_allow(tmp_path, caplog, name):
    args = write(name, tmp_path)
    vid, path, n_videos, n_captions = first_video_of(name, args, "test")
    n_own = int(load_split(name, args, "test").captions_per_video[0])
    clear_video_index_cache()
    path.unlink()
    with pytest.raises(MissingVideosError) as err:
        load_split(name, args, "test")
    msg = str(err.value)
    assert f"1 of {n_videos} videos" in msg and vid in msg and "--allow_missing_videos" in msg
    clear_video_index_cache()
    args = replace(args, allow_missing_videos=True)
    with caplog.at_level(logging.WARNING):
        split = load_split(name, args, "test")
    assert split.video_num == n_videos - 1
    assert split.sentence_num == n_captions - n_own
    assert vid not in split.video_ids
    assert "dropped" in caplog.text and vid in caplog.text


def test_missing_videos_message_lists_count_and_first_ten(tmp_path):
    anns = tmp_path / "anns"
    anns.mkdir()
    ids = [f"video{i}" for i in range(12)]
    rows = "".join(f"ret{i},msr{i},{v},caption {i}\n" for i, v in enumerate(ids))
    (anns / "test.csv").write_text("key,vid_key,video_id,sentence\n" + rows)
    args = fx.make_args(val_csv=str(anns / "test.csv"), features_path=str(tmp_path / "none"))
    with pytest.raises(MissingVideosError) as err:
        load_split("msrvtt", args, "test")
    msg = str(err.value)
    assert "12 of 12 videos" in msg
    assert all(v in msg for v in ids[:10]) and "video10" not in msg and "video11" not in msg


# --------------------------------------------------------------------------- malformed annotations


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def break_msrvtt_column(args):
    p = Path(args.val_csv)
    p.write_text(p.read_text().replace("sentence", "caption", 1))
    return "test", p, "sentence"


def break_msrvtt_empty_sentence(args):
    p = Path(args.val_csv)
    lines = p.read_text().splitlines()
    lines[2] = ",".join(lines[2].split(",")[:3]) + ",  "
    p.write_text("\n".join(lines) + "\n")
    return "test", p, "line 3"


def break_msrvtt_json(args):
    p = Path(args.data_path)
    p.write_text(p.read_text()[:-5])
    return "train", p, "not valid JSON"


def break_msrvtt_sentence_key(args):
    p = Path(args.data_path)
    _edit_json(p, lambda d: d["sentences"][3].pop("caption"))
    return "train", p, "sentences[3]"


def break_msvd_caption(args):
    p = Path(args.data_path) / "raw-captions.pkl"
    data = pickle.loads(p.read_bytes())
    data["00jrXRMlZOY_0_10"][2] = []
    p.write_bytes(pickle.dumps(data))
    return "test", p, "00jrXRMlZOY_0_10' caption 2"


def break_lsmdc_fields(args):
    p = Path(args.data_path) / fx.LSMDC_FILES["test"]
    lines = p.read_text().splitlines()
    lines[1] = "\t".join(lines[1].split("\t")[:5])
    p.write_text("\n".join(lines) + "\n")
    return "test", p, "line 2"


def break_lsmdc_sentence(args):
    p = Path(args.data_path) / fx.LSMDC_FILES["train"]
    lines = p.read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:5] + [" "])
    p.write_text("\n".join(lines) + "\n")
    return "train", p, "line 3"


def break_activity_sentences(args):
    p = Path(args.data_path) / "val_1.json"
    _edit_json(p, lambda d: d["v_ddd"].pop("sentences"))
    return "test", p, "v_ddd"


def break_activity_ids(args):
    p = Path(args.data_path) / "train_ids.json"
    p.write_text(json.dumps({"v_aaa": 1}))
    return "train", p, "list of video ids"


def break_didemo_description(args):
    p = Path(args.data_path) / "test_data.json"
    _edit_json(p, lambda d: d[1].pop("description"))
    return "test", p, "entry [1]"


def break_vatex_encap(args):
    p = Path(args.data_path) / "vatex_validation_v1.0.json"
    _edit_json(p, lambda d: d[1].update(enCap=[]))
    return "test", p, "entry [1]"


def break_vatex_caption_text(args):
    p = Path(args.data_path) / "vatex_validation_v1.0.json"
    _edit_json(p, lambda d: d[0]["enCap"].__setitem__(4, ""))
    return "test", p, "enCap[4]"


MALFORMED = [
    ("msrvtt", break_msrvtt_column),
    ("msrvtt", break_msrvtt_empty_sentence),
    ("msrvtt", break_msrvtt_json),
    ("msrvtt", break_msrvtt_sentence_key),
    ("msvd", break_msvd_caption),
    ("lsmdc", break_lsmdc_fields),
    ("lsmdc", break_lsmdc_sentence),
    ("activity", break_activity_sentences),
    ("activity", break_activity_ids),
    ("didemo", break_didemo_description),
    ("vatex", break_vatex_encap),
    ("vatex", break_vatex_caption_text),
]


@pytest.mark.parametrize("name,breaker", MALFORMED, ids=[b.__name__ for _, b in MALFORMED])
def test_malformed_annotation_names_file_and_row(tmp_path, name, breaker):
    args = write(name, tmp_path)
    subset, path, where = breaker(args)
    with pytest.raises(AnnotationError) as err:
        load_split(name, args, subset)
    assert str(path) in str(err.value)
    assert where in str(err.value)


def test_missing_annotation_file_names_it(tmp_path):
    args = write("didemo", tmp_path)
    (Path(args.data_path) / "val_data.json").unlink()
    with pytest.raises(FileNotFoundError, match="val_data.json"):
        load_split("didemo", args, "val")


# --------------------------------------------------------------------------- paragraphs, paths, walking


def test_activitynet_paragraph_whole_video_and_both_file_namings(tmp_path, caplog):
    args = write("activity", tmp_path)
    with caplog.at_level(logging.WARNING):
        test = load_split("activity", args, "test")
    train = load_split("activity", args, "train")
    assert train.captions == ["A man walks in. He sits down.", "Kids play football."]
    assert test.captions[0] == "A woman dances. Then she bows. People clap."
    assert test.video_ids == ["v_--ccc", "v_ddd"]
    # [0, ceil(duration)] as the published loaders pass it (durations 10 n + 0.5 in the fixture)
    assert all(v.start == 0.0 and v.end == math.ceil(v.end) and v.end % 10 == 1 for v in train.videos + test.videos)
    assert train.videos[0].path.name == "v_aaa.mp4"  # InternVideo naming under train/
    assert test.videos[0].path.name == "--ccc.mp4"  # CLIP4Clip naming under val/
    assert "v_eee" in caplog.text


def test_didemo_paragraph_window_and_extensions(tmp_path):
    split = load_split("didemo", write("didemo", tmp_path), "test")
    assert split.captions == ["first we see a tree camera pans right a bird flies", "the baby crawls",
                              "water splashes"]
    assert all((v.start, v.end) == (0.0, 31.0) for v in split.videos)
    for v in split.videos:
        assert v.path.name == fx.DIDEMO_FILES[v.video_id]
    train = load_split("didemo", write("didemo", tmp_path / "b"), "train")
    assert train.captions[0] == "a man on a bike bike turns left"
    assert train.videos[1].path.name.endswith(".m4v.mp4")


def test_vatex_path_field_default_and_url(tmp_path):
    args = write("vatex", tmp_path)
    split = load_split("vatex", args, "train")
    assert split.videos[0].path == Path(args.features_path) / "nested" / f"{fx.VATEX_TRAIN[0]}.mp4"
    assert split.videos[1].path == Path(args.features_path) / f"{fx.VATEX_TRAIN[1]}.mp4"
    assert "notlisted" not in " ".join(split.video_ids)
    # InternVideo's ceph copies: s3:// paths cannot be read here -> <features_path>/<videoID>.mp4
    p = Path(args.data_path) / "vatex_training_v1.0.json"
    _edit_json(p, lambda d: d[0].update(path=f"s3://video_pub/VATEX/{fx.VATEX_TRAIN[0]}.mp4"))
    (Path(args.features_path) / "nested" / f"{fx.VATEX_TRAIN[0]}.mp4").rename(
        Path(args.features_path) / f"{fx.VATEX_TRAIN[0]}.mp4")
    split = load_split("vatex", args, "train")
    assert split.videos[0].path == Path(args.features_path) / f"{fx.VATEX_TRAIN[0]}.mp4"


def test_vatex_ceph_json_and_val_list(tmp_path):
    args = fx.write_vatex(tmp_path, with_path=False)
    anns = Path(args.data_path)
    (anns / "vatex_validation_v1.0.json").rename(anns / "vatex_validation_v1.0_ceph.json")
    (anns / "val_list.txt").write_text(fx.VATEX_TEST[1] + "\n")
    assert load_split("vatex", args, "val").video_ids == [fx.VATEX_TEST[1]]
    assert load_split("vatex", args, "test").video_num == 2


def test_lsmdc_walks_nested_folders_and_repeated_clip_ids(tmp_path):
    split = load_split("lsmdc", write("lsmdc", tmp_path), "train")
    first = fx.LSMDC_ROWS["train"][0][0]
    assert split.videos[0].video_id == first
    assert split.videos[0].path.parent.name == "0001_American_Beauty"
    assert split.captions[:2] == ["SOMEONE looks at the sky.", "SOMEONE frowns."]
    assert split.caption_video.tolist() == [0, 0, 1, 2]


def test_lsmdc_internvideo_train_slice_is_opt_in(tmp_path, monkeypatch):
    args = write("lsmdc", tmp_path)
    monkeypatch.setattr(lsmdc_module, "INTERNVIDEO_DROPPED_TRAIN_RANGE", (1, 2))
    assert load_split("lsmdc", args, "train").video_num == 3
    args = replace(args, lsmdc_internvideo_train_slice=True)
    split = load_split("lsmdc", args, "train")
    assert split.video_num == 2 and fx.LSMDC_ROWS["train"][1][0] not in split.video_ids
    assert load_split("lsmdc", args, "test").video_num == 3  # train only


def test_video_index_walks_once_and_prefers_video_extensions(tmp_path, monkeypatch):
    root = tmp_path / "v"
    fx.touch([root / "a" / "x.webm", root / "b" / "x.mp4", root / "c" / "y.txt", root / "y.avi",
              root / ".hidden.mp4", root / "z.m4v.mp4"])
    calls = []
    import os as _os

    real_walk = _os.walk
    monkeypatch.setattr(_os, "walk", lambda *a, **k: calls.append(a) or real_walk(*a, **k))
    index = video_index(root)
    assert video_index(str(root)) is index and len(calls) == 1
    assert index.by_stem("x") == root / "b" / "x.mp4"
    assert index.by_stem("y") == root / "y.avi"
    assert index.find("z.m4v") == root / "z.m4v.mp4"
    assert index.find(".hidden") is None and index.find("missing") is None
    assert len(VideoIndex(tmp_path / "does-not-exist")) == 0


# --------------------------------------------------------------------------- RetrievalSplit


def _split(caption_video, n_videos=3, unit="caption") -> RetrievalSplit:
    videos = [VideoItem(f"v{i}", Path(f"/v{i}.mp4")) for i in range(n_videos)]
    return RetrievalSplit("toy", videos, [f"c{i}" for i in range(len(caption_video))], np.array(caption_video), unit)


def test_retrieval_split_bookkeeping_and_validation():
    s = _split([0, 0, 1, 2, 2, 2])
    assert s.cut_off_points == [2, 3, 6]
    assert (s.sentence_num, s.video_num) == (6, 3)
    assert s.captions_of(2).tolist() == [3, 4, 5]
    assert _split([0, 1, 2]).multi_sentence_per_video is False
    with pytest.raises(ValueError, match="not grouped"):
        _ = _split([1, 0, 2]).cut_off_points
    with pytest.raises(ValueError, match="outside"):
        _split([0, 3])
    with pytest.raises(ValueError, match="caption_video"):
        RetrievalSplit("toy", [], ["a"], np.array([], dtype=np.int64))


# --------------------------------------------------------------------------- decode failures


class FakeReader:
    """Returns constant tensors; raises VideoDecodeError for paths whose name contains "bad"."""

    def __init__(self, max_frames: int = 2, size: int = 4):
        self.max_frames, self.size = max_frames, size

    def __call__(self, path, start=None, end=None, sampling=None, rng=None):
        if "bad" in Path(path).name:
            raise VideoDecodeError(path, "moov atom not found")
        return torch.ones(self.max_frames, 3, self.size, self.size), torch.ones(self.max_frames, dtype=torch.int64)


def _pairs_split(names: list[str]) -> RetrievalSplit:
    videos = [VideoItem(n, Path(f"/data/{n}.mp4")) for n in names]
    return RetrievalSplit("pairs", videos, [f"caption of {n}" for n in names], np.arange(len(names)))


def test_skip_bad_videos_replaces_deterministically_and_counts():
    split = _pairs_split(["ok0", "bad1", "ok2", "ok3", "bad4", "ok5"])
    ds = TrainPairDataset(split, get_tokenizer(), None, 8, skip_bad_videos=True, seed=3, reader=FakeReader())
    item = ds[1]
    assert item["replaced"].item() >= 1 and item["index"].item() != 1
    assert "bad" not in split.videos[item["video_index"].item()].video_id
    again = ds[1]
    assert again["index"].item() == item["index"].item()  # same choice every time
    assert ds[0]["replaced"].item() == 0 and ds[0]["index"].item() == 0
    strict = TrainPairDataset(split, get_tokenizer(), None, 8, reader=FakeReader())
    with pytest.raises(VideoDecodeError, match="bad1"):
        strict[1]


def test_replacement_index_never_itself_and_covers_others():
    ds = TrainPairDataset(_pairs_split([f"ok{i}" for i in range(5)]), get_tokenizer(), None, 8, reader=FakeReader())
    for i in range(5):
        picks = {ds.replacement_index(i, a) for a in range(1, 60)}
        assert i not in picks and picks == set(range(5)) - {i}
    other_seed = TrainPairDataset(ds.split, get_tokenizer(), None, 8, seed=1, reader=FakeReader())
    picks = [ds.replacement_index(0, a) for a in range(1, 9)]
    assert picks != [other_seed.replacement_index(0, a) for a in range(1, 9)]


def test_skip_bad_videos_gives_up_after_bounded_attempts():
    ds = TrainPairDataset(_pairs_split(["bad0", "bad1", "bad2"]), get_tokenizer(), None, 8,
                          skip_bad_videos=True, reader=FakeReader())
    with pytest.raises(RuntimeError, match=f"{MAX_REPLACEMENT_ATTEMPTS + 1} undecodable"):
        ds[0]


def test_replaced_count_sums_across_dataloader_workers():
    names = [f"bad{i}" if i % 4 == 0 else f"ok{i}" for i in range(16)]
    ds = TrainPairDataset(_pairs_split(names), get_tokenizer(), None, 8, skip_bad_videos=True, reader=FakeReader())
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    total = sum(int(b["replaced"].sum()) for b in loader)
    expected = sum(int(ds[i]["replaced"]) for i in range(len(ds)))
    assert total == expected >= 4


def test_eval_video_dataset_never_skips():
    ds = VideoDataset(_pairs_split(["ok0", "bad1"]), None, reader=FakeReader())
    assert ds[0]["video"].shape == (2, 3, 4, 4)
    with pytest.raises(VideoDecodeError):
        ds[1]


# --------------------------------------------------------------------------- real tiny videos


@pytest.fixture(scope="module")
def real_msrvtt(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_msrvtt")
    args = fx.write_msrvtt(root)
    for i, p in enumerate(sorted(Path(args.features_path).glob("*.mp4"))):
        fx.make_tiny_mp4(p, seconds=1.0, fps=10, seed=i)
    args = replace(args, expand_msrvtt_sentences=True)
    return args


def test_items_shapes_and_dtypes_with_real_videos(real_msrvtt):
    sampling = FrameSampling(max_frames=4, feature_framerate=2.0, image_resolution=32)
    max_words = 12
    train = load_split("msrvtt", real_msrvtt, "train")
    item = TrainPairDataset(train, get_tokenizer(), sampling, max_words)[5]
    assert item["input_ids"].shape == (max_words,) and item["input_ids"].dtype == torch.int64
    assert item["input_mask"].shape == (max_words,) and item["input_mask"].dtype == torch.int64
    assert item["video"].shape == (4, 3, 32, 32) and item["video"].dtype == torch.float32
    assert item["video_mask"].shape == (4,) and item["video_mask"].dtype == torch.int64
    assert item["video_mask"].sum() == 2  # 1 s at 2 frames per second
    assert item["video_index"].item() == 1 and item["index"].item() == 5 and item["replaced"].item() == 0
    assert torch.isfinite(item["video"]).all() and item["video"][:2].abs().sum() > 0
    assert item["input_ids"][0].item() == 49406 and item["input_mask"].sum() > 2

    test = load_split("msrvtt", real_msrvtt, "test")
    texts = TextDataset(test, get_tokenizer(), max_words)
    videos = VideoDataset(test, sampling)
    assert len(texts) == test.sentence_num and len(videos) == test.video_num
    t = texts[1]
    assert t["input_ids"].dtype == torch.int64 and t["index"].item() == 1 and t["video_index"].item() == 1
    v = videos[0]
    assert v["video"].shape == (4, 3, 32, 32) and v["video_mask"].dtype == torch.int64 and v["index"].item() == 0
    batch = next(iter(torch.utils.data.DataLoader(videos, batch_size=2)))
    assert batch["video"].shape == (2, 4, 3, 32, 32)
