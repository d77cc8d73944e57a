"""7. Peers: mnistlab against plain PyTorch, PyTorch Lightning and Keras 3, side by side.

The tools a user would pick instead, each written the way its own docs teach it
(benchmarks/peers/: a DataLoader over a TensorDataset for PyTorch and Lightning,
`model.fit` on arrays for Keras with KERAS_BACKEND=torch), in their own virtual
environment (benchmarks/peers_env.py), on the torch build mnistlab runs on. Every
training is its own process; the processes run interleaved round by round (mnistlab,
PyTorch, Lightning, Keras; job 1 then job 2; round r uses seed r), and each figure is
the median over the rounds.

1. The tutorials' DNN (784-128-128-128, BatchNorm, dropout 0.2, Adam 1e-3, batch 32), one
   epoch of 48,000 images: `mnistlab train --model dnn` at those settings (its 0.2
   validation share leaves 48,000 training images) against each peer on the first 48,000.
2. Time to 99%: the published recipe (conv 1->24 k5, maxpool, conv 24->32 k3, maxpool,
   fc 800-256-10, Adam lr 1e-2 betas (0.7, 0.9), one-cycle, batch 256, one epoch of all
   60,000 images) in each peer, against `mnistlab train` with its defaults (`fast`).
3. Job 2 against the machine's ceiling, measured in this run after every round (the limit
   benchmark's 2048x2048 matmul in fp32 and bf16): each side's training seconds over the
   time its own FLOPs (FlopCounterMode) would take at that rate.

"training s" is the training epoch alone: mnistlab's train_seconds, and the epoch inside
each peer's fit (the whole fit call is in the ratio column). Ratios are peer / mnistlab.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from bench_limit import TARGET_FLOOR, fast_recipe, step_flops, training_flops
from common import Context, Row, ceiling, floor_note, floors, load_mnist, median, mnistlab_command, run_command

FRAMEWORKS = ("mnistlab", "pytorch", "lightning", "keras")
SCRIPTS = {"pytorch": "peer_torch.py", "lightning": "peer_lightning.py", "keras": "peer_keras.py"}
PEERS = Path(__file__).resolve().parent / "peers"
JOBS = ("dnn", "t99")
DNN_VALID = 0.2  # mnistlab's validation share for the DNN job: 60,000 x 0.8 = 48,000 training images
TARGETS = {"dnn": {"pytorch": 1.6, "lightning": 2.2, "keras": 4.0}, "t99": {"lightning": 8.0}}


def _names(versions: dict[str, str]) -> dict[str, str]:
    import mnistlab

    return {"mnistlab": f"mnistlab {mnistlab.__version__}", "pytorch": f"plain PyTorch {versions['pytorch']}",
            "lightning": f"PyTorch Lightning {versions['lightning']}",
            "keras": f"Keras {versions['keras']} (torch backend)"}


def _mnistlab(ctx: Context, job: str, device: str, out: Path, seed: int, env: dict[str, str]) -> dict[str, Any]:
    """One `mnistlab train` process; train_seconds and accuracy from its summary.json."""
    name = f"{job}-s{seed}"
    args = [*mnistlab_command(), "train", "--data-dir", ctx.data_dir, "--out", str(out), "--name", name,
            "--seed", str(seed), "--device", device, "--quiet", "--no-plots"]  # --no-plots: after the loop
    if job == "dnn":
        args += ["--model", "dnn", "--set", "hidden_dims=784,128,128,128", "--epochs", "1", "--batch-size", "32",
                 "--lr", "1e-3", "--valid-fraction", str(DNN_VALID)]
    run_command(args, env=env)
    summary = json.loads((out / name / "summary.json").read_text())
    return {"train_seconds": summary["train_seconds"], "fit_seconds": summary["train_seconds"],
            "accuracy": summary["accuracy"]}


def _peer(python: Path, framework: str, job: str, npz: Path, device: str, seed: int, images: int,
          env: dict[str, str]) -> dict[str, Any]:
    """One peer process; its result is the JSON on the last line of its stdout."""
    args = [str(python), str(PEERS / SCRIPTS[framework]), "--job", job, "--data", str(npz), "--device", device,
            "--seed", str(seed), "--train-images", str(images)]
    _, stdout = run_command(args, env=env)
    return json.loads(stdout.strip().splitlines()[-1])


def _environment(device: str, peer: bool) -> dict[str, str]:
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # Keras's torch backend takes a GPU wherever one is visible
    if peer:
        env.pop("PYTHONPATH", None)  # the peers see their own venv only, never mnistlab's sources
    return env


def _write_npz(data: Any, path: Path) -> tuple[int, int]:
    """The ImageData as Keras's mnist.npz layout; (training images, test images)."""
    np.savez(path, x_train=data.train_images[:, 0].numpy(), y_train=data.train_labels.numpy(),
             x_test=data.test_images[:, 0].numpy(), y_test=data.test_labels.numpy())
    return len(data.train_labels), len(data.test_labels)


