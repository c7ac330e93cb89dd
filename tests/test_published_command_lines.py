"""Every published command line (InternVideo's scripts, CLIP4Clip's README) parses with our
entry point's parser, and the arguments we accept only for them do what they say."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import pytest

import main_task_retrieval

DATA = Path(__file__).parent / "data" / "published_command_lines.txt"


def _commands() -> list[tuple[str, list[str]]]:
    commands, source = [], None
    for line in DATA.read_text().splitlines():
        if line.startswith("# source:"):
            source = line[len("# source:"):].strip()
        elif line.strip() and not line.startswith("#"):
            assert source, f"{DATA}: a command without a '# source:' line"
            commands.append((source, shlex.split(line)))
            source = None
    return commands


COMMANDS = _commands()


def test_every_published_script_is_listed():
    sources = [s for s, _ in COMMANDS]
    for folder, stem in (("zeroshot_scripts", "eval_"), ("finetune_scripts", "train_"),
                         ("finetune_scripts", "ret_"), ("eval_finetuned_scripts", "run_kc4_")):
        assert sum(f"/{folder}/{stem}" in s for s in sources) == 6, (folder, stem)
    assert sum("CLIP4Clip" in s for s in sources) == 5


@pytest.mark.parametrize("source,argv", COMMANDS, ids=[s.split("/")[-1].split()[-1] + f"-{i}"
                                                       for i, (s, _) in enumerate(COMMANDS)])
def test_published_command_line_parses(source, argv, caplog):
    with caplog.at_level(logging.WARNING, logger="main_task_retrieval"):
        args = main_task_retrieval.get_args(argv)
    given = dict(a.lstrip("-").split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    for name in ("max_frames", "max_words", "batch_size_val", "slice_framepos", "freeze_layer_num"):
        if name in given:
            assert getattr(args, name) == int(given[name]), name
    if "--clip_evl" in argv:
        assert args.clip_evl and args.max_words == 77
    if "finetuned_path" in given:  # InternVideo's eval_finetuned scripts
        assert args.init_model == given["finetuned_path"] and not hasattr(args, "finetuned_path")
    assert ("--zeroshot" in argv) == ("--zeroshot True ignored" in caplog.text)
    assert not hasattr(args, "zeroshot")


def test_ignored_arguments_warn_one_line_each_and_leave_no_trace(caplog):
    argv = ["--do_eval", "--output_dir", "out", "--loose_type", "--do_lower_case", "--n_gpu", "4", "--world_size", "8",
            "--rank", "1", "--cache_dir", "", "--fp16_opt_level", "O2", "--lr_decay", "0.9", "--margin", "0.1",
            "--video_dim", "1024", "--hard_negative_rate", "0.5", "--negative_weighting", "1", "--n_pair", "1",
            "--use_mil", "--sampled_use_mil", "--text_num_hidden_layers", "12", "--visual_num_hidden_layers", "12",
            "--do_pretrain", "--clip_kc", "--clip_kc2", "--clip_kc4", "--use_capdecoder", "False", "--task_type",
            "retrieval"]
    with caplog.at_level(logging.WARNING, logger="main_task_retrieval"):
        args = main_task_retrieval.get_args(argv)
    ignored = [a for a in argv if a.startswith("--") and a not in ("--do_eval", "--output_dir", "--loose_type",
                                                                   "--task_type")]
    assert len(caplog.records) == len(ignored)
    for name in ignored:
        assert any(r.getMessage().startswith(name + " ") for r in caplog.records), name
        assert not hasattr(args, name[2:])
    assert not hasattr(args, "task_type")
    assert vars(args) == vars(main_task_retrieval.get_args(["--do_eval", "--output_dir", "out", "--loose_type"]))


def test_finetuned_path_is_init_model():
    args = main_task_retrieval.get_args(["--do_eval", "--output_dir", "o", "--finetuned_path", "ft.bin"])
    assert args.init_model == "ft.bin"
    same = main_task_retrieval.get_args(["--do_eval", "--output_dir", "o", "--finetuned_path", "ft.bin",
                                         "--init_model", "ft.bin"])
    assert same.init_model == "ft.bin"
    with pytest.raises(SystemExit):
        main_task_retrieval.get_args(["--do_eval", "--output_dir", "o", "--finetuned_path", "a.bin",
                                      "--init_model", "b.bin"])


def test_task_type_other_than_retrieval_is_refused(capsys):
    with pytest.raises(SystemExit):
        main_task_retrieval.get_args(["--do_eval", "--output_dir", "o", "--task_type", "caption"])
    assert "only 'retrieval' exists" in capsys.readouterr().err
