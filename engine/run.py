"""What `main_task_retrieval.py` runs: set-up, then training and/or evaluation."""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import dataloaders
from dataloaders.video_reader import probe_video
from engine import builders, run_folder
from engine.distributed import DistInfo, barrier, worker_context
from engine.evaluation import encode_items, retrieval_metrics, similarity_matrix
from engine.run_folder import open_run_folder, write_json
from engine.training import Trainer, TrainState, autocast_for
from metrics import format_metrics_table
from modules.weights import load_model_weights

logger = logging.getLogger("retrieval")


def setup_logging(output_dir: Path, info: DistInfo) -> None:
    """Rank 0 logs to the console and to `log.txt`; other ranks only warn."""
    output_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    root.addHandler(console)
    if info.is_main:
        file_handler = logging.FileHandler(output_dir / "log.txt")
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    root.setLevel(logging.INFO if info.is_main else logging.WARNING)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- evaluation
def _pick(features: dict, keys: tuple[str, ...]) -> dict:
    """Only what the similarity reads is kept and gathered."""
    return {key: features[key] for key in keys}


def evaluate(model, args: argparse.Namespace, info: DistInfo, subset: str, tag: str,
             extra: dict | None = None) -> dict | None:
    """Encode the split's captions and videos once, score all pairs, report on rank 0
    (``extra`` goes into the results JSON as it is)."""
    split, texts, videos = builders.eval_datasets(args, subset, model)
    model.eval()
    started = time.time()
    text_keys, video_keys = model.similarity_keys()
    with autocast_for(args.precision, info.device):
        text = encode_items(lambda b: _pick(model.encode_text(b["input_ids"], b["input_mask"]), text_keys),
                            texts, info, args.batch_size_val, args.num_thread_reader, f"{subset} captions")
        video = encode_items(lambda b: _pick(model.encode_video(b["video"], b["video_mask"]), video_keys),
                             videos, info, args.batch_size_val, args.num_thread_reader, f"{subset} videos")
        sim = similarity_matrix(model.similarity, text, video, info)
    if not info.is_main:
        return None
    results = retrieval_metrics(sim, np.asarray(split.caption_video))
    results.update(dataset=args.datatype, split=subset, tag=tag, checkpoint=args.init_model,
                   num_captions=len(texts), num_videos=len(videos), seconds=round(time.time() - started, 1),
                   world_size=info.world_size, **(extra or {}))
    logger.info("%s on %s %s (%d captions, %d videos):\n%s", tag, args.datatype, subset, len(texts),
                len(videos), _table(results))
    extra = split.report(sim) if split.report else None
    if extra:  # metrics only this dataset knows (the synthetic benchmark's temporal twins)
        results[split.report.name] = extra
        logger.info("%s %s report:\n%s", tag, split.report.name, split.report.format(extra))
    write_json(Path(args.output_dir) / f"results_{subset}_{tag}.json", results)
    return results


def _table(results: dict) -> str:
    return format_metrics_table({"plain": results["plain"], "DSL (dual softmax, transductive)": results["dsl"]},
                                markdown=False)


def preflight_videos(args: argparse.Namespace, subsets: set[str]) -> None:
    """Open every video the run will evaluate (headers only, no decoding), so a missing or
    broken one fails in seconds rather than after the first epoch."""
    started = time.time()
    count = 0
    for subset in sorted(subsets):
        split = dataloaders.load_split(args.datatype, builders.data_options(args), subset)
        for item in tqdm(split.videos, desc=f"checking {subset} videos", disable=len(split.videos) < 100):
            probe_video(item.path)
        count += len(split.videos)
    logger.info("checked the %d videos of the %s split(s) in %.1f s", count, "/".join(sorted(subsets)),
                time.time() - started)