def _measure(ctx: Context, python: Path, npz: Path, n_train: int, device: str) -> tuple[dict, dict]:
    """All rounds on one device: ({(job, framework): [results]}, {"fp32": [...], "bf16": [...]})."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {(j, f): [] for j in JOBS for f in FRAMEWORKS}
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    out = ctx.work / f"peers-{device}"
    shutil.rmtree(out, ignore_errors=True)
    images = {"dnn": round(n_train * (1 - DNN_VALID)), "t99": n_train}
    for seed in range(ctx.reps):
        for job in JOBS:
            for fw in FRAMEWORKS:
                try:
                    if fw == "mnistlab":
                        r = _mnistlab(ctx, job, device, out, seed, _environment(device, peer=False))
                    else:
                        r = _peer(python, fw, job, npz, device, seed, images[job], _environment(device, peer=True))
                except RuntimeError as e:
                    raise SystemExit(f"run.py: peers: {fw} {job} on {device} failed: {e}") from None
                results[(job, fw)].append(r)
                ctx.log(f"  peers {device} round {seed} {job} {fw}: training {r['train_seconds']:.2f} s, "
                        f"acc {r['accuracy']:.4f}")
        for dtype, gflops in ceiling(device).items():
            peaks[dtype].append(gflops)
    return results, peaks


def _job_rows(ctx: Context, job: str, results: dict, names: dict[str, str], device: str, what: str) -> list[Row]:
    """Training seconds and test accuracy of every framework in one job, peers as ratios to mnistlab."""
    t = {fw: median([r["train_seconds"] for r in results[(job, fw)]]) for fw in FRAMEWORKS}
    acc = {fw: median([r["accuracy"] for r in results[(job, fw)]]) for fw in FRAMEWORKS}
    rows = []
    for fw in FRAMEWORKS:
        note = target = met = ""
        if fw != "mnistlab":
            fit = median([r["fit_seconds"] for r in results[(job, fw)]])
            note = f"{t[fw] / t['mnistlab']:.2f}x mnistlab; whole fit() {fit:.3g} s"
            goal = TARGETS[job].get(fw)
            if goal:
                same_acc = job != "t99" or acc["mnistlab"] >= acc[fw]
                target = f">= {goal:g}x mnistlab" + (" at no lower accuracy" if job == "t99" else "")
                met = ctx.verdict(t[fw] / t["mnistlab"] >= goal and same_acc)
        rows.append(Row("7 peers", f"{what}: {names[fw]}, training s", device, t[fw], "s", ctx.reps, note,
                        target, met))
    rows += [Row("7 peers", f"{what}: {names[fw]}, test accuracy", device, acc[fw] * 100, "%", ctx.reps,
                 "" if fw == "mnistlab" else f"{(acc[fw] - acc['mnistlab']) * 100:+.2f} points vs mnistlab")
             for fw in FRAMEWORKS]
    return rows


def _flops(device: str, n_train: int) -> dict[str, float]:
    """Training FLOPs of job 2 for mnistlab (`fast`, its recipe's steps) and for the peers (the published net)."""
    import torch
    from peers.jobs import JOBS as PEER_JOBS
    from peers.jobs import torch_net

    cfg, _, steps = fast_recipe(n_train)
    batch = PEER_JOBS["t99"].batch_size
    torch.manual_seed(0)
    per_image = training_flops(torch_net("t99").to(device), torch.randn(batch, 1, 28, 28, device=device)) / batch
    return {"mnistlab": float(step_flops(device, cfg.batch_size) * steps), "peer": per_image * n_train}


def _floor_rows(ctx: Context, results: dict, peaks: dict, flops: dict, names: dict, device: str) -> list[Row]:
    g32, g16 = median(peaks["fp32"]), median(peaks["bf16"])
    rows = [Row("7 peers", "job 3 ceiling: matmul 2048x2048 fp32", device, g32, "GFLOP/s", len(peaks["fp32"])),
            Row("7 peers", "job 3 ceiling: matmul 2048x2048 bf16", device, g16, "GFLOP/s", len(peaks["bf16"]),
                ratio=f"{g16 / g32:.2f}x fp32")]
    for fw in FRAMEWORKS:
        work = flops["mnistlab" if fw == "mnistlab" else "peer"]
        t = median([r["train_seconds"] for r in results[("t99", fw)]])
        floor16, floor32, lowest = floors(work, g32, g16)
        note = f"{work / 1e9:.3g} GFLOP: bf16 floor {floor16:.3g} s, fp32 floor {floor32:.3g} s ({t / floor32:.1f}x)"
        target = met = ""
        if fw == "mnistlab":
            target, met = f"<= {TARGET_FLOOR:g}x bf16 floor", ctx.verdict(t / lowest <= TARGET_FLOOR)
            note += floor_note(floor16, floor32)
        rows.append(Row("7 peers", f"job 3 time to 99% / bf16 floor: {names[fw]}", device, t / floor16, "x floor",
                        ctx.reps, note, target, met))
    return rows


def run(ctx: Context) -> list[Row]:
    from peers_env import ensure

    python, _ = ensure(lambda m: print(m, file=sys.stderr, flush=True))  # a first build takes a minute: say so
    data = load_mnist(ctx)
    npz = ctx.work / "peers-mnist.npz"
    n_train, _ = _write_npz(data, npz)
    rows: list[Row] = []
    for device in ctx.devices:
        results, peaks = _measure(ctx, python, npz, n_train, device)
        versions = {fw: results[("dnn", fw)][0].get("version", "") for fw in SCRIPTS}
        names = _names(versions)
        n_dnn = results[("dnn", "pytorch")][0]["images"]
        rows += _job_rows(ctx, "dnn", results, names, device, f"job 1 DNN b32, {n_dnn:,} images")
        defaults = {**names, "mnistlab": f"{names['mnistlab']} (`mnistlab train` defaults: fast)"}
        rows += _job_rows(ctx, "t99", results, defaults, device, "job 2 time to 99%")
        rows += _floor_rows(ctx, results, peaks, _flops(device, n_train), names, device)
    return rows
