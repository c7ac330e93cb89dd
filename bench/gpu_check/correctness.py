"""Section 1: the device computes what the CPU computes.

* Features: text and video features and the similarity matrix of small random models
  (meanP, seqTransf, InternVideo's encoder) on the device against the CPU in fp32: fp32 with
  TF32 off within FP32_TOL; with torch's default TF32 settings (reported only); bf16 and fp16
  autocast within their stated tolerances. Errors are max |device - CPU| / max |CPU|.
* One training step (the engine's Trainer and optimizer) in fp32, bf16 autocast, fp16
  autocast with GradScaler, and fp16 CLIP weights as CLIP4Clip trains them (`--clip_weights
  fp16`: `modules.clip.convert_weights_to_fp16`, no autocast): the loss is finite,
  every trainable tensor stays finite, the weights move, and the loss agrees with fp32 (fp32:
  with the CPU's) within the tolerances.
* `torchrun --nproc_per_node 1` of `main_task_retrieval.py` (a one-process NCCL group on a GPU,
  gloo on the CPU): one training epoch and an evaluation on tiny generated data.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from bench.gpu_check import common
from bench.gpu_check.recorder import SectionRecorder

TITLE = "Correctness on the device"
ROOT = Path(__file__).resolve().parents[2]
FP32_TOL = 1e-4
TOLERANCES = {"fp32": FP32_TOL, "bf16": 5e-2, "fp16": 1e-2, "fp16-weights": 1e-2}
FP32_AFTER_STEP_TOL = 1e-3  # after one AdamW step: near-zero gradients may take either sign
FP16_STEPS = 4
CPU = torch.device("cpu")


def run(ctx: common.Context, rec: SectionRecorder) -> None:
    rec.info(**common.device_info(ctx.device), tolerances=TOLERANCES)
    shape = common.TINY if ctx.smoke else common.SMALL
    frames = 4 if ctx.smoke else 8
    for head in ("meanP", "seqTransf", "InternVideo"):
        rec.measure({"part": "features", "model": head},
                    lambda row, head=head: feature_errors(ctx, rec, row, head, shape, frames))
    train_step_checks(ctx, rec, shape, frames)
    rec.measure({"part": "torchrun", "model": "meanP (tiny)"}, lambda row: torchrun_check(ctx, rec, row))


# ----------------------------------------------------------------------------- features
def _model_args(ctx: common.Context, head: str, shape: dict, frames: int):
    if head == "InternVideo":
        extra = ["--clip_evl", "--max_words", "77"]
    else:
        extra = ["--sim_header", head, "--max_words", "32"]
    return common.retrieval_args(ctx.out / "scratch", *common.clip_config_args(shape), "--max_frames", str(frames),
                                 "--clip_weights", "fp32", *extra)


@contextlib.contextmanager
def tf32(enabled: bool | None):
    """TF32 for matmuls and cuDNN convolutions on (True), off (False) or as torch set it (None)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if enabled is not None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.no_grad()
def encode(model, batch: dict, precision: str, device: torch.device) -> dict[str, torch.Tensor]:
    from engine.training import autocast_for

    batch = {k: v.to(device) for k, v in batch.items()}
    with autocast_for(precision, device):
        text = model.encode_text(batch["input_ids"], batch["input_mask"])
        video = model.encode_video(batch["video"], batch["video_mask"])
        sim = model.similarity(text, video)
    return {"text": text["text"], "video": video["video"], "similarity": sim}


