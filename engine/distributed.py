"""Process-group set-up and collectives that also work with no process group at all.

`torchrun` (and `torch.distributed.launch`) set RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous variables; a plain `python main_task_retrieval.py` sets none of them and runs as
one process without a group. A `torchrun --nproc_per_node=1` run gets a one-process group,
so it goes through the same DDP and collective code as a multi-process run (the GPU check
relies on this). NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # the process group's backend; None without a group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.backend is not None


def pick_device(requested: str | None, local_rank: int) -> torch.device:
    """`--device` wins; otherwise this process's GPU when there is one, else the CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(requested_device: str | None = None, local_rank_arg: int | None = None,
                     timeout_minutes: int = 60) -> DistInfo:
    """Join the process group that the launcher describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank_arg or 0))
    device = pick_device(requested_device, local_rank)
    launched_by_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    if (world_size > 1 or launched_by_torchrun) and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
        logger.info("process group: backend %s, rank %d of %d, device %s", backend, rank, world_size, device)
    backend = dist.get_backend() if dist.is_initialized() else None
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device, backend=backend)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if is_dist():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_rows(tensor: torch.Tensor) -> list[torch.Tensor]:
    """All-gather tensors whose first dimension differs between ranks; one entry per rank."""
    if not is_dist():
        return [tensor]
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    buckets = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(buckets, padded.contiguous())
    return [bucket[: int(n.item())] for bucket, n in zip(buckets, sizes)]


def cleanup(wait_for_peers: bool = True) -> None:
    """Leave the process group. After a normal run every rank first waits for all the others
    (a barrier): a rank that destroys its group and exits while a peer is still busy (writing
    results, in a last collective) makes the peer's gloo abort the process
    (``terminate called without an active exception``). After an error, ``wait_for_peers=False``:
    the peers may never reach the barrier, and a launcher ends the job when one rank fails."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait_for_peers and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


def worker_context(num_workers: int):
    """DataLoader workers start from a clean forkserver process, not by forking this one: a
    worker forked after PyAV/FFmpeg (or decord) ran in the parent can hang inside the
    decoder's locks (seen in the test suite). The forkserver imports torch once (it never
    decodes anything), so a worker starts without importing torch itself: a loader with 2
    workers started in 0.8 s instead of 25 s on a loaded 2-core machine, and an evaluation
    starts a loader for its captions and one for its videos."""
    if num_workers > 0 and "forkserver" in multiprocessing.get_all_start_methods():
        multiprocessing.set_forkserver_preload(["__main__", "torch"])  # no effect once the server runs
        return "forkserver"
    return None
