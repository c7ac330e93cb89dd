"""Every per-dataset script: DRY_RUN prints a command whose arguments the entry point accepts;
one script runs for real on a tiny CPU configuration."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

import main_task_retrieval
from tests.engine_helpers import TINY_CLIP, read_results

ROOT = Path(__file__).resolve().parents[1]
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
@pytest.mark.parametrize("model", ["internvideo-l14", "clip-b"])
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
    assert args.output_dir
    if "eval_finetuned" in script:
        assert args.init_model == "ft.bin"
    if script == "finetune_scripts/train_msrvtt.sh":
        assert args.expand_msrvtt_sentences


def test_unknown_model_variant_is_refused():
    result = _run("zeroshot_scripts/eval_msrvtt.sh", {"DRY_RUN": "1", "MODEL": "rn50"})
    assert result.returncode == 2 and "MODEL must be" in result.stderr


def test_missing_annotations_fail_before_work(tmp_path):
    result = _run("zeroshot_scripts/eval_msvd.sh", {"DATA_DIR": str(tmp_path), "MODEL": "clip-b"})
    assert result.returncode == 2 and "msvd annotations not found" in result.stderr


def test_zeroshot_script_runs_for_real(synthetic_data, tmp_path):
    """zeroshot_scripts/eval_msrvtt.sh, plain CLIP variant, a tiny random CLIP file, on CPU."""
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
                  {"MODEL": "clip-b", "DATA_DIR": str(tmp_path / "MSR-VTT"), "CLIP_NAME": str(clip_file),
                   "OUTPUT_DIR": str(out), "NPROC": "1", "NUM_WORKERS": "0", "PYTHON": str(ROOT / ".venv/bin/python")
                   if (ROOT / ".venv/bin/python").exists() else "python3"},
                  "--max_frames", "8", "--feature_framerate", "8", "--batch_size_val", "9")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    results = read_results(out, "results_test_eval.json")
    assert results["num_captions"] == 18 and results["num_videos"] == 18