def feature_errors(ctx, rec, row: dict, head: str, shape: dict, frames: int) -> None:
    args = _model_args(ctx, head, shape, frames)
    torch.manual_seed(0)  # the same random model in every run: an unlucky draw once put meanP's bf16 gap past its bound
    model = common.build_model(args).eval()
    batch = common.random_batch(4 if ctx.smoke else 16, frames, shape["image_resolution"], args.max_words,
                                padded_frames=frames // 2)
    reference = encode(model, batch, "fp32", CPU)
    on_device = copy.deepcopy(model).to(ctx.device)
    variants = [("fp32", "fp32", False), ("bf16 autocast", "bf16", None), ("fp16 autocast", "fp16", None)]
    if ctx.cuda:
        variants.insert(1, ("fp32, torch's TF32 defaults", "fp32", None))
    for label, precision, tf32_setting in variants:
        with tf32(tf32_setting):
            out = encode(on_device, batch, precision, ctx.device)
        errors = {name: common.relative_error(out[name], reference[name]) for name in reference}
        row[label] = max(errors.values())
        detail = ", ".join(f"{name} {err:.2e}" for name, err in errors.items())
        if label.startswith("fp32, torch"):
            rec.note(f"{head}: fp32 with torch's TF32 defaults (cuDNN convolutions in TF32) differs from the CPU "
                     f"by {row[label]:.2e} ({detail}); not checked")
            continue
        tol = TOLERANCES[precision]
        rec.check(f"{head} features, {label} vs CPU fp32 within {tol:g}", row[label] <= tol, detail)
    del on_device
    common.release(ctx.device)


# ----------------------------------------------------------------------------- training
def _trainable_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def one_step(base_model, args, batch: dict, precision: str, device: torch.device) -> dict:
    """Optimizer steps on a copy of `base_model`: the loss before and after, what moved.

    fp16 autocast takes FP16_STEPS steps: GradScaler skips the first steps while it lowers its
    initial scale (65536) to one at which no gradient overflows, as it does in every run."""
    from engine.training import autocast_for

    model = copy.deepcopy(base_model)
    model.to(device).train()  # no dropout in these heads: train mode computes what eval mode does
    batch = {k: v.to(device) for k, v in batch.items()}

    def loss_now() -> float:
        with torch.no_grad(), autocast_for(args.precision, device):
            return float(model(batch["input_ids"], batch["input_mask"], batch["video"], batch["video_mask"]))

    before, loss = _trainable_snapshot(model), loss_now()
    trainer = common.trainer_for(model, args, device)
    steps = FP16_STEPS if precision == "fp16" else 1
    common.train_steps(trainer, batch, steps=steps)
    after = _trainable_snapshot(model)
    moved = sum(not torch.equal(before[n], after[n]) for n in before)
    finite = all(bool(torch.isfinite(t).all()) for t in after.values())
    scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None
    return {"steps": steps, "loss": loss, "loss_after": loss_now(), "tensors_moved": moved,
            "trainable_tensors": len(before), "weights_finite": finite, "grad_scale": scale,
            "fp16_tensors": sum(p.dtype == torch.float16 for p in model.parameters())}


def train_step_checks(ctx, rec, shape: dict, frames: int) -> None:
    batch = common.random_batch(4 if ctx.smoke else 16, frames, shape["image_resolution"], 32, seed=1)
    results: dict[str, dict] = {}
    for precision in ("fp32", "bf16", "fp16", "fp16-weights"):
        def fill(row, precision=precision):
            args = common.train_args(ctx.out / "scratch", precision, *common.clip_config_args(shape),
                                     "--max_frames", str(frames), "--max_words", "32")
            torch.manual_seed(0)  # a random CLIP draws from the global generator: the same weights in every precision
            base = common.build_model(args)  # fp16-weights: cast by the factory (--clip_weights fp16)
            if precision == "fp32":
                results["cpu"] = one_step(base, args, batch, "fp32", CPU)
            result = one_step(base, args, batch, precision, ctx.device)
            results[precision] = result
            row.update(result)
            step_checks(rec, precision, result, results)
        rec.measure({"part": "train step", "precision": precision}, fill)
        common.release(ctx.device)


def step_checks(rec, precision: str, result: dict, results: dict) -> None:
    name = f"train step {precision}"
    rec.check(f"{name}: finite loss and weights", math.isfinite(result["loss"]) and result["weights_finite"],
              f"loss {result['loss']:.6g}")
    rec.check(f"{name}: the weights moved", result["tensors_moved"] > 0,
              f"{result['tensors_moved']} of {result['trainable_tensors']} trainable tensors changed")
    if precision == "fp16-weights":
        rec.check(f"{name}: CLIP's matrices are fp16", result["fp16_tensors"] > 0,
                  f"{result['fp16_tensors']} fp16 tensors")
    if precision == "fp32":
        cpu = results["cpu"]
        err = abs(result["loss"] - cpu["loss"]) / abs(cpu["loss"])
        err_after = abs(result["loss_after"] - cpu["loss_after"]) / abs(cpu["loss_after"])
        rec.check(f"{name}: loss equals the CPU's within {FP32_TOL:g}", err <= FP32_TOL, f"relative error {err:.2e}")
        rec.check(f"{name}: loss after the step equals the CPU's within {FP32_AFTER_STEP_TOL:g}",
                  err_after <= FP32_AFTER_STEP_TOL, f"relative error {err_after:.2e}")
    elif "fp32" in results:
        tol = TOLERANCES[precision]
        err = abs(result["loss"] - results["fp32"]["loss"]) / abs(results["fp32"]["loss"])
        rec.check(f"{name}: loss equals fp32's within {tol:g}", err <= tol, f"relative error {err:.2e}")


# ----------------------------------------------------------------------------- torchrun
def tiny_synthetic_data(root: Path) -> Path:
    from synthetic.generate import SyntheticConfig, generate

    if not (root / "synthetic_meta.json").is_file():
        generate(root, SyntheticConfig(seed=0, num_train=24, num_test=18), workers=1)
    return root


def torchrun_check(ctx, rec, row: dict) -> None:
    data = tiny_synthetic_data(ctx.out / "cache" / "tiny_synthetic")
    run_dir = ctx.out / "torchrun_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = ["--do_train", "--do_eval", "--datatype", "synthetic", "--data_path", str(data / "MSRVTT_data.json"),
            "--train_csv", str(data / "synthetic_train.csv"), "--val_csv", str(data / "synthetic_test.csv"),
            "--features_path", str(data / "videos"), "--feature_framerate", "8", "--max_frames", "8",
            "--max_words", "16", *common.clip_config_args(common.TINY), "--epochs", "1", "--batch_size", "8",
            "--batch_size_val", "18", "--num_thread_reader", "0" if ctx.smoke else "2", "--n_display", "1",
            "--device", str(ctx.device), "--output_dir", str(run_dir)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "bench.gpu_check.ddp_entry", *argv]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    timeout = max(30.0, rec.remaining())
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    (ctx.out / "torchrun_output.txt").write_text(output)
    backend = "nccl" if ctx.cuda else "gloo"
    row.update(returncode=done.returncode, backend=backend)
    if not rec.check("torchrun run exits with 0", done.returncode == 0, output[-1500:] if done.returncode else ""):
        raise RuntimeError(f"torchrun failed with exit code {done.returncode}; see torchrun_output.txt")
    rec.check(f"torchrun run formed a one-process {backend} group", f"process group: backend {backend}" in output)
    steps = [json.loads(line)["loss"] for line in (run_dir / "train_steps.jsonl").read_text().splitlines()]
    results = json.loads((run_dir / "results_test_eval.json").read_text())
    row.update(train_steps=len(steps), last_loss=steps[-1] if steps else None,
               eval_t2v_R1=results["plain"]["t2v"]["R1"], eval_videos=results["num_videos"])
    rec.check("torchrun run: 3 finite training steps", len(steps) == 3 and all(map(math.isfinite, steps)), str(steps))
    rec.check("torchrun run: evaluation of all 18 test videos", results["num_videos"] == 18
              and results["world_size"] == 1)
