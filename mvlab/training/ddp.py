"""Data-parallel training under ``torchrun`` (PyTorch DDP): one process per device, one model.

    torchrun --nproc_per_node 2 -m mvlab.cli train proxy --data builtin --set batch_size=128

The trainer calls these helpers when ``torchrun`` (or any launcher that sets ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) started it with more than one process.
The contract is *the same run as one process with the same global batch*:

- ``train.batch_size`` stays the global batch; every rank builds the same loader (same order and
  augmentation, a pure function of seed and epoch) and keeps its contiguous ``batch/world``
  slice of each batch, so the ranks together see exactly the one-process batch;
- BatchNorm statistics are computed over the global batch: ``torch.nn.SyncBatchNorm`` on GPUs,
  and on the CPU (where SyncBatchNorm refuses to run) ``AllReduceBatchNorm2d``, which all-reduces
  the per-channel sums with an autograd-aware collective;
- gradients are averaged by DDP; the logged loss is averaged over ranks every check, which also
  makes every rank see a NaN at the same step and stop together;
- every rank evaluates the full held-out and val splits (identical weights, identical numbers);
  only rank 0 writes checkpoints and calls ``on_epoch``, and its early-stop verdict is broadcast.

Backends: ``nccl`` for CUDA devices (``cuda:LOCAL_RANK``), ``gloo`` on the CPU."""
from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mvlab.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def setup(device: torch.device) -> tuple[DistContext | None, torch.device]:
    """Join the process group torchrun described, once per process; returns the context (None
    for a one-process run) and the device this rank trains on (``cuda:LOCAL_RANK`` on GPUs)."""
    world = launched_world_size()
    if world <= 1:
        return None, device
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started local rank {local_rank} but this host has "
                            f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node "
                            f"{torch.cuda.device_count()}")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        atexit.register(leave)  # every entry point (train, sweep, followers) leaves on exit
    return DistContext(rank, world, local_rank, dist.get_backend()), device


def check_batch(batch_size: int, ctx: DistContext) -> None:
    if batch_size % ctx.world_size:
        raise UserError(f"train.batch_size={batch_size} is the global batch and must divide "
                        f"evenly over {ctx.world_size} processes; use a multiple of "
                        f"{ctx.world_size}")


class ShardedLoader:
    """A training loader whose batches are this rank's slice of the global batch.

    Wraps any mvlab training loader (``set_epoch``, ``__len__``, drops ragged last batches), so
    the shards of one step are equal in size and their union is the one-process batch."""

    def __init__(self, loader: Any, ctx: DistContext):
        self.loader, self.ctx = loader, ctx

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:  # batch_size, generator, skipped, ...
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rank, world = self.ctx.rank, self.ctx.world_size
        for images, labels in self.loader:
            if images.shape[0] % world:
                raise UserError(f"a training batch of {images.shape[0]} images cannot be split "
                                f"over {world} processes; use a train.batch_size that is a "
                                f"multiple of {world}")
            part = images.shape[0] // world
            yield images[rank * part:(rank + 1) * part], labels[rank * part:(rank + 1) * part]


def shard_bundle(bundle: Any, ctx: DistContext) -> Any:
    """The bundle with its training loader sharded (held-out and val stay whole)."""
    sharded = ShardedLoader(bundle.train, ctx)
    try:
        return replace(bundle, train=sharded)
    except TypeError:  # not a dataclass: a duck-typed bundle from a test or a notebook
        bundle.train = sharded
        return bundle


class _SumOverRanks(torch.autograd.Function):
    """y = sum of x over ranks; its backward is the same sum of the incoming gradients (every
    rank's loss depends on every rank's x through y)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every rank's shard (the CPU's SyncBatchNorm).

    Per-channel sums of x and x^2 and the element count are summed over ranks by an
    autograd-aware all-reduce, so the forward and the backward equal BatchNorm over the
    concatenated global batch (checked to 1e-6 against one process in tests/test_ddp.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [d for d in range(x.dim()) if d != 1]
        xf = x.float()
        count = torch.full((1,), float(xf.numel() // channels), device=x.device)
        stats = _SumOverRanks.apply(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels:2 * channels] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d normalises over the global batch: SyncBatchNorm on GPUs,
    ``AllReduceBatchNorm2d`` elsewhere (weights and running statistics carried over)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_batchnorm(model)


def _swap_batchnorm(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        swapped = AllReduceBatchNorm2d(module.num_features, module.eps, module.momentum,
                                       module.affine, module.track_running_stats)
        swapped.load_state_dict(module.state_dict())
        swapped.train(module.training)
        return swapped
    for name, child in module.named_children():
        setattr(module, name, _swap_batchnorm(child))
    return module


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (already on ``device``)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def average(values: torch.Tensor, ctx: DistContext | None) -> torch.Tensor:
    """The mean of ``values`` over ranks (unchanged without a context)."""
    if ctx is None:
        return values
    backend_device = values.device if ctx.backend == "nccl" else torch.device("cpu")
    out = values.detach().to(backend_device, torch.float64).clone()
    dist.all_reduce(out)
    return (out / ctx.world_size).to(values.device, values.dtype)


def current() -> DistContext | None:
    """The context of the process group this process joined (None outside one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DistContext(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend())


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; for small messages such as a trial's plan)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


LEAVE_TIMEOUT = timedelta(seconds=60)


def finish() -> None:
    """Leave the process group after a command succeeded (``mvlab.cli.main`` calls this): the
    ranks meet first, since a gloo group torn down while another rank's gloo threads still
    talk to it can abort that rank ("terminate called without an active exception"). Only on
    success: a rank that failed must not wait for one still inside a collective with it. NCCL
    needs no meeting (its destroy aborts the communicators; the aborts came from gloo's
    threads). A rank that fails later is waited for ``LEAVE_TIMEOUT`` at most by rank 0."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=LEAVE_TIMEOUT)
        except RuntimeError:
            pass  # a rank failed after all: leave anyway; its launcher reports the failure
    dist.destroy_process_group()


def leave() -> None:
    """Leave the process group at exit, whatever ended the run (``setup`` registers this): a
    gloo group still alive at interpreter exit can abort the process."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def from_main(flag: bool, ctx: DistContext | None) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. the early-stop verdict of its ``on_epoch``)."""
    if ctx is None:
        return flag
    box = [bool(flag)]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])
