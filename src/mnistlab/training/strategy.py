"""Where a run's processes are and how they agree: one process, or DistributedDataParallel under torchrun.

The trainer calls the same methods either way; in one process every collective is the identity,
so the loop has no `if distributed` branches and a single-process run pays nothing for DDP.
Collectives (`mean`, `agree`, `sync_buffers`, `predict`, `broadcast`, `gather_rng`,
`min_over_ranks`) must be called by every rank in the same order.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from mnistlab.runs import create_run_dir
from mnistlab.training import distributed
from mnistlab.training.hardware import rng_state, seed_everything, select_device, set_rng_state


class SingleProcess:
    """One process on one device."""

    rank = 0
    world_size = 1
    is_main = True

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Run the block on each machine's first process before the others (downloads, unpacking)."""
        yield

    def per_rank_batch(self, global_batch: int) -> int:
        return global_batch

    def min_over_ranks(self, value: int) -> int:
        return value

    def wrap(self, model: nn.Module, *, compile: bool, sync_bn: bool, seed: int) -> tuple[nn.Module, nn.Module]:
        """(the plain model, the module that takes the training steps); checkpoints save the plain one.

        sync_bn only means something across processes: one process ignores it.
        """
        return model, torch.compile(model) if compile else model

    def mean(self, values: list[float]) -> list[float]:
        return values

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank (so all of them leave the loop together)."""
        return flag

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics) before evaluating."""

    def predict(self, fn: Callable[[nn.Module, Any], torch.Tensor], model: nn.Module, items: Any) -> torch.Tensor:
        """fn(model, items) -> logits; under DDP each rank predicts its shard and all get the whole."""
        return fn(model, items)

    def broadcast(self, obj: Any) -> Any:
        return obj

    def gather_rng(self) -> list[dict[str, Any]] | None:
        """Every rank's generator states, for the checkpoint (None in one process: `rng` holds it)."""
        return None

    def restore_rng(self, ckpt: dict[str, Any], seed: int) -> None:
        set_rng_state(ckpt["rng"])

    def make_run_dir(self, out: str, name: str) -> Path:
        return create_run_dir(out, name)

    def before_epoch(self, epoch: int) -> None:
        distributed.maybe_fail_for_test(distributed.SINGLE, epoch)

    def describe(self) -> dict[str, Any]:
        """Extra environment.json entries."""
        return {}

    def close(self) -> None:
        """End the process group, if this strategy started one."""


class DDP(SingleProcess):
    """One process per device under torchrun; rank 0 decides and writes."""

    def __init__(self, ctx: distributed.DistContext) -> None:
        super().__init__(ctx.device)
        self.ctx = ctx
        self.rank, self.world_size, self.is_main = ctx.rank, ctx.world_size, ctx.is_main

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        if self.ctx.local_rank != 0:
            distributed.barrier(self.ctx)  # local rank 0 first: no two processes write the same files
        yield
        if self.ctx.local_rank == 0:
            distributed.barrier(self.ctx)

    def per_rank_batch(self, global_batch: int) -> int:
        return distributed.per_rank_batch_size(global_batch, self.ctx)

    def min_over_ranks(self, value: int) -> int:
        # Every rank must take the same number of steps (a missing one hangs the gradient all-reduce).
        return distributed.all_reduce_min(value, self.ctx)

    def wrap(self, model: nn.Module, *, compile: bool, sync_bn: bool, seed: int) -> tuple[nn.Module, nn.Module]:
        model, ddp_model = distributed.wrap_model(model, self.ctx, sync_bn=sync_bn)
        # Same weights everywhere (DDP broadcast them), but each rank its own dropout stream.
        seed_everything(seed + self.rank)
        return model, torch.compile(ddp_model) if compile else ddp_model

    def mean(self, values: list[float]) -> list[float]:
        return distributed.mean_over_ranks(values, self.ctx)

    def agree(self, flag: bool) -> bool:
        return distributed.broadcast_flags([flag], self.ctx)[0]

    def sync_buffers(self, model: nn.Module) -> None:
        distributed.broadcast_buffers(model, self.ctx)

    def predict(self, fn: Callable[[nn.Module, Any], torch.Tensor], model: nn.Module, items: Any) -> torch.Tensor:
        local = fn(model, items[self.ctx.shard()])
        return distributed.gather_strided(local, len(items), self.ctx)

    def broadcast(self, obj: Any) -> Any:
        return distributed.broadcast_object(obj, self.ctx)

    def gather_rng(self) -> list[dict[str, Any]] | None:
        return distributed.all_gather_object(rng_state(), self.ctx)

    def restore_rng(self, ckpt: dict[str, Any], seed: int) -> None:
        rngs = ckpt.get("rng_per_rank") or []
        if len(rngs) == self.world_size:
            set_rng_state(rngs[self.rank])
        else:  # saved by another number of processes: fresh, distinct streams per rank
            seed_everything(seed + self.rank + 1_000_003 * int(ckpt["epoch"]))

    def make_run_dir(self, out: str, name: str) -> Path:
        # Rank 0 alone makes the folder (create_run_dir adds -2, -3...: W ranks would make W folders).
        path = create_run_dir(out, name) if self.is_main else None
        return Path(self.broadcast(str(path) if path else None))

    def before_epoch(self, epoch: int) -> None:
        distributed.maybe_fail_for_test(self.ctx, epoch)

    def describe(self) -> dict[str, Any]:
        return {"distributed": {"world_size": self.world_size, "backend": self.ctx.backend}}

    def close(self) -> None:
        distributed.destroy(self.ctx)


def make_strategy(device: str, threads: int | None) -> SingleProcess:
    """DDP when torchrun launched this process with more than one rank, else one process on `device`."""
    ctx = distributed.setup(device, threads)
    return DDP(ctx) if ctx.enabled else SingleProcess(select_device(device))
