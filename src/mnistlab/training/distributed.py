"""DistributedDataParallel plumbing: one process per device, launched by `torchrun`.

    torchrun --nproc_per_node=2 -m mnistlab train --model cnn-bn

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE / LOCAL_WORLD_SIZE / MASTER_ADDR / MASTER_PORT
in each process; `setup()` reads them and joins the process group (gloo on CPU, NCCL on
CUDA). Without them (or with WORLD_SIZE=1) it returns a single-process context and every
helper here is a no-op, so the engine runs one code path and the 1-process path costs nothing.

Conventions the engine relies on:
* rank 0 ("main") decides and writes: run folder name, checkpoints, summary, progress output;
* every collective here is called by *all* ranks in the same order, or the job deadlocks
  (until the timeout, `MNISTLAB_DIST_TIMEOUT` seconds, default 300);
* shards are strided: rank r owns items r, r + W, r + 2W, ... of a sequence, the same
  convention BatchIterator uses for the training order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from mnistlab.errors import MnistlabError, UsageError

TIMEOUT_ENV = "MNISTLAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
# A test hook (see tests/test_distributed.py): the rank named here raises at the start of epoch 1,
# (or $MNISTLAB_TEST_FAIL_EPOCH), so the suite can check that one failing rank ends the whole job instead of hanging it.
TEST_FAIL_RANK_ENV = "MNISTLAB_TEST_FAIL_RANK"
TEST_FAIL_EPOCH_ENV = "MNISTLAB_TEST_FAIL_EPOCH"


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job. world_size 1 means a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # True when setup() created the process group (so destroy() ends it)

    @property
    def enabled(self) -> bool:
        """True under DDP (more than one process)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, decides and writes files."""
        return self.rank == 0

    def shard(self) -> slice:
        """This rank's strided slice of any sequence: items rank, rank + W, rank + 2W, ..."""
        return slice(self.rank, None, self.world_size)


SINGLE = DistContext()


def env_world() -> tuple[int, int, int, int] | None:
    """(rank, local_rank, world_size, local_world_size) from torchrun's environment, or None if not launched by it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError as exc:
        raise UsageError(f"bad torchrun environment (RANK/LOCAL_RANK/WORLD_SIZE): {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return rank, local_rank, world, max(1, local_world)


def timeout() -> timedelta:
    """The process-group timeout: how long a collective waits for a missing peer before failing."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        raise UsageError(f"bad {TIMEOUT_ENV}={raw!r}: expected seconds") from None
    if not seconds > 0:
        raise UsageError(f"bad {TIMEOUT_ENV}={raw!r}: must be > 0")
    return timedelta(seconds=seconds)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def setup(device_name: str = "auto", threads: int | None = None) -> DistContext:
    """Join torchrun's process group if this process was launched by it; otherwise return SINGLE.

    CUDA (device auto or cuda, with a GPU per local rank): NCCL, device cuda:LOCAL_RANK.
    Otherwise gloo on the CPU, with torch threads set to max(1, cores // local_world_size)
    unless `threads` is given, so that N ranks on one machine do not oversubscribe its cores.
    """
    world = env_world()
    if world is None or world[2] == 1:
        return SINGLE
    rank, local_rank, world_size, local_world = world
    import torch.distributed as dist

    if not dist.is_available():
        raise MnistlabError("this torch build has no torch.distributed: cannot train with torchrun")
    if device_name == "mps":
        raise UsageError("--device mps: DistributedDataParallel does not run on Apple MPS (use --device cpu)")
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name == "cuda" and not use_cuda:
        raise UsageError("--device cuda: no CUDA device is available here (use --device auto or cpu)")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"local rank {local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                "--nproc_per_node must not exceed the GPUs per node"
            )
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)  # NCCL and every bare .cuda() use this rank's own GPU
    else:
        device, backend = torch.device("cpu"), "gloo"
        if not threads:
            torch.set_num_threads(max(1, _usable_cores() // local_world))
    owns = False
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout()}
        if backend == "nccl":
            kwargs["device_id"] = device  # binds the communicator to this GPU eagerly
        dist.init_process_group(**kwargs)
        owns = True
    return DistContext(rank, local_rank, world_size, local_world, device, backend, owns)


def destroy(ctx: DistContext) -> None:
    """End the process group that setup() created (a no-op for SINGLE or a group owned by the caller)."""
    if ctx.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if ctx.enabled:
        import torch.distributed as dist

        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (any picklable value; tensors come back on the CPU)."""
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=ctx.device if ctx.backend == "nccl" else None)
    value = box[0]
    # Pickled tensors keep their device; bring any CUDA tensor of another rank's GPU home.
    return _to_cpu(value) if ctx.backend == "nccl" else value


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank ([obj] in a single process)."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_flags(flags: list[bool], ctx: DistContext, src: int = 0) -> list[bool]:
    """Rank `src`'s booleans on every rank (for decisions such as early stopping)."""
    if not ctx.enabled:
        return flags
    import torch.distributed as dist

    t = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=ctx.device)
    dist.broadcast(t, src=src)
    return [bool(v) for v in t.tolist()]


