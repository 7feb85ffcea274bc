"""Data-parallel training of one filter across processes (torchrun): each rank paints a slice of the same batch.

`torchrun --nproc-per-node 2 -m rotoscope train poster.jpg --name poster` starts two copies of the CLI; torchrun
sets RANK, WORLD_SIZE and MASTER_ADDR/PORT, and train() calls setup(). Every rank draws the same global batch (the
crops depend only on seed and step), keeps its slice, and DistributedDataParallel averages the gradients, so a run
on N ranks takes the same steps as one process with the same global batch, up to float rounding (the filter
network has no batch statistics: instance norm is per image). Rank 0 alone writes (checkpoints, TensorBoard, the
story, the filter) and speaks; the others read the checkpoint to resume. gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import RotoscopeError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints (rank 0, or the only process)."""
        return self.rank == 0

    def card(self) -> dict:
        return {"world_size": self.size, "backend": self.backend}


SINGLE = World()


def setup(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment; a single process when there is none."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return SINGLE
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":  # one GPU per rank: torchrun's LOCAL_RANK names it
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=dt.timedelta(minutes=30))
    return World(dist.get_rank(), dist.get_world_size(), backend)


def check_batch(world: World, batch: int) -> None:
    if batch % world.size:
        raise RotoscopeError(f"batch {batch} cannot be split evenly over {world.size} processes; choose a "
                             f"multiple of {world.size}")


def wrap(net: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The network as the training step calls it: DistributedDataParallel over the ranks, or itself."""
    if world.size == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def shard(batch: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's slice of the global batch (contiguous rows, equal sizes: check_batch made sure)."""
    if world.size == 1:
        return batch
    n = batch.shape[0] // world.size
    return batch[world.rank * n:(world.rank + 1) * n]


def mean(values: dict[str, float], world: World) -> dict[str, float]:
    """Loss terms averaged over the ranks: what one process would have logged for the whole batch, and the same
    numbers on every rank, so that every rank takes the same decisions (stop, fall back, finish)."""
    if world.size == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / world.size for k, v in zip(keys, t)}


def batch_mean(world: World):
    """For the loss: a statistic of this rank's slice -> the same statistic of the whole batch (slices are equal
    in size, so the mean of the ranks' means); None for one process."""
    if world.size == 1:
        return None

    def across(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().clone()  # a normaliser: no gradient flows through it across ranks
        dist.all_reduce(t)
        return t / world.size

    return across


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