def report_selected(model, args: argparse.Namespace, info: DistInfo, split: str, last_epoch: int) -> dict | None:
    """End of training: the selected checkpoint's test metrics (plain and DSL), in the log and in
    ``results_test_selected.json``. Selected on test, they were measured when it was evaluated;
    selected on val, the checkpoint is loaded, evaluated on test, and the last epoch's weights are
    put back (a following --do_eval still sees the model at the end of training)."""
    output_dir = Path(args.output_dir)
    best = run_folder.read_best(output_dir)
    if best is None:
        logger.warning("no checkpoint was selected: no test metrics to report")
        return None
    selection = {"selection": {"split": split, "metric": best["metric"], "value": best["value"],
                               "epoch": best["epoch"], "checkpoint": best["checkpoint"],
                               "label": f"selected on {split}"}}
    if split == "test":
        return _report_test_selected(args, info, best, selection)
    load_model_weights(model, run_folder.checkpoint_root(output_dir) / run_folder.BEST_DIR)
    results = evaluate(model, args, info, "test", tag="selected", extra=selection)
    if best["epoch"] != last_epoch:
        load_model_weights(model, run_folder.checkpoint_root(output_dir) / f"epoch_{last_epoch}")
    if results is not None:
        logger.info("test metrics above: the checkpoint of epoch %s, selected on val (t2v R@1 %.2f there)",
                    best["epoch"], best["value"])
    return results


def _report_test_selected(args: argparse.Namespace, info: DistInfo, best: dict, selection: dict) -> dict | None:
    if not info.is_main:
        return None
    metrics = dict(best["metrics"])
    results = {"dsl": metrics.pop("dsl"), "plain": metrics, "dataset": args.datatype, "split": "test",
               "tag": "selected", **selection}
    logger.info("selected checkpoint: epoch %s, selected on test (best test t2v R@1 over the epochs, as InternVideo "
                "reports; not an unbiased estimate):\n%s", best["epoch"], _table(results))
    write_json(Path(args.output_dir) / "results_test_selected.json", results)
    return results


# ---------------------------------------------------------------------------- training
def train_loader(args: argparse.Namespace, info: DistInfo, dataset) -> DataLoader:
    per_rank = args.batch_size // args.gradient_accumulation_steps // info.world_size
    common = dict(num_workers=args.num_thread_reader, pin_memory=info.device.type == "cuda",
                  persistent_workers=args.num_thread_reader > 0,
                  multiprocessing_context=worker_context(args.num_thread_reader))
    if args.twin_batches:
        sampler = builders.twin_batch_sampler(dataset, per_rank, info, args.seed)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True, **common)


def tensorboard_writer(output_dir: Path, info: DistInfo):
    """Tensorboard events in <output_dir>/tensorboard when the package is installed (rank 0)."""
    if not info.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed: no event files (log.txt and train_steps.jsonl are written)")
        return None
    return SummaryWriter(str(output_dir / "tensorboard"))


def selection_split(args: argparse.Namespace) -> str:
    """The split checkpoints are selected on: test (published), or val (`--selection_split val`)
    where the dataset has a validation split of its own."""
    if args.selection_split == "val" and not dataloaders.dataset_entry(args.datatype).has_val_split:
        return "test"
    return args.selection_split


