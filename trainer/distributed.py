"""Data-parallel training: process group set-up and the global-batch sampler.

Why not ``DistributedSampler``: it shards the *epoch* (rank r gets every
N-th index of the permutation) and then batches, so the examples that meet
in one optimizer step differ from a single-process run. ringfold shards
each *global batch* instead — rank r gets indices r, r+N, … of the same
batch one process would see — and scales each rank's mean loss by its share,
so DDP's gradient average is the single-process gradient, step for step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a permutation fixed by (seed, epoch), so a resumed run sees the same."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_samples, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, num_samples, batch_size)]


def local_share(batch: list[int], info: DistInfo) -> list[int]:
    return batch[info.rank :: info.world_size]


def all_reduce_sum(values: list[float], info: DistInfo, device) -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """The command that runs ``ringfold train TRAIN_ARGS`` in ``nproc`` processes under torchrun.

    Each process is ``python -m ringfold train ...`` with torchrun's WORLD_SIZE/RANK set, which
    :func:`init_distributed` reads; ``torchrun --nproc_per_node=N -m ringfold train ...`` is the same.
    """
    import sys

    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*runner, "-m", "ringfold", "train", *train_args]
