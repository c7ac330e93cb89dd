"""Small annotation files in exactly the real datasets' formats, plus placeholder and tiny real videos.

Each ``write_<dataset>(root)`` writes a miniature copy of that dataset's annotation files
under ``root/anns`` and placeholder video files under ``root/videos`` (laid out as the real
release is: flat, nested per movie, per split ...), and returns the ``DataOptions`` the
loader reads. The ``EXPECTED`` dict next to each writer says what a correct loader must
find. ``make_tiny_mp4`` writes a real H.264 file for tensor tests.
"""

from __future__ import annotations

import csv
import json
import pickle
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dataloaders.options import DataOptions


def make_args(**kw) -> DataOptions:
    return DataOptions(**kw)


def touch(paths: Iterable[Path]) -> None:
    """Placeholder video files (for path logic; they do not decode)."""
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\x00")


def _dirs(root: Path) -> tuple[Path, Path]:
    anns, videos = root / "anns", root / "videos"
    anns.mkdir(parents=True, exist_ok=True)
    videos.mkdir(parents=True, exist_ok=True)
    return anns, videos


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


# --------------------------------------------------------------------------- MSR-VTT

MSRVTT_TRAIN = ["video0", "video1", "video2", "video3"]
MSRVTT_TEST = ["video7", "video8"]
MSRVTT_CAPTIONS = {f"video{i}": [f"clip {i} caption {j}" for j in range(3)] for i in range(10)}
MSRVTT_EXPECTED = {
    "train_expanded": dict(videos=4, captions=12, unit="caption"),
    "train": dict(videos=4, captions=12, unit="video"),
    "test": dict(videos=2, captions=2, cut_off_points=[1, 2]),
}


def write_msrvtt(root: Path) -> DataOptions:
    """``MSRVTT_data.json`` (info/videos/sentences), a 9k-style train csv, a JSFusion test csv."""
    anns, videos = _dirs(root)
    data = {
        "info": {"contributor": "test", "data_created": "2016-04-01", "version": "1.0", "year": 2016},
        "videos": [
            {"category": i % 20, "url": f"https://www.youtube.com/watch?v=yt{i}", "video_id": f"video{i}",
             "start time": 1.0, "end time": 11.0, "split": "train" if i < 7 else "test", "id": i}
            for i in range(10)
        ],
        "sentences": [],
    }
    for vid, caps in MSRVTT_CAPTIONS.items():
        for cap in caps:
            data["sentences"].append({"caption": cap, "video_id": vid, "sen_id": len(data["sentences"])})
    (anns / "MSRVTT_data.json").write_text(json.dumps(data), encoding="utf-8")
    with open(anns / "MSRVTT_train.9k.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video_id"])
        w.writerows([[v] for v in MSRVTT_TRAIN])
    with open(anns / "MSRVTT_JSFUSION_test.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, v in enumerate(MSRVTT_TEST):
            w.writerow([f"ret{i}", f"msr{v[5:]}", v, f"a person, in {v}, is connecting something"])
    touch(videos / f"{v}.mp4" for v in MSRVTT_TRAIN + MSRVTT_TEST)
    return make_args(data_path=str(anns / "MSRVTT_data.json"), features_path=str(videos),
                     train_csv=str(anns / "MSRVTT_train.9k.csv"), val_csv=str(anns / "MSRVTT_JSFUSION_test.csv"))


# --------------------------------------------------------------------------- MSVD

MSVD_SPLITS = {"train": ["-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208"], "val": ["-8y1Q0rA3n8_108_115"],
               "test": ["00jrXRMlZOY_0_10", "0lh_UWF9ZP4_62_69"]}
MSVD_NUM_CAPTIONS = {"-4wsuPCjDBc_5_15": 2, "-7KMZQEsJW4_205_208": 3, "-8y1Q0rA3n8_108_115": 1,
                     "00jrXRMlZOY_0_10": 4, "0lh_UWF9ZP4_62_69": 2}
MSVD_EXPECTED = {
    "train": dict(videos=2, captions=5, cut_off_points=[2, 5]),
    "val": dict(videos=1, captions=1, cut_off_points=[1]),
    "test": dict(videos=2, captions=6, cut_off_points=[4, 6]),
}


def write_msvd(root: Path) -> DataOptions:
    """``raw-captions.pkl`` (id -> list of word-token lists), ``{train,val,test}_list.txt``, ``<id>.avi``."""
    anns, videos = _dirs(root)
    captions = {vid: [["a", "man", "is", "doing", f"thing{j}", "in", vid] for j in range(n)]
                for vid, n in MSVD_NUM_CAPTIONS.items()}
    with open(anns / "raw-captions.pkl", "wb") as f:
        pickle.dump(captions, f)
    for subset, ids in MSVD_SPLITS.items():
        _write_lines(anns / f"{subset}_list.txt", ids)
    touch(videos / f"{vid}.avi" for vid in MSVD_NUM_CAPTIONS)
    return make_args(data_path=str(anns), features_path=str(videos))


# --------------------------------------------------------------------------- LSMDC

LSMDC_ROWS = {
    "train": [
        ("0001_American_Beauty_00.00.51.926-00.00.54.129", "SOMEONE looks at the sky."),
        ("0001_American_Beauty_00.00.56.224-00.00.58.136", "He walks away."),
        ("0001_American_Beauty_00.00.51.926-00.00.54.129", "SOMEONE frowns."),  # repeated clip id
        ("0002_As_Good_As_It_Gets_00.01.10.000-00.01.13.500", "A dog barks."),
    ],
    "val": [("1004_Juno_00.00.32.849-00.00.35.458", "SOMEONE sits in a car.")],
    "test": [
        ("3086_UGLY_TRUTH_00.23.23.000-00.23.28.886", "SOMEONE stands below, hands on her hips."),
        ("3086_UGLY_TRUTH_00.24.11.000-00.24.14.000", "She turns."),
        ("3087_Zombieland_00.05.01.000-00.05.04.000", "A car drives by."),
    ],
}
LSMDC_EXPECTED = {
    "train": dict(videos=3, captions=4, cut_off_points=[2, 3, 4]),
    "val": dict(videos=1, captions=1),
    "test": dict(videos=3, captions=3, cut_off_points=[1, 2, 3]),
}
LSMDC_FILES = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
               "test": "LSMDC16_challenge_1000_publictect.csv"}


