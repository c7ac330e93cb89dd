"""One training epoch: accumulation, torch.amp, clipping, and a guard against NaN losses."""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from engine.distributed import DistInfo, all_reduce_sum
from modules.optimization import clamp_logit_scale, current_lrs

logger = logging.getLogger(__name__)

MAX_BAD_STEPS_IN_A_ROW = 10


class NonFiniteLossError(RuntimeError):
    pass


def autocast_for(precision: str, device: torch.device):
    """torch.amp autocast for bf16/fp16; nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class TrainState:
    """What the loop needs to continue where it stopped."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps taken
    bad_in_a_row: int = 0
    best_score: float = float("-inf")
    history: list = field(default_factory=list)


class Trainer:
    def __init__(self, model: nn.Module, train_model: nn.Module, optimizer, scheduler, scaler, info: DistInfo,
                 args, state: TrainState, step_log: Path | None = None, writer=None):
        self.model = model  # the bare model (checkpoints, logit scale)
        self.train_model = train_model  # what forward runs through (DDP wrapper or the model)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.info = info
        self.args = args
        self.state = state
        self.accum = args.gradient_accumulation_steps
        self.scaler = scaler
        self.step_log = step_log
        self.writer = writer  # tensorboard SummaryWriter on rank 0 when tensorboard is installed

    # ------------------------------------------------------------------ one micro-batch
    def _forward(self, batch: dict) -> torch.Tensor:
        batch = {k: v.to(self.info.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with autocast_for(self.args.precision, self.info.device):
            return self.train_model(batch["input_ids"], batch["input_mask"], batch["video"], batch["video_mask"],
                                    video_ids=batch.get("video_index"))

    def _sync_context(self, last_micro_step: bool):
        if not last_micro_step and hasattr(self.train_model, "no_sync"):
            return self.train_model.no_sync()
        return nullcontext()

    def _global_loss(self, loss: torch.Tensor) -> tuple[float, bool]:
        """The loss of the whole global batch (mean of the ranks' shares, each of which is
        scaled to the full loss) and whether any rank's loss is NaN or inf, in one all-reduce:
        every rank then skips the same steps."""
        value = loss.detach().float().reshape(1)
        finite = torch.isfinite(value)
        stats = torch.cat([torch.where(finite, value, torch.zeros_like(value)), (~finite).float()])
        stats = all_reduce_sum(stats)
        return stats[0].item() / self.info.world_size, bool(stats[1].item() > 0)

    # ------------------------------------------------------------------ optimizer step
    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        clamp_logit_scale(self.model)  # temperature stays >= 0.01 (openai/CLIP#46)
        self.state.global_step += 1

    def _skip_bad_step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.state.bad_in_a_row += 1
        logger.warning("non-finite loss (%s on this rank) at step %d: step skipped (%d in a row)",
                       loss.item(), self.state.global_step, self.state.bad_in_a_row)
        if self.state.bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
            raise NonFiniteLossError(f"{MAX_BAD_STEPS_IN_A_ROW} non-finite losses in a row: stopping. "
                                     "Try a lower --lr, --precision bf16 instead of fp16, or check the data.")

    # ------------------------------------------------------------------ the epoch
    def train_epoch(self, loader, epoch: int) -> dict:
        self.train_model.train()
        sampler = getattr(loader, "batch_sampler", None)
        for obj in (getattr(loader, "sampler", None), sampler):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        steps_per_epoch = len(loader) // self.accum
        total_loss, counted, replaced, samples = 0.0, 0, 0, 0
        window_start, window_samples = time.time(), 0
        micro_losses, bad = [], False
        bar = tqdm(loader, total=steps_per_epoch * self.accum, desc=f"epoch {epoch + 1}", disable=not self.info.is_main)
        for micro, batch in enumerate(bar):
            if micro >= steps_per_epoch * self.accum:
                break  # an incomplete accumulation group at the end is dropped
            replaced += int(batch.get("replaced", torch.zeros(1)).sum())
            last = (micro + 1) % self.accum == 0
            loss = self._forward(batch)
            global_loss, nonfinite = self._global_loss(loss)
            bad = bad or nonfinite
            if not bad:
                with self._sync_context(last):
                    self.scaler.scale(loss / self.accum).backward()
                micro_losses.append(global_loss)
            size = batch["input_ids"].shape[0] * self.info.world_size
            samples += size
            window_samples += size
            if not last:
                continue
            if bad:
                self._skip_bad_step(loss)
                micro_losses, bad = [], False
                continue
            self.state.bad_in_a_row = 0
            self._optimizer_step()
            step_loss = sum(micro_losses) / len(micro_losses)
            micro_losses = []
            total_loss += step_loss
            counted += 1
            self._record(epoch, step_loss)
            if self.state.global_step % self.args.n_display == 0:
                elapsed = max(time.time() - window_start, 1e-9)
                logger.info("epoch %d step %d/%d (global %d) loss %.4f lr %s %.1f samples/s", epoch + 1,
                            micro // self.accum + 1, steps_per_epoch, self.state.global_step, step_loss,
                            " ".join(f"{k}={v:.3g}" for k, v in current_lrs(self.optimizer).items()),
                            window_samples / elapsed)
                window_start, window_samples = time.time(), 0
            bar.set_postfix(loss=f"{step_loss:.4f}")
        replaced = int(all_reduce_sum(torch.tensor([replaced], device=self.info.device)).item())
        if replaced:
            logger.warning("epoch %d: %d samples had undecodable videos and were replaced (--skip_bad_videos)",
                           epoch + 1, replaced)
        return {"epoch": epoch + 1, "loss": total_loss / max(counted, 1), "steps": counted,
                "samples": samples, "replaced_videos": replaced}

    def _record(self, epoch: int, loss: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, self.state.global_step)
            for name, lr in current_lrs(self.optimizer).items():
                self.writer.add_scalar(f"train/lr/{name}", lr, self.state.global_step)
        if self.step_log is None or not self.info.is_main:
            return
        with open(self.step_log, "a") as handle:
            handle.write(json.dumps({"epoch": epoch + 1, "step": self.state.global_step, "loss": loss,
                                     "lr": [g["lr"] for g in self.optimizer.param_groups]}) + "\n")
