"""DistributedDataParallel: sharding, the collectives, and real 2-process runs under torchrun (gloo, CPU).

The multi-process tests launch `python -m torch.distributed.run` (the venv's torchrun) in a
subprocess with a timeout, so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import mnistlab
from mnistlab.config import TrainConfig
from mnistlab.data import BatchIterator
from mnistlab.errors import UsageError
from mnistlab.training import distributed
from mnistlab.training.checkpoint import build_model_from_checkpoint, load_checkpoint

LAUNCH_TIMEOUT_S = 240  # a hung job fails the test instead of the suite


# ----------------------------------------------------------------------------- sharding

def _loader(n: int, batch_size: int, rank: int = 0, world_size: int = 1, drop_last: bool = False) -> BatchIterator:
    # The label of sample i is i itself, so batches name the samples they hold.
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    return BatchIterator(images, torch.arange(n), batch_size=batch_size, mean=0.0, std=1.0, shuffle=True,
                         seed=3, drop_last=drop_last, rank=rank, world_size=world_size)


@pytest.mark.parametrize("n", [600, 601, 7])
def test_shards_are_disjoint_and_complete(n):
    for epoch in (1, 2):
        seen = []
        for rank in range(2):
            it = _loader(n, 16, rank, 2)
            it.set_epoch(epoch)
            seen.append(torch.cat([y for _, y in it]).tolist())
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == list(range(n))


def test_global_batch_is_the_one_process_batch():
    # Global batch 64 = 2 ranks x 32: step i of the two ranks together trains on the samples of
    # step i of a 1-process run with batch 64, so the averaged gradient is the same update.
    one = _loader(480, 64)
    one.set_epoch(5)
    ranks = [_loader(480, 32, r, 2) for r in range(2)]
    for it in ranks:
        it.set_epoch(5)
    for (_, y), (_, y0), (_, y1) in zip(one, *ranks):
        assert sorted(y.tolist()) == sorted(y0.tolist() + y1.tolist())


def test_drop_last_gives_every_rank_the_same_number_of_batches():
    lengths = [len(_loader(601, 16, r, 2, drop_last=True)) for r in range(2)]
    assert lengths[0] == lengths[1] == 601 // 2 // 16


def test_per_rank_batch_size():
    ctx = distributed.DistContext(world_size=4)
    assert distributed.per_rank_batch_size(256, ctx) == 64
    assert distributed.per_rank_batch_size(64, distributed.SINGLE) == 64
    with pytest.raises(UsageError, match="global batch"):
        distributed.per_rank_batch_size(66, ctx)


# ----------------------------------------------------------------------------- single-process behaviour

def test_without_torchrun_everything_is_a_no_op(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    ctx = distributed.setup("auto")
    assert ctx is distributed.SINGLE and ctx.is_main and not ctx.enabled
    x = torch.arange(5)
    assert distributed.gather_strided(x, 5, ctx) is x
    assert distributed.broadcast_object("a", ctx) == "a"
    assert distributed.broadcast_flags([True, False], ctx) == [True, False]
    assert distributed.all_reduce_min(3, ctx) == 3
    distributed.barrier(ctx)
    distributed.destroy(ctx)


def test_env_and_timeout(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.env_world() == (1, 1, 4, 2)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UsageError):
        distributed.env_world()
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout().total_seconds() == distributed.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "12.5")
    assert distributed.timeout().total_seconds() == 12.5
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(UsageError, match=distributed.TIMEOUT_ENV):
        distributed.timeout()


def test_sync_bn_on_cpu_is_a_clear_error():
    ctx = distributed.DistContext(world_size=2, device=torch.device("cpu"), backend="gloo")
    with pytest.raises(UsageError, match="--sync-bn needs CUDA"):
        distributed.wrap_model(torch.nn.BatchNorm1d(3), ctx, sync_bn=True)


def test_sync_bn_flag_reaches_the_config():
    from mnistlab.cli import build_parser
    from mnistlab.cli.common import config_from_args

    args = build_parser().parse_args(["train", "--model", "logistic", "--sync-bn"])
    assert config_from_args(args).sync_bn is True
    assert TrainConfig().sync_bn is False


# ----------------------------------------------------------------------------- under torchrun

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], nproc: int = 2, env: dict[str, str] | None = None,
              timeout: float = LAUNCH_TIMEOUT_S) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *args]
    full_env = {**os.environ, distributed.TIMEOUT_ENV: "60", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "mnistlab", "train", "--model", "logistic", "--data-dir", str(data), "--out", str(out),
            "--batch-size", "64", "--device", "cpu", "--quiet", "--no-plots", *extra]


def test_collectives_with_two_processes(tmp_path):
    # gather_strided with unequal shards (5 rows over 2 ranks: 3 + 2) and an empty one (1 row).
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent("""
        import torch
        from mnistlab.training import distributed as d
        ctx = d.setup("cpu")
        assert ctx.enabled and ctx.backend == "gloo"
        for total in (5, 1):
            full = torch.arange(total * 3, dtype=torch.float32).view(total, 3)
            local = full[ctx.shard()] if len(full[ctx.shard()]) else torch.zeros(0, 0)
            assert torch.equal(d.gather_strided(local, total, ctx), full), total
        assert d.broadcast_object({"r": ctx.rank}, ctx) == {"r": 0}
        assert d.all_reduce_min(10 + ctx.rank, ctx) == 10
        assert d.mean_over_ranks([float(ctx.rank)], ctx) == [0.5]
        assert d.broadcast_flags([ctx.rank == 0], ctx) == [True]
        assert d.all_gather_object(ctx.rank, ctx) == [0, 1]
        d.destroy(ctx)
        print("ok", ctx.rank)
    """))
    proc = _torchrun([str(script)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("ok") == 2


@pytest.mark.slow
def test_two_processes_match_one_and_write_one_run(fake_mnist_root, tmp_path):
    out = tmp_path / "ddp"
    t0 = time.perf_counter()
    proc = _torchrun(_train_args(fake_mnist_root, out, "--epochs", "2"))
    ddp_seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Only rank 0 prints the result, and writes exactly one run folder (no logistic-2).
    assert proc.stdout.count("test accuracy") == 1
    assert [p.name for p in out.iterdir()] == ["logistic"]
    ddp = mnistlab.load_run(out / "logistic")
    assert json.loads((ddp.path / "environment.json").read_text())["distributed"]["world_size"] == 2

    t0 = time.perf_counter()
    one = mnistlab.train(TrainConfig(model="logistic", data_dir=str(fake_mnist_root), out=str(tmp_path / "one"),
                                     epochs=2, batch_size=64, device="cpu", progress="quiet", plots=False))
    one_seconds = time.perf_counter() - t0
    a, b = one.summary, ddp.summary
    print(f"1 process {one_seconds:.1f}s: acc {a['accuracy']:.4f} loss {a['loss']:.6f}; "
          f"2 processes {ddp_seconds:.1f}s (incl. launch): acc {b['accuracy']:.4f} loss {b['loss']:.6f}")
    assert b["status"] == "completed" and b["epochs_run"] == 2
    assert abs(a["accuracy"] - b["accuracy"]) <= 0.02
    # Same global batches, averaged gradients: the same model up to float rounding.
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
    for ra, rb in zip(one.history, ddp.history):
        assert rb["valid_loss"] == pytest.approx(ra["valid_loss"], rel=1e-3)
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-3)

    # The checkpoint holds the plain model's weights (no `module.` prefix): it loads without DDP.
    ckpt = load_checkpoint(ddp.checkpoint_path("best"))
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert len(ckpt["rng_per_rank"]) == 2
    build_model_from_checkpoint(ckpt)


@pytest.mark.slow
def test_failing_rank_ends_the_job_and_resume_finishes_it(fake_mnist_root, tmp_path):
    out = tmp_path / "runs"
    env = {distributed.TEST_FAIL_RANK_ENV: "1", distributed.TEST_FAIL_EPOCH_ENV: "2"}
    t0 = time.perf_counter()
    proc = _torchrun(_train_args(fake_mnist_root, out, "--epochs", "3", "--name", "cut"), env=env, timeout=120)
    assert time.perf_counter() - t0 < 120
    assert proc.returncode != 0
    assert "rank 1 failed on purpose at epoch 2" in proc.stdout + proc.stderr
    cut = out / "cut"
    assert json.loads((cut / "summary.json").read_text())["status"] != "completed"

    # Resume under torchrun: all ranks load last.pt; data order, weights and optimizer state are
    # restored, so the finished run equals an uninterrupted 1-process run (no dropout in logistic).
    proc = _torchrun(["-m", "mnistlab", "train", "--resume", str(cut), "--device", "cpu", "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = mnistlab.load_run(cut)
    assert [p.name for p in out.iterdir()] == ["cut"]
    straight = mnistlab.train(TrainConfig(model="logistic", data_dir=str(fake_mnist_root), out=str(tmp_path / "one"),
                                          epochs=3, batch_size=64, device="cpu", progress="quiet", plots=False))
    assert resumed.summary["status"] == "completed" and resumed.summary["epochs_run"] == 3
    assert resumed.summary["loss"] == pytest.approx(straight.summary["loss"], rel=1e-3)


@pytest.mark.slow
def test_failure_in_first_epoch_exits_quickly(fake_mnist_root, tmp_path):
    t0 = time.perf_counter()
    proc = _torchrun(_train_args(fake_mnist_root, tmp_path / "runs", "--epochs", "2"),
                     env={distributed.TEST_FAIL_RANK_ENV: "1"}, timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode != 0 and elapsed < 120
    assert "mnistlab: error: MNISTLAB_TEST_FAIL_RANK: rank 1 failed on purpose at epoch 1" in proc.stderr


@pytest.mark.slow
def test_a_two_node_job_on_one_machine(fake_mnist_root, tmp_path):
    """torchrun --nnodes 2 with one process per node, both on 127.0.0.1: one run folder, 1-process numbers."""
    port, out = _free_port(), tmp_path / "nodes"
    env = {**os.environ, distributed.TIMEOUT_ENV: "60", "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
             "--master_addr=127.0.0.1", f"--master_port={port}",
             *_train_args(fake_mnist_root, out, "--epochs", "2")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for rank in (0, 1)
    ]
    results = [p.communicate(timeout=LAUNCH_TIMEOUT_S) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert [p.name for p in out.iterdir()] == ["logistic"]
    assert "test accuracy" in results[0][0] and "test accuracy" not in results[1][0]  # only the main node prints
    two = mnistlab.load_run(out / "logistic")
    assert json.loads((two.path / "environment.json").read_text())["distributed"]["world_size"] == 2
    one = mnistlab.train(TrainConfig(model="logistic", data_dir=str(fake_mnist_root), out=str(tmp_path / "one"),
                                     epochs=2, batch_size=64, device="cpu", progress="quiet", plots=False))
    assert two.summary["loss"] == pytest.approx(one.summary["loss"], rel=1e-3)