def lsmdc_line(clip_id: str, sentence: str) -> str:
    times = clip_id.rsplit("_", 1)[1].split("-")
    return "\t".join([clip_id, times[0], times[1], times[0], times[1], sentence])


def write_lsmdc(root: Path) -> DataOptions:
    """Tab-separated 6-field files, no header; videos nested as ``<movie>/<clip_id>.avi``."""
    anns, videos = _dirs(root)
    for subset, rows in LSMDC_ROWS.items():
        _write_lines(anns / LSMDC_FILES[subset], (lsmdc_line(c, s) for c, s in rows))
    clip_ids = {c for rows in LSMDC_ROWS.values() for c, _ in rows}
    touch(videos / c.rsplit("_", 1)[0] / f"{c}.avi" for c in clip_ids)
    return make_args(data_path=str(anns), features_path=str(videos))


# --------------------------------------------------------------------------- ActivityNet

ANET = {
    "train": {"v_aaa": ["A man walks in.", " He sits down."], "v_bbb": ["Kids play football."]},
    "val": {"v_--ccc": ["A woman dances.", " Then she bows.", " People clap."], "v_ddd": ["A dog runs."]},
}
ANET_VAL_IDS_WITHOUT_CAPTIONS = ["v_eee"]  # the real val_ids.json lists 9 ids absent from val_1.json
ANET_EXPECTED = {
    "train": dict(videos=2, captions=2, paragraph="A man walks in. He sits down."),
    "test": dict(videos=2, captions=2, paragraph="A woman dances. Then she bows. People clap."),
}


def write_activitynet(root: Path) -> DataOptions:
    """``train_ids.json``/``val_ids.json`` (lists of ``v_`` ids), ``train.json``/``val_1.json`` (id -> dict).

    Videos: train ones as InternVideo names them (``train/v_<id>.mp4``), val ones as
    CLIP4Clip's walk expects (``val/<id>.mp4``, no prefix).
    """
    anns, videos = _dirs(root)

    def entry(sentences: list[str]) -> dict:
        n = len(sentences)
        return {"duration": 10.0 * n + 0.5, "timestamps": [[10.0 * i, 10.0 * i + 9] for i in range(n)],
                "sentences": sentences}

    for subset, fname in (("train", "train.json"), ("val", "val_1.json")):
        (anns / fname).write_text(json.dumps({k: entry(v) for k, v in ANET[subset].items()}), encoding="utf-8")
    (anns / "train_ids.json").write_text(json.dumps(list(ANET["train"])), encoding="utf-8")
    (anns / "val_ids.json").write_text(json.dumps(list(ANET["val"]) + ANET_VAL_IDS_WITHOUT_CAPTIONS),
                                       encoding="utf-8")
    touch(videos / "train" / f"{v}.mp4" for v in ANET["train"])
    touch(videos / "val" / f"{v[2:]}.mp4" for v in ANET["val"])
    return make_args(data_path=str(anns), features_path=str(videos))


# --------------------------------------------------------------------------- DiDeMo

