"""Training on one or many processes with PyTorch's own launcher (`torchrun`) and DistributedDataParallel.

`python -m core.train ...` is the single-process case of the same code: `init_distributed` reads the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, ...) and opens a process group only when
WORLD_SIZE > 1 (backend nccl on CUDA, gloo otherwise). Every rank draws the same global, class-balanced
sample stream from the seeded generator and takes its own contiguous slice of each global batch, so
`--batch-size` stays the global batch and a world of any size sees exactly the batches of one process.

BatchNorm statistics are synchronised across ranks: torch's SyncBatchNorm on CUDA, and on CPU (where
torch's SyncBatchNorm refuses to run) batch sums all-reduced through the differentiable collectives of
torch.distributed.nn, so the forward pass, gradients and running statistics equal those of one process
on the global batch (tested).
"""

import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from timm.layers import convert_sync_batchnorm


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = "none"
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend, "device": self.device}


def resolve_device(device: str) -> str:
    """auto: CUDA when present, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine")
    return device


def launch_environment() -> dict:
    """rank, world_size, local_rank and local_world_size as torchrun sets them (one process without it)."""
    return {k.lower(): int(os.environ.get(k, default)) for k, default in
            (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0), ("LOCAL_WORLD_SIZE", 1))}


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group torchrun describes in the environment (none for a plain single process)."""
    device = resolve_device(device)
    env = launch_environment()
    rank, world_size, local_rank = env["rank"], env["world_size"], env["local_rank"]
    local_world = env["local_world_size"]
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if world_size == 1:
        return DistributedContext(device=device)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(rank, world_size, local_rank, local_world, backend, device)


