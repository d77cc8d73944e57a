"""What the three peer scripts share: the command line, the data, the two jobs, the nets, the result line.

Runs inside the peers' own virtual environment (benchmarks/peers-requirements.txt), never
mnistlab's, so nothing here imports mnistlab. bench_peers.py (in mnistlab's environment)
imports `torch_net` too, to count the FLOPs of the very nets the peers train.

The data arrives as one .npz laid out like Keras's own mnist.npz (x_train, y_train,
x_test, y_test; uint8 images [N, 28, 28]), which bench_peers.py writes from the IDX files
mnistlab reads, so every framework trains on the same images.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from typing import Any

import numpy as np

MEAN, STD = 0.1307, 0.3081  # MNIST's pixel mean and std, as the tutorials normalise
EVAL_BATCH = 1000
# One-cycle as the published recipe runs it (and torch's OneCycleLR defaults): warm up over
# 30% of the steps from max_lr / 25, anneal by cosine to max_lr / 25 / 1e4, betas not cycled.
PCT_START, DIV_FACTOR, FINAL_DIV_FACTOR = 0.3, 25.0, 1e4


@dataclasses.dataclass(frozen=True)
class Job:
    """One training job: the optimiser settings every framework uses for it."""

    name: str
    batch_size: int
    lr: float
    betas: tuple[float, float]
    onecycle: bool


JOBS = {
    # 1. The tutorials' DNN: 784-128-128-128, BatchNorm, dropout 0.2, Adam 1e-3, batch 32, one epoch.
    "dnn": Job("dnn", 32, 1e-3, (0.9, 0.999), onecycle=False),
    # 2. The published "99% in 0.76 s" recipe: Adam lr 1e-2, betas (0.7, 0.9), one-cycle, batch 256, one epoch.
    "t99": Job("t99", 256, 1e-2, (0.7, 0.9), onecycle=True),
}
DNN_HIDDEN = (128, 128, 128)
DNN_DROPOUT = 0.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train one peer job once and print one JSON line.")
    p.add_argument("--job", choices=sorted(JOBS), required=True)
    p.add_argument("--data", required=True, help=".npz with x_train, y_train, x_test, y_test")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=None, help="train on the first N images (default: all)")
    return p.parse_args(argv)


def load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images as normalised float32 [N, 28, 28], labels int64."""
    with np.load(args.data) as f:  # what keras.datasets.mnist.load_data() does with its mnist.npz
        x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    n = len(x_train) if args.train_images is None else args.train_images
    x_train, y_train = x_train[:n], y_train[:n]

    def prep(x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)

    return prep(x_train), y_train.astype(np.int64), prep(x_test), y_test.astype(np.int64)


def torch_net(job: str) -> Any:
    """The job's network as torch modules (what plain PyTorch and Lightning train)."""
    from torch import nn

    if job == "dnn":
        layers: list[nn.Module] = [nn.Flatten()]
        widths = (784, *DNN_HIDDEN)
        for d_in, d_out in itertools.pairwise(widths):
            layers += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU(), nn.Dropout(DNN_DROPOUT)]
        return nn.Sequential(*layers, nn.Linear(widths[-1], 10))
    return nn.Sequential(  # the published net: 28 -> conv5 24 -> pool 12 -> conv3 10 -> pool 5; 5*5*32 = 800
        nn.Conv2d(1, 24, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(24, 32, kernel_size=3), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(800, 256), nn.ReLU(), nn.Linear(256, 10),
    )


def clock(device: str) -> float:
    """perf_counter after the device's queued work: without the sync a CUDA time measures only launches."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def emit(framework: str, version: str, args: argparse.Namespace, *, images: int, steps: int,
         train_seconds: float, fit_seconds: float, accuracy: float) -> None:
    """Print the one result line bench_peers.py reads (the last line of stdout)."""
    import torch

    print(json.dumps({
        "framework": framework, "version": version, "job": args.job, "device": args.device, "seed": args.seed,
        "images": images, "steps": steps, "train_seconds": train_seconds, "fit_seconds": fit_seconds,
        "accuracy": accuracy, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }), flush=True)