def all_reduce_min(value: int, ctx: DistContext) -> int:
    """The smallest `value` over all ranks (e.g. the number of steps every rank can take)."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def mean_over_ranks(values: list[float], ctx: DistContext) -> list[float]:
    """The element-wise mean of `values` over ranks (e.g. each rank's train loss and accuracy)."""
    if not ctx.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [v / ctx.world_size for v in t.tolist()]


def all_gather_varlen(local: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """Every rank's tensor, in rank order, on every rank (CPU); the first dimension may differ.

    all_gather itself needs equal shapes, so the shapes go first (as objects), every tensor is
    padded to the longest, gathered, and trimmed back. A rank with nothing may pass any empty
    tensor (e.g. [0, 0]); it comes back shaped like the others ([0, *trailing]).
    """
    if not ctx.enabled:
        return [local]
    import torch.distributed as dist

    shapes = all_gather_object((tuple(local.shape), str(local.dtype).removeprefix("torch.")), ctx)
    full_shape, dtype_name = max(shapes, key=lambda s: s[0][0] if s[0] else 0)
    dtype = getattr(torch, dtype_name)

    def rows(shape: tuple[int, ...]) -> int:
        # An empty tensor of another shape (e.g. [0, 0] from an empty shard) counts as 0 rows.
        return shape[0] if len(shape) == len(full_shape) and shape[1:] == full_shape[1:] else 0

    padded = torch.zeros(full_shape, dtype=dtype, device=ctx.device)
    if rows(tuple(local.shape)):
        padded[: len(local)] = local.to(ctx.device, dtype)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return [part[: rows(shape)].cpu() for part, (shape, _) in zip(parts, shapes)]


def gather_strided(local: torch.Tensor, total: int, ctx: DistContext) -> torch.Tensor:
    """Reassemble a sequence sharded with `ctx.shard()`: rank r's rows go to positions r, r+W, ..."""
    if not ctx.enabled:
        return local
    parts = all_gather_varlen(local, ctx)
    ref = max(parts, key=len)
    out = torch.empty((total, *ref.shape[1:]), dtype=ref.dtype)
    for r, part in enumerate(parts):
        out[r :: ctx.world_size] = part
    return out


def per_rank_batch_size(global_batch: int, ctx: DistContext) -> int:
    """`--batch-size` is the global batch: each of W ranks takes global / W (which must divide evenly)."""
    if global_batch % ctx.world_size:
        raise UsageError(
            f"--batch-size {global_batch} is the global batch and must divide evenly over the "
            f"{ctx.world_size} processes (e.g. {max(1, global_batch // ctx.world_size) * ctx.world_size})"
        )
    return global_batch // ctx.world_size


def wrap_model(model: nn.Module, ctx: DistContext, *, sync_bn: bool = False) -> tuple[nn.Module, nn.Module]:
    """(plain model, the DDP-wrapped model to train) for a model already on ctx.device.

    sync_bn converts every BatchNorm to SyncBatchNorm first (statistics over the global batch);
    torch supports that only on GPUs, so on CPU it is a usage error rather than a crash mid-step.
    The plain model is what checkpoints save, so they load into a model without DDP.
    """
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        if ctx.device.type != "cuda":
            raise UsageError("--sync-bn needs CUDA devices (torch's SyncBatchNorm does not run on the CPU)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # DDP broadcasts rank 0's parameters and buffers here, so every rank starts from the same weights.
    return model, DistributedDataParallel(model, device_ids=device_ids)


def broadcast_buffers(model: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them at the start of each forward, but the last training step leaves every
    rank with its own update; evaluation across ranks must use the weights rank 0 checkpoints.
    """
    if not ctx.enabled:
        return
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf.data, src=src)


def maybe_fail_for_test(ctx: DistContext, epoch: int) -> None:
    """Raise on the rank named by $MNISTLAB_TEST_FAIL_RANK at the start of epoch $MNISTLAB_TEST_FAIL_EPOCH
    (default 1). A test hook for the failure path; both variables are unset in real use."""
    raw = os.environ.get(TEST_FAIL_RANK_ENV)
    if not raw or raw.strip() != str(ctx.rank):
        return
    if epoch == int(os.environ.get(TEST_FAIL_EPOCH_ENV, "1")):
        raise MnistlabError(f"{TEST_FAIL_RANK_ENV}: rank {ctx.rank} failed on purpose at epoch {epoch}")


__all__ = [
    "DistContext", "SINGLE", "TIMEOUT_ENV", "all_gather_object", "all_gather_varlen", "all_reduce_min",
    "barrier", "broadcast_buffers", "broadcast_flags", "broadcast_object", "destroy", "env_world",
    "gather_strided", "mean_over_ranks", "per_rank_batch_size", "setup",
    "maybe_fail_for_test", "timeout", "wrap_model",
]
