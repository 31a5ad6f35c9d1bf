"""Distributed data parallel helpers (torchrun): set up from the environment, reduce metrics, sync BN.

Nothing happens at import time. ``init_distributed`` only creates a process group when the launcher set
``WORLD_SIZE > 1`` (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); the backend is
NCCL on CUDA and gloo on CPU.

BatchNorm across ranks: ``nn.SyncBatchNorm`` only runs on CUDA (DDP refuses it for CPU modules), so on
CPU/gloo :class:`AllReduceBatchNorm2d` is used instead: it all-reduces the per-channel sum, sum of squares
and count (float64) with an autograd-aware all-reduce (gradients summed over ranks too), so forward
statistics and gradients equal those of one process seeing the whole global batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from partialface.devices import resolve_device
from partialface.errors import PartialFaceError


@dataclass(frozen=True)
class DistInfo:
    """rank / world_size / local_rank of this process (0 / 1 / 0 without a process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0



def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns (info, this process's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device, "run.device")
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, "run.device", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), dev


def cleanup() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: Tensor) -> Tensor:
    """In-place SUM over ranks (no-op in one process); returns t."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (in rank order) on every rank; [obj] in one process. (In-memory only.)"""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s obj on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(info: DistInfo, fn: Callable[[], Any], share: bool = True) -> Any:
    """Run ``fn`` on rank 0 and (``share``) give its result to every rank (else the others get None); a
    PartialFaceError there is raised on every rank instead of leaving the others waiting."""
    result: Any = None
    error: str | None = None
    if info.is_main:
        try:
            result = fn()
        except PartialFaceError as e:
            error = str(e)
    error, shared = broadcast_object((error, result if share else None))
    if error is not None:
        raise PartialFaceError(error)
    return result if info.is_main else shared


def main_value(value: float, info: DistInfo, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (one float64 all-reduce; ``value`` itself in one process)."""
    if not info.enabled:
        return value
    buf = torch.tensor([value if info.is_main else 0.0], dtype=torch.float64, device=device)
    return float(all_reduce_sum(buf).item())


class _DifferentiableAllReduce(torch.autograd.Function):
    """SUM over ranks whose gradient is the SUM of the ranks' gradients (d(sum_q L_q)/dx)."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the whole global batch (all ranks); see the module
    docstring. Identical to BatchNorm2d outside training or without a process group. x: (B, C, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        C = x.shape[1]
        xd = x.double()
        count = torch.full((1,), x.numel() // C, dtype=torch.float64, device=x.device)
        stats = torch.cat([xd.sum(dim=(0, 2, 3)), (xd * xd).sum(dim=(0, 2, 3)), count])
        stats = _DifferentiableAllReduce.apply(stats)
        n = stats[-1]
        mean = stats[:C] / n
        var = (stats[C : 2 * C] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        inv = torch.rsqrt(var + self.eps)
        scale = inv if self.weight is None else inv * self.weight.double()
        shift = -mean * scale if self.bias is None else self.bias.double() - mean * scale
        return x * scale.to(x.dtype)[None, :, None, None] + shift.to(x.dtype)[None, :, None, None]


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers -> nn.SyncBatchNorm on CUDA, :class:`AllReduceBatchNorm2d` elsewhere (same
    parameters, buffers and state-dict keys)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, AllReduceBatchNorm2d):
        out = AllReduceBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