DIDEMO = {
    "train": {"12090392@N02_13482799053_87ef417396.mov": ["a man on a bike", "bike turns left"],
              "26292851@N04_4253489686_265c3c8051.m4v": ["the girl laughs"]},
    "val": {"10269390@N00_2493421830_a7350f43e0.mpg": ["a cat jumps"]},
    "test": {"95456932@N00_3294224627_ba7f5c0cc9.avi": ["first we see a tree", "camera pans right", "a bird flies"],
             "8229962@N06_2593463966_1f7d2f0cea.3gp": ["the baby crawls"],
             "47555426@N00_3856254101_d6f7cb2e68.mp4": ["water splashes"]},
}
# How each video lies on disk: as listed, re-encoded as <name>.mp4, or re-encoded replacing the extension.
DIDEMO_FILES = {
    "12090392@N02_13482799053_87ef417396.mov": "12090392@N02_13482799053_87ef417396.mov",
    "26292851@N04_4253489686_265c3c8051.m4v": "26292851@N04_4253489686_265c3c8051.m4v.mp4",
    "10269390@N00_2493421830_a7350f43e0.mpg": "10269390@N00_2493421830_a7350f43e0.mpg",
    "95456932@N00_3294224627_ba7f5c0cc9.avi": "95456932@N00_3294224627_ba7f5c0cc9.mp4",
    "8229962@N06_2593463966_1f7d2f0cea.3gp": "8229962@N06_2593463966_1f7d2f0cea.3gp",
    "47555426@N00_3856254101_d6f7cb2e68.mp4": "47555426@N00_3856254101_d6f7cb2e68.mp4",
}
DIDEMO_EXPECTED = {
    "train": dict(videos=2, captions=2),
    "val": dict(videos=1, captions=1),
    "test": dict(videos=3, captions=3, paragraph="first we see a tree camera pans right a bird flies"),
}


def write_didemo(root: Path) -> DataOptions:
    """``{split}_list.txt`` (file names with extension) and LocalizingMoments ``{split}_data.json``."""
    anns, videos = _dirs(root)
    for subset, per_video in DIDEMO.items():
        _write_lines(anns / f"{subset}_list.txt", per_video)
        # Round-robin over videos: a video's descriptions are not contiguous in the file.
        queues = [[(video, d) for d in descriptions] for video, descriptions in per_video.items()]
        entries = []
        while any(queues):
            for q in queues:
                if q:
                    video, d = q.pop(0)
                    s = len(entries) % 5
                    entries.append({"annotation_id": len(entries), "description": d, "video": video,
                                    "times": [[s, s], [s, s + 1], [s, s], [s, s]],
                                    "dl_link": "https://example.com", "num_segments": 6})
        (anns / f"{subset}_data.json").write_text(json.dumps(entries), encoding="utf-8")
    touch(videos / name for name in DIDEMO_FILES.values())
    return make_args(data_path=str(anns), features_path=str(videos))


# --------------------------------------------------------------------------- VATEX

VATEX_TRAIN = ["Ptf_2VRj-V0_000122_000132", "--07WQ2iBlw_000001_000011"]
VATEX_TEST = ["G9zN5TTuGO4_000179_000189", "0lh_UWF9ZP4_000062_000072"]
VATEX_EXPECTED = {
    "train": dict(videos=2, captions=20, cut_off_points=[10, 20]),
    "test": dict(videos=2, captions=20, cut_off_points=[10, 20]),
}


def write_vatex(root: Path, *, with_path: bool = True) -> DataOptions:
    """Official ``vatex_*_v1.0.json`` lists (videoID, enCap x10, chCap x10); ``train_list``/``test_list``.

    With ``with_path`` the first train entry carries a ``path`` (relative, InternVideo's
    extra key) pointing at a nested file; every other video is ``<videoID>.mp4``.
    """
    anns, videos = _dirs(root)

    def entry(vid: str) -> dict:
        return {"videoID": vid, "enCap": [f"{vid[:4]} english caption {j}" for j in range(10)],
                "chCap": [f"中文 {j}" for j in range(10)]}

    train = [entry(v) for v in VATEX_TRAIN] + [entry("notlisted_000000_000010")]
    if with_path:
        train[0]["path"] = f"nested/{VATEX_TRAIN[0]}.mp4"
    (anns / "vatex_training_v1.0.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    (anns / "vatex_validation_v1.0.json").write_text(json.dumps([entry(v) for v in VATEX_TEST], ensure_ascii=False),
                                                     encoding="utf-8")
    _write_lines(anns / "train_list.txt", VATEX_TRAIN)
    _write_lines(anns / "test_list.txt", VATEX_TEST)
    first = videos / "nested" / f"{VATEX_TRAIN[0]}.mp4" if with_path else videos / f"{VATEX_TRAIN[0]}.mp4"
    touch([first] + [videos / f"{v}.mp4" for v in VATEX_TRAIN[1:] + VATEX_TEST])
    return make_args(data_path=str(anns), features_path=str(videos))


WRITERS = {
    "msrvtt": write_msrvtt,
    "msvd": write_msvd,
    "lsmdc": write_lsmdc,
    "activity": write_activitynet,
    "didemo": write_didemo,
    "vatex": write_vatex,
}


# --------------------------------------------------------------------------- real videos


def make_tiny_mp4(path: Path, *, seconds: float = 1.0, fps: int = 10, size: int = 32, seed: int = 0) -> Path:
    """A real H.264 mp4 (yuv420p, ``size`` x ``size``) of ``seconds`` at ``fps``, via PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(round(seconds * fps))):
            frame = np.full((size, size, 3), (i * 20) % 256, dtype=np.uint8)
            frame[: size // 2] = rng.integers(0, 256, size=3, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
