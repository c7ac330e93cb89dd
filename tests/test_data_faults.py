"""Bad and hostile annotation files: code in a caption pickle, video ids leaving the video folder,
empty splits, files that are not UTF-8 (or carry a BOM), ids whose JSON type differs from the list's."""

from __future__ import annotations

import datetime
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import main_task_retrieval
from dataloaders import load_split
from dataloaders.base import AnnotationError, clear_video_index_cache
from dataloaders.plain_pickle import RefusedPickleError, load_plain_pickle
from tests import annotation_fixtures as fx
from tests.engine_helpers import TINY_CLIP

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_index():
    clear_video_index_cache()
    yield
    clear_video_index_cache()


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    fn(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _edit_pickle(path: Path, fn) -> None:
    data = pickle.loads(path.read_bytes())
    fn(data)
    path.write_bytes(pickle.dumps(data))


# --------------------------------------------------------------------------- 1. code in a caption pickle


class RunsCommand:
    """Unpickling this runs a shell command (what a crafted raw-captions.pkl does)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_malicious_msvd(root: Path) -> tuple:
    args = fx.write_msvd(root)
    marker = root / "pwned"
    payload = {vid: [["a", "caption"]] for vid in fx.MSVD_NUM_CAPTIONS}
    payload["-4wsuPCjDBc_5_15"] = RunsCommand(f"touch {marker}")
    (Path(args.data_path) / "raw-captions.pkl").write_bytes(pickle.dumps(payload))
    return args, marker


def test_caption_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    args, marker = write_malicious_msvd(tmp_path)
    with pytest.raises(AnnotationError) as err:
        load_split("msvd", args, "test")
    assert not marker.exists()
    assert "raw-captions.pkl" in str(err.value) and f"{os.system.__module__}.system" in str(err.value)


def test_malicious_caption_pickle_fails_the_run_with_a_nonzero_exit(tmp_path):
    args, marker = write_malicious_msvd(tmp_path)
    argv = [sys.executable, "main_task_retrieval.py", "--do_eval", "--datatype", "msvd", "--data_path",
            args.data_path, "--features_path", args.features_path, "--clip_config", json.dumps(TINY_CLIP),
            "--output_dir", str(tmp_path / "out"), "--num_thread_reader", "0", "--max_frames", "2",
            "--max_words", "16"]
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert not marker.exists()
    assert run.returncode != 0
    assert "raw-captions.pkl" in run.stderr and "refused" in run.stderr


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_caption_pickles_of_every_protocol_load(tmp_path, protocol):
    data = {"vid": [["a", "man"], ("b",)], "n": [1, 2.5, -(2**70), None, True], "self": "x"}
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    with open(path, "rb") as f:
        assert load_plain_pickle(f) == data


def test_a_list_pickled_inside_itself_is_plain_data(tmp_path):
    loop: list = ["a"]
    loop.append(loop)
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"k": loop}))
    with open(path, "rb") as f:
        out = load_plain_pickle(f)
    assert out["k"][0] == "a" and out["k"][1] is out["k"]


@pytest.mark.parametrize("value, named", [
    (datetime.date(2020, 1, 1), "datetime.date"),  # a class: a global
    ({"a", "b"}, "set"),  # protocol 4 pickles a set without a global: refused after loading
    (b"bytes", "bytes"),
])
def test_caption_pickle_with_other_objects_is_refused(tmp_path, value, named):
    args = fx.write_msvd(tmp_path)
    path = Path(args.data_path) / "raw-captions.pkl"
    _edit_pickle(path, lambda d: d.__setitem__("extra", [value]))
    with pytest.raises(AnnotationError, match=named) as err:
        load_split("msvd", args, "test")
    assert str(path) in str(err.value)
    with open(path, "rb") as f, pytest.raises(RefusedPickleError):
        load_plain_pickle(f)


# --------------------------------------------------------------------------- 2. ids leaving the video folder


def inject_msrvtt(args, vid):
    _append(Path(args.val_csv), f"ret9,msr9,{vid},a stolen clip")
    return Path(args.val_csv)


def inject_msvd(args, vid):
    _edit_pickle(Path(args.data_path) / "raw-captions.pkl", lambda d: d.__setitem__(vid, [["stolen"]]))
    _append(Path(args.data_path) / "test_list.txt", vid)
    return Path(args.data_path) / "test_list.txt"


def inject_lsmdc(args, vid):
    path = Path(args.data_path) / fx.LSMDC_FILES["test"]
    _append(path, "\t".join([vid, "0", "1", "0", "1", "A stolen clip."]))
    return path


def inject_activity(args, vid):
    anns = Path(args.data_path)
    _edit_json(anns / "val_ids.json", lambda d: d.append(vid))
    _edit_json(anns / "val_1.json", lambda d: d.__setitem__(vid, {"duration": 1.0, "timestamps": [[0, 1]],
                                                                  "sentences": ["A stolen clip."]}))
    return anns / "val_ids.json"


def inject_didemo(args, vid):
    anns = Path(args.data_path)
    _append(anns / "test_list.txt", vid + ".mp4")
    _edit_json(anns / "test_data.json", lambda d: d.append({"video": vid + ".mp4", "description": "stolen",
                                                            "times": [[0, 0]]}))
    return anns / "test_list.txt"


def inject_vatex(args, vid, path=None):
    anns = Path(args.data_path)
    _append(anns / "test_list.txt", vid)
    entry = {"videoID": vid, "enCap": ["a stolen clip"], **({"path": path} if path else {})}
    _edit_json(anns / "vatex_validation_v1.0.json", lambda d: d.append(entry))
    return anns / "vatex_validation_v1.0.json"


INJECTORS = {"msrvtt": inject_msrvtt, "msvd": inject_msvd, "lsmdc": inject_lsmdc, "activity": inject_activity,
             "didemo": inject_didemo, "vatex": inject_vatex}


def plant_secret(tmp_path: Path) -> Path:
    """A file outside the video folder (``tmp_path/videos``), reachable as ``../secret/stolen``."""
    secret = tmp_path / "secret" / "stolen.mp4"
    fx.touch([secret])
    return secret


@pytest.mark.parametrize("absolute", [False, True], ids=["dotdot", "absolute"])
@pytest.mark.parametrize("name", sorted(INJECTORS))
def test_video_id_leaving_the_video_folder_is_refused(tmp_path, name, absolute):
    args = fx.WRITERS[name](tmp_path)
    secret = plant_secret(tmp_path)
    vid = str(secret.with_suffix("")) if absolute else "../secret/stolen"
    source = INJECTORS[name](args, vid)
    with pytest.raises(AnnotationError) as err:
        load_split(name, args, "test")
    message = str(err.value)
    assert str(source) in message and vid in message and "leaves the video folder" in message


@pytest.mark.parametrize("absolute", [False, True], ids=["dotdot", "absolute"])
def test_vatex_path_field_leaving_the_video_folder_is_refused(tmp_path, absolute):
    args = fx.write_vatex(tmp_path)
    secret = plant_secret(tmp_path)
    path = str(secret) if absolute else "../secret/stolen.mp4"
    source = inject_vatex(args, "innocent_000000_000010", path=path)
    with pytest.raises(AnnotationError) as err:
        load_split("vatex", args, "test")
    message = str(err.value)
    assert str(source) in message and "innocent_000000_000010" in message and "outside the video folder" in message


def test_symlinks_the_folder_owner_made_inside_the_video_folder_are_followed(tmp_path):
    """Ids are checked lexically: links inside --features_path (to another disk) keep working."""
    args = fx.write_msrvtt(tmp_path)
    videos = Path(args.features_path)
    elsewhere = tmp_path / "other_disk"
    fx.touch([elsewhere / "real7.mp4"])
    (videos / "video7.mp4").unlink()
    (videos / "video7.mp4").symlink_to(elsewhere / "real7.mp4")
    assert load_split("msrvtt", args, "test").videos[0].path == videos / "video7.mp4"

    lsmdc = fx.write_lsmdc(tmp_path / "l")
    movie = Path(lsmdc.features_path) / "3087_Zombieland"
    movie.rename(elsewhere / "zombieland")
    movie.symlink_to(elsewhere / "zombieland", target_is_directory=True)
    assert load_split("lsmdc", lsmdc, "test").video_num == 3


def test_ids_with_dotdot_that_stay_inside_the_folder_are_accepted(tmp_path):
    args = fx.write_msrvtt(tmp_path)
    (Path(args.features_path) / "sub").mkdir()
    inject_msrvtt(args, "sub/../video1")
    assert "sub/../video1" in load_split("msrvtt", args, "test").video_ids


# --------------------------------------------------------------------------- 8. empty splits


def empty_msrvtt(args):
    path = Path(args.val_csv)
    path.write_text("key,vid_key,video_id,sentence\n", encoding="utf-8")
    return path


def empty_list(name):
    def empty(args):
        path = Path(args.data_path) / name
        path.write_text("", encoding="utf-8")
        return path
    return empty


def empty_activity(args):
    path = Path(args.data_path) / "val_ids.json"
    path.write_text("[]", encoding="utf-8")
    return path


EMPTIERS = {"msrvtt": empty_msrvtt, "msvd": empty_list("test_list.txt"),
            "lsmdc": empty_list(fx.LSMDC_FILES["test"]), "activity": empty_activity,
            "didemo": empty_list("test_list.txt")}


@pytest.mark.parametrize("name", sorted(EMPTIERS))
def test_empty_split_names_its_file_and_says_no_captions(tmp_path, name):
    args = fx.WRITERS[name](tmp_path)
    path = EMPTIERS[name](args)
    with pytest.raises(AnnotationError, match="no captions") as err:
        load_split(name, args, "test")
    assert str(path) in str(err.value)


def msrvtt_argv(args, tmp_path: Path, *extra: str) -> list[str]:
    return ["--datatype", "msrvtt", "--data_path", args.data_path, "--features_path", args.features_path,
            "--train_csv", args.train_csv, "--val_csv", args.val_csv, "--clip_config", json.dumps(TINY_CLIP),
            "--output_dir", str(tmp_path / "out"), "--num_thread_reader", "0", "--max_words", "16", *extra]


@pytest.mark.parametrize("mode, emptied", [("--do_eval", "val_csv"), ("--do_train", "train_csv")])
def test_empty_split_fails_before_the_model_is_built(tmp_path, monkeypatch, mode, emptied):
    args = fx.write_msrvtt(tmp_path)
    Path(getattr(args, emptied)).write_text(Path(getattr(args, emptied)).read_text().splitlines()[0] + "\n")

    def no_model(*_, **__):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr("engine.builders.build_model", no_model)
    with pytest.raises(AnnotationError, match="no captions") as err:
        main_task_retrieval.main(msrvtt_argv(args, tmp_path, mode, "--batch_size", "2"))
    assert getattr(args, emptied) in str(err.value)


# --------------------------------------------------------------------------- 9. encodings


def _reencode(path: Path, old: str, new: str, line: int | None = None, encoding: str = "latin-1") -> None:
    """Rewrite ``path`` in ``encoding`` with ``old`` replaced by ``new`` (on ``line`` only, when given)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    for i in [line - 1] if line else range(len(lines)):
        lines[i] = lines[i].replace(old, new)
    path.write_bytes("\n".join(lines).encode(encoding))


def latin1_msrvtt_csv(args):
    _reencode(Path(args.val_csv), "connecting", "café-ing", line=3)
    return "test", Path(args.val_csv), "line 3"


def latin1_msrvtt_json(args):
    _reencode(Path(args.data_path), "clip 2 caption 1", "clip 2 café")
    return "train", Path(args.data_path), "line 1"


def latin1_lsmdc(args):
    path = Path(args.data_path) / fx.LSMDC_FILES["train"]
    _reencode(path, "barks", "aboie à", line=4)
    return "train", path, "line 4"


def cp1252_didemo_json(args):
    path = Path(args.data_path) / "test_data.json"
    _reencode(path, "water splashes", "l'eau éclabousse", encoding="cp1252")
    return "test", path, "line 1"


def latin1_msvd_list(args):
    path = Path(args.data_path) / "test_list.txt"
    _reencode(path, "_", "é_", line=2)
    return "test", path, "line 2"


def latin1_vatex_list(args):
    path = Path(args.data_path) / "train_list.txt"
    _reencode(path, "_", "é_", line=1)
    return "train", path, "line 1"


ENCODING_BREAKERS = [("msrvtt", latin1_msrvtt_csv), ("msrvtt", latin1_msrvtt_json), ("lsmdc", latin1_lsmdc),
                     ("didemo", cp1252_didemo_json), ("msvd", latin1_msvd_list), ("vatex", latin1_vatex_list)]


@pytest.mark.parametrize("name, breaker", ENCODING_BREAKERS, ids=[b.__name__ for _, b in ENCODING_BREAKERS])
def test_file_that_is_not_utf8_names_file_and_line(tmp_path, name, breaker):
    args = fx.WRITERS[name](tmp_path)
    subset, path, where = breaker(args)
    with pytest.raises(AnnotationError) as err:
        load_split(name, args, subset)
    message = str(err.value)
    assert str(path) in message and where in message and "UTF-8" in message


def test_line_of_a_bad_byte_counts_lines_after_a_bom(tmp_path):
    args = fx.write_msvd(tmp_path)
    path = Path(args.data_path) / "test_list.txt"
    path.write_bytes(b"\xef\xbb\xbf" + b"00jrXRMlZOY_0_10\n0lh_\xffUWF9ZP4_62_69\n")
    with pytest.raises(AnnotationError, match=r"line 2, byte 5: not UTF-8 \(0xff\)"):
        load_split("msvd", args, "test")


@pytest.mark.parametrize("name", sorted(fx.WRITERS))
def test_annotation_files_with_a_utf8_bom_read_like_without(tmp_path, name):
    args = fx.WRITERS[name](tmp_path)
    def contents():
        return [(split.video_ids, split.captions) for split in (load_split(name, args, s) for s in ("train", "test"))]

    before = contents()
    anns = Path(args.data_path) if Path(args.data_path).is_dir() else Path(args.data_path).parent
    for path in anns.iterdir():
        if path.suffix in (".csv", ".txt", ".json"):
            path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert contents() == before


# --------------------------------------------------------------------------- 10. ids of another type


def numeric_msrvtt(args):
    _edit_json(Path(args.data_path), lambda d: [s.update(video_id=int(s["video_id"][5:])) for s in d["sentences"]])
    return "train", Path(args.data_path), Path(args.train_csv), "0", "'video0'"


def numeric_vatex(args):
    path = Path(args.data_path) / "vatex_training_v1.0.json"
    _edit_json(path, lambda d: d[1].update(videoID=12345))
    return "train", path, Path(args.data_path) / "train_list.txt", "12345", repr(fx.VATEX_TRAIN[0])


def numeric_msvd(args):
    path = Path(args.data_path) / "raw-captions.pkl"
    _edit_pickle(path, lambda d: d.__setitem__(7, [["seven"]]))
    return "test", path, Path(args.data_path) / "test_list.txt", "7", repr(fx.MSVD_SPLITS["test"][0])


def numeric_didemo(args):
    path = Path(args.data_path) / "test_data.json"
    _edit_json(path, lambda d: d[0].update(video=42))
    return "test", path, Path(args.data_path) / "test_list.txt", "42", repr(next(iter(fx.DIDEMO["test"])))


def numeric_activity(args):
    path = Path(args.data_path) / "train_ids.json"
    path.write_text(json.dumps([1, 2]), encoding="utf-8")
    return "train", path, Path(args.data_path) / "train.json", "1", repr(next(iter(fx.ANET["train"])))


NUMERIC = {"msrvtt": numeric_msrvtt, "vatex": numeric_vatex, "msvd": numeric_msvd, "didemo": numeric_didemo,
           "activity": numeric_activity}


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_ids_of_another_type_than_the_list_are_named_with_one_of_each(tmp_path, name):
    args = fx.WRITERS[name](tmp_path)
    subset, path, list_file, number, string = NUMERIC[name](args)
    with pytest.raises(AnnotationError, match="differ in type") as err:
        load_split(name, args, subset)
    message = str(err.value)
    assert str(path) in message and str(list_file) in message
    assert f"the id {number} here is" in message and f"such as {string}" in message
