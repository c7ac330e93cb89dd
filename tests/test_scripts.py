"""Every per-dataset script: DRY_RUN prints a command whose arguments the entry point accepts
and whose settings are those of the published recipe its header names; one script runs for
real on a tiny CPU configuration."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main_task_retrieval
from engine.builders import model_spec_from_args
from tests.engine_helpers import TINY_CLIP, read_results
from tests.test_published_command_lines import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("internvideo-l14", "internvideo-meanp", "clip4clip")
SCRIPTS = sorted(str(p.relative_to(ROOT)) for folder in ("zeroshot_scripts", "finetune_scripts", "eval_finetuned_scripts")
                 for p in (ROOT / folder).glob("*.sh"))


def _run(script: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", script, *extra], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=600)


def test_all_eighteen_scripts_exist():
    datasets = ("msrvtt", "msvd", "lsmdc", "activitynet", "didemo", "vatex")
    for folder, stem in (("zeroshot_scripts", "eval"), ("finetune_scripts", "train"), ("eval_finetuned_scripts", "eval")):
        for ds in datasets:
            assert (ROOT / folder / f"{stem}_{ds}.sh").is_file()


@pytest.mark.parametrize("script", [s for s in SCRIPTS if "synthetic" not in s])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("nproc", ["1", "4"])
def test_dry_run_prints_a_valid_command(script, model, nproc):
    result = _run(script, {"DRY_RUN": "1", "MODEL": model, "NPROC": nproc, "PRETRAINED_PATH": "iv.ckpt",
                           "INIT_MODEL": "ft.bin"})
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout.strip())
    if nproc == "4":
        assert argv[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=4" in argv
    entry = argv.index("main_task_retrieval.py")
    args = main_task_retrieval.get_args(argv[entry + 1:])  # every argument exists and parses
    assert args.clip_evl is (model == "internvideo-l14")
    assert args.frame_norm == ("l2" if model == "clip4clip" else "none")
    assert args.output_dir
    if "eval_finetuned" in script:
        assert args.init_model == "ft.bin"
    if script == "finetune_scripts/train_msrvtt.sh":
        assert args.expand_msrvtt_sentences


# --- each MODEL is the published recipe its header names ------------------------------------
_PUBLISHED = {source.split()[-1].strip("()") if "README" in source else Path(source.split()[-1]).stem: argv
              for source, argv in COMMANDS}
_IV_RET = {"activitynet": "ret_activity"}
_C4C = {"msrvtt": "MSRVTT", "msvd": "MSVD", "lsmdc": "LSMDC", "activitynet": "ActivityNet", "didemo": "DiDeMo",
        "vatex": "MSRVTT"}  # CLIP4Clip published no VATEX command; the script says it uses MSR-VTT's settings
EVAL_FIELDS = ("max_words", "max_frames", "batch_size_val", "pretrained_clip_name", "slice_framepos",
               "feature_framerate", "sim_header", "loose_type", "linear_patch", "clip_evl")
TRAIN_FIELDS = EVAL_FIELDS + ("lr", "coef_lr", "batch_size", "epochs", "freeze_layer_num", "mergeclip")


def _published_recipe(folder: str, dataset: str, model: str) -> tuple[list[str], tuple[str, ...]]:
    """The published command a script reproduces and the fields that must agree. Known
    differences without effect stay out (zero-shot lr/epochs/freeze; the merge flag of the
    fine-tuned evaluations, overwritten there by the strict load of the fine-tuned weights)."""
    if model == "clip4clip":
        name = _C4C[dataset]
    elif model == "internvideo-meanp":
        name = _IV_RET.get(dataset, f"ret_{dataset}")
    else:
        name = {"finetune_scripts": f"train_{dataset}", "zeroshot_scripts": f"eval_{dataset}",
                "eval_finetuned_scripts": f"run_kc4_{dataset}_infer"}[folder]
    if folder == "finetune_scripts":
        return _PUBLISHED[name], TRAIN_FIELDS
    if folder == "zeroshot_scripts" and model == "internvideo-l14":
        return _PUBLISHED[name], EVAL_FIELDS + ("mergeclip", "mergeweight")
    return _PUBLISHED[name], EVAL_FIELDS


@pytest.mark.parametrize("script", [s for s in SCRIPTS if "synthetic" not in s])
@pytest.mark.parametrize("model", MODELS)
def test_script_settings_are_the_named_published_recipe(script, model, caplog):
    folder, name = script.split("/")
    dataset = Path(name).stem.split("_", 1)[1]
    result = _run(script, {"DRY_RUN": "1", "MODEL": model, "NPROC": "1", "PRETRAINED_PATH": "iv.ckpt",
                           "INIT_MODEL": "ft.bin"})
    argv = shlex.split(result.stdout.strip())
    ours = main_task_retrieval.get_args(argv[argv.index("main_task_retrieval.py") + 1:])
    published_argv, fields = _published_recipe(folder, dataset, model)
    published = main_task_retrieval.get_args(published_argv)
    assert {f: getattr(ours, f) for f in fields} == {f: getattr(published, f) for f in fields}
    if folder == "finetune_scripts" and dataset == "msrvtt":
        assert ours.expand_msrvtt_sentences and published.expand_msrvtt_sentences
    header = Path(ROOT / script).read_text().split("source ")[0]
    assert ("CLIP4Clip's README command" in header) and ("InternVideo's finetune_scripts/ret_" in header)


def test_sim_header_selects_clip4clip_heads():
    for head, loose in (("seqTransf", True), ("seqLSTM", True), ("tightTransf", False)):
        result = _run("finetune_scripts/train_msvd.sh", {"DRY_RUN": "1", "MODEL": "clip4clip", "NPROC": "1",
                                                         "SIM_HEADER": head})
        argv = shlex.split(result.stdout.strip())
        args = main_task_retrieval.get_args(argv[argv.index("main_task_retrieval.py") + 1:])
        assert (args.sim_header, model_spec_from_args(args).head.loose_type, args.frame_norm) == (head, loose, "l2")
    refused = _run("finetune_scripts/train_msvd.sh", {"DRY_RUN": "1", "MODEL": "internvideo-meanp", "NPROC": "1",
                                                      "SIM_HEADER": "seqTransf"})
    assert refused.returncode == 2 and "MODEL=clip4clip" in refused.stderr


def test_unknown_model_variant_is_refused():
    result = _run("zeroshot_scripts/eval_msrvtt.sh", {"DRY_RUN": "1", "MODEL": "rn50"})
    assert result.returncode == 2 and "MODEL must be" in result.stderr
    renamed = _run("zeroshot_scripts/eval_msrvtt.sh", {"DRY_RUN": "1", "MODEL": "clip-b"})
    assert renamed.returncode == 2 and "clip-b is now internvideo-meanp" in renamed.stderr


def test_missing_annotations_fail_before_work(tmp_path):
    result = _run("zeroshot_scripts/eval_msvd.sh", {"DATA_DIR": str(tmp_path), "MODEL": "internvideo-meanp"})
    assert result.returncode == 2 and "msvd annotations not found" in result.stderr


def test_zeroshot_script_runs_for_real(synthetic_data, tmp_path):
    """zeroshot_scripts/eval_msrvtt.sh, CLIP4Clip's recipe, a tiny random CLIP file, on CPU."""
    anns = tmp_path / "MSR-VTT" / "anns"
    anns.mkdir(parents=True)
    (anns / "MSRVTT_data.json").symlink_to(synthetic_data / "MSRVTT_data.json")
    (anns / "MSRVTT_JSFUSION_test.csv").symlink_to(synthetic_data / "synthetic_test.csv")
    (tmp_path / "MSR-VTT" / "videos").symlink_to(synthetic_data / "videos")
    from modules.clip import CLIP, CLIPConfig

    clip_file = tmp_path / "tiny-clip.pt"
    torch.save(CLIP(CLIPConfig(**TINY_CLIP)).state_dict(), clip_file)
    out = tmp_path / "out"
    result = _run("zeroshot_scripts/eval_msrvtt.sh",
                  {"MODEL": "clip4clip", "DATA_DIR": str(tmp_path / "MSR-VTT"), "CLIP_NAME": str(clip_file),
                   "OUTPUT_DIR": str(out), "NPROC": "1", "NUM_WORKERS": "0", "PYTHON": sys.executable},
                  "--max_frames", "8", "--feature_framerate", "8", "--batch_size_val", "9")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    results = read_results(out, "results_test_eval.json")
    assert results["num_captions"] == 18 and results["num_videos"] == 18


@pytest.mark.parametrize("script", [s for s in SCRIPTS if "synthetic" not in s])
@pytest.mark.parametrize("model", MODELS)
def test_scripts_run_the_published_protocol_unless_improved(script, model):
    from dataloaders.video_reader import published_grid
    from engine.builders import frame_grid
    from engine.protocol import SETTINGS

    env = {"DRY_RUN": "1", "MODEL": model, "NPROC": "1", "PRETRAINED_PATH": "iv.ckpt", "INIT_MODEL": "ft.bin"}
    for extra in ((), ("--improved",)):
        argv = shlex.split(_run(script, env, *extra).stdout.strip())
        args = main_task_retrieval.get_args(argv[argv.index("main_task_retrieval.py") + 1:])
        codebase = "clip4clip" if model == "clip4clip" else "internvideo"
        assert args.published_codebase == codebase
        for dest, setting in SETTINGS.items():
            assert getattr(args, dest) == setting.value(bool(extra), args), (dest, extra)
        if not extra:
            assert frame_grid(args) == published_grid(args.datatype, codebase)