def train(model, args: argparse.Namespace, info: DistInfo) -> None:
    output_dir = Path(args.output_dir)
    val_subset = selection_split(args)
    if val_subset != args.selection_split:
        logger.info("--selection_split %s: %s has no validation split; selecting on test", args.selection_split,
                    args.datatype)
    dataset = builders.train_dataset(args, model)
    loader = train_loader(args, info, dataset)
    steps_per_epoch = len(loader) // args.gradient_accumulation_steps
    total_steps = steps_per_epoch * args.epochs
    optimizer, scheduler = builders.optimizer_and_schedule(model, args, total_steps)
    state = TrainState()
    scaler = torch.amp.GradScaler(info.device.type, enabled=args.precision == "fp16")
    if info.is_main:
        open_run_folder(output_dir)  # what a crash left: an interrupted best/ swap, partial saves
    barrier()
    if args.resume_model:
        state = builders.resume(args, model, optimizer, scheduler, scaler, state, info)
        logger.info("resumed from %s after epoch %d (step %d)", args.resume_model, state.epoch, state.global_step)
    train_model = model
    if info.enabled:
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=device_ids,
                                              find_unused_parameters=args.find_unused_parameters)
    trainer = Trainer(model, train_model, optimizer, scheduler, scaler, info, args, state,
                      step_log=output_dir / "train_steps.jsonl", writer=tensorboard_writer(output_dir, info))
    logger.info("training: %d samples, %d steps per epoch, %d epochs; checkpoints selected on the %s split",
                len(dataset), steps_per_epoch, args.epochs, val_subset)
    for epoch in range(state.epoch, args.epochs):
        summary = trainer.train_epoch(loader, epoch)
        logger.info("epoch %d done: mean loss %.4f over %d steps", epoch + 1, summary["loss"], summary["steps"])
        state.epoch = epoch + 1
        state.history.append({**summary, "selection_split": val_subset})
        folder = builders.save_epoch(output_dir, model, optimizer, scheduler, scaler, state, args, info)
        barrier()
        results = evaluate(model, args, info, val_subset, tag=f"epoch{epoch + 1}")
        if trainer.writer is not None and results:
            for direction in ("t2v", "v2t"):
                trainer.writer.add_scalar(f"{val_subset}/{direction}_R1", results["plain"][direction]["R1"], epoch + 1)
                trainer.writer.add_scalar(f"{val_subset}/{direction}_R1_dsl", results["dsl"][direction]["R1"], epoch + 1)
        builders.record_evaluation(folder, results, val_subset, state)
        barrier()
    if trainer.writer is not None:
        trainer.writer.close()
    if info.is_main and math.isfinite(state.best_score):
        logger.info("best text-to-video R@1 on the %s split: %.2f", val_subset, state.best_score)
    report_selected(model, args, info, val_subset, state.epoch)


def check_before_work(args: argparse.Namespace, info: DistInfo) -> None:
    """Errors that would otherwise surface only after the model is built or an epoch has run."""
    reads_csv = dataloaders.dataset_entry(args.datatype).reads_csv
    for name in ("data_path", "features_path") + (("train_csv",) if args.do_train and reads_csv else ()):
        if not Path(getattr(args, name)).exists():
            raise FileNotFoundError(f"--{name} {getattr(args, name)} does not exist")
    if args.do_train:
        group = args.gradient_accumulation_steps * info.world_size
        if args.batch_size % group:
            raise ValueError(f"--batch_size {args.batch_size} is not divisible by {info.world_size} processes x "
                             f"{args.gradient_accumulation_steps} accumulation steps")
    if args.resume_model and not Path(args.resume_model).exists():
        raise FileNotFoundError(f"--resume_model {args.resume_model} does not exist")
    if args.init_model and not Path(args.init_model).exists():
        raise FileNotFoundError(f"--init_model {args.init_model} does not exist")
    dataloaders.check_splits(args.datatype, builders.data_options(args), train=args.do_train,
                             eval_subset=args.eval_split if args.do_eval else None,
                             selection_subset=selection_split(args))


def run(args: argparse.Namespace, info: DistInfo) -> None:
    check_before_work(args, info)
    output_dir = Path(args.output_dir)
    setup_logging(output_dir, info)
    logger.info("arguments: %s", " ".join(f"--{k}={v}" for k, v in sorted(vars(args).items())))
    seed_everything(args.seed)
    if args.do_train:
        preflight_videos(args, {selection_split(args), "test"} | ({args.eval_split} if args.do_eval else set()))
    model = builders.build_model(args).to(info.device)
    if args.do_train:
        train(model, args, info)
    if args.do_eval:
        evaluate(model, args, info, args.eval_split, tag="eval")