def close_distributed(ctx: DistributedContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def local_slice(global_batch: np.ndarray, ctx: DistributedContext) -> slice:
    """This rank's contiguous share of one global batch (disjoint across ranks, together the whole batch)."""
    n = len(global_batch)
    per_rank = -(-n // ctx.world_size)
    return slice(ctx.rank * per_rank, min(n, (ctx.rank + 1) * per_rank))


def any_rank(flag: bool, ctx: DistributedContext) -> bool:
    """True on every rank when it is true on at least one (a stop request on any rank stops all)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def assert_replicas_identical(model: nn.Module, ctx: DistributedContext) -> None:
    """Fail loudly if the ranks' weights have drifted apart (DDP keeps them identical after every step)."""
    if not ctx.distributed:
        return
    with torch.no_grad():
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().view(1)
    low, high = checksum.clone(), checksum.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise RuntimeError(f"rank {ctx.rank}: replicas hold different weights ({low.item()} vs {high.item()})")


def ddp_anchor(out, ctx: DistributedContext):
    """Zero that touches every exit: DDP reduces gradients in buckets and waits for every parameter that
    produced an output, so stages whose loss ignores the exits (kd) would leave a bucket unreduced."""
    if not ctx.distributed:
        return 0.0
    return 0.0 * sum(e.sum() for e in out.exit_logits)


def average_gradients(parameters, ctx: DistributedContext) -> None:
    """Mean of each gradient over ranks (what DDP does for the parameters it wraps)."""
    if ctx.distributed:
        for p in parameters:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(ctx.world_size)


def mean_over_ranks(values: dict, ctx: DistributedContext) -> dict:
    """Each value averaged over ranks (the logged losses then cover the global batches)."""
    if not ctx.distributed:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(values, (t / ctx.world_size).tolist()))


@contextmanager
def main_rank_uses_node(ctx: DistributedContext):
    """While rank 0 works alone (validation, the final report) and its node's other ranks wait at a barrier,
    which costs them no CPU, rank 0 runs torch on all their threads."""
    if not ctx.distributed or ctx.device != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(threads * ctx.local_world_size)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        dist.barrier()


class _GlobalBatchNorm(torch.autograd.Function):
    """Training-mode batch norm over the global batch of all ranks, with two collectives per layer and step (one
    all-gather forward, one all-reduce backward) around torch's native kernels; the backward is SyncBatchNorm's."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, momentum, eps, world_size, native):
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        count = input.numel() // c
        mean = input.sum(dims) / count  # two passes like the native kernel (torch.var_mean is 5x slower on NCHW)
        squares = (input - mean.view(shape)).square_().sum(dims)
        # every rank's (count, mean, sum of squared deviations), combined exactly in float64 (Chan et al. 1979)
        local = torch.cat([mean.new_tensor([count]), mean, squares]).double()
        gathered = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(gathered, local)
        stats = torch.stack(gathered)
        counts, means, squares = stats[:, :1], stats[:, 1:c + 1], stats[:, c + 1:]
        total = counts.sum()
        global_mean = (counts * means).sum(0) / total
        global_var = (squares + counts * (means - global_mean) ** 2).sum(0) / total
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(global_mean.to(running_mean.dtype) * momentum)
            running_var.mul_(1 - momentum).add_((global_var * (total / (total - 1))).to(running_var.dtype) * momentum)
        mean, var = global_mean.to(input.dtype), global_var.to(input.dtype)
        ctx.save_for_backward(input, weight, mean, var)
        ctx.eps, ctx.total, ctx.native = eps, total.item(), native
        return native(input, mean, var, weight, bias, False, 0.0, eps)  # normalise with the global statistics

    @staticmethod
    def backward(ctx, grad_out):
        input, weight, mean, var = ctx.saved_tensors
        c = input.shape[1]
        weight_or_one = weight if weight is not None else torch.ones_like(mean)
        # the native eval-mode backward gives dy * w * invstd and this rank's sums of dy and dy * xhat
        grad_eval, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            grad_out.contiguous(), input, weight_or_one, mean, var, None, None, False, ctx.eps, [True, True, True])
        sums = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(sums)  # one collective: the global means of dy and dy * xhat
        mean_dy, mean_dy_xhat = (sums / ctx.total).split(c)
        invstd = torch.rsqrt(var + ctx.eps)
        # dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), with xhat = (x - mean) * invstd
        # = grad_eval + offset - slope * x: that per-channel affine map of x is an eval-mode batch norm, which runs
        # natively (a broadcast addcmul is 15x slower on NCHW)
        slope = weight_or_one * invstd * invstd * mean_dy_xhat
        offset = mean * slope - weight_or_one * invstd * mean_dy
        unit = torch.full_like(var, 1 - ctx.eps)  # eps + this = 1: no rescaling
        grad_input = grad_eval.add_(ctx.native(input, torch.zeros_like(mean), unit, -slope, offset, False, 0.0, ctx.eps))
        # weight and bias get this rank's sums: DDP averages them over ranks like every other gradient
        return (grad_input, sum_dy_xhat if weight is not None else None, sum_dy if weight is not None else None,
                None, None, None, None, None, None)


def _global_batch_norm(original, world_size: int):
    """F.batch_norm whose training-mode statistics cover the global batch of all ranks."""

    def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                   eps=1e-5):
        if not training:
            return original(input, running_mean, running_var, weight, bias, False, momentum, eps)
        return _GlobalBatchNorm.apply(input, weight, bias, running_mean, running_var, momentum, eps, world_size,
                                      original)

    return batch_norm


MIN_LOCAL_BATCH_FOR_LOCAL_STATISTICS = 16  # below it BatchNorm's batch statistics degrade (Wu & He 2018, Fig. 1)


def wants_synchronised_batchnorm(choice: str, ctx: DistributedContext, global_batch: int) -> bool:
    """Whether to synchronise BatchNorm across ranks. auto: always with CUDA (NCCL makes it cheap); on CPU only
    when each rank sees fewer than 16 images per step, because over gloo the two collectives per BatchNorm layer
    and step cost more than the rest of the step's communication (measured: README "Training at scale")."""
    if not ctx.distributed or choice == "off":
        return False
    if choice == "on" or ctx.device.startswith("cuda"):
        return True
    return global_batch // ctx.world_size < MIN_LOCAL_BATCH_FOR_LOCAL_STATISTICS


@contextmanager
def synchronised_batchnorm(model: nn.Module, ctx: DistributedContext, enabled: bool = True):
    """BatchNorm statistics over the global batch while training: timm's SyncBatchNorm(Act) on CUDA; on CPU,
    where it refuses to run, every training-mode F.batch_norm call (torch's and timm's BatchNormAct2d
    layers both go through it) runs _GlobalBatchNorm. Yields the model to train (unchanged when not `enabled`)."""
    if not (ctx.distributed and enabled):
        yield model
    elif ctx.device.startswith("cuda"):
        yield convert_sync_batchnorm(model)  # timm's: BatchNormAct2d keeps its activation (SyncBatchNormAct)
    else:
        original = F.batch_norm
        F.batch_norm = _global_batch_norm(original, ctx.world_size)
        try:
            yield model
        finally:
            F.batch_norm = original
