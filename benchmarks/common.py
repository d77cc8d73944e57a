"""Shared pieces of the benchmark suite: rows, timing, machine facts and the data.

Every benchmark returns a list of `Row`s; `run.py` prints them as one table. Timings are
wall-clock medians over repetitions, and every comparison is measured in the same process,
interleaved repetition by repetition (A, B, A, B, ...), so that the noise of a shared
machine hits both sides alike and the *ratio* stays meaningful even when absolute figures
drift between runs.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MIN_REPS_FOR_VERDICT = 3
COLUMNS = ("benchmark", "measurement", "device", "median", "unit", "runs", "ratio", "target", "met")


@dataclasses.dataclass
class Row:
    """One line of the results table.

    `median` is the median of `runs` repetitions; `ratio` compares this row with the
    baseline named in the measurement (measured in the same script run); `met` is
    "yes"/"no" against `target`, or "" where there is no target, in quick mode (the
    made-up data makes targets meaningless) and with fewer than 3 repetitions (one
    repetition is no median: a rough look, not a verdict).
    """

    benchmark: str
    measurement: str
    device: str
    median: float
    unit: str
    runs: int
    ratio: str = ""
    target: str = ""
    met: str = ""

    def cells(self) -> list[str]:
        value = f"{self.median:.2f}" if self.unit == "%" else fmt(self.median)  # accuracy: 99.03, not 99.0
        return [self.benchmark, self.measurement, self.device, value, self.unit,
                str(self.runs), self.ratio, self.target, self.met]


@dataclasses.dataclass
class Context:
    """What every benchmark gets: mode, devices, repetitions and the data to use."""

    quick: bool
    devices: list[str]
    reps: int
    data_dir: str  # a data root holding mnist/ (the real one, or made-up files in quick mode)
    work: Path  # scratch folder for run folders and images
    log: Callable[[str], None] = print

    def verdict(self, ok: bool) -> str:
        return "" if self.quick or self.reps < MIN_REPS_FOR_VERDICT else ("yes" if ok else "no")


def fmt(value: float) -> str:
    """Three significant figures, thousands separated: 0.00123, 1.52, 20,600."""
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def sync(device: str) -> None:
    """Wait for queued GPU work: without it a CUDA timing measures only the launches."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> float:
    """Seconds for one call of fn, device work included."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


MATMUL_N = 2048


def matmul_gflops(dtype: Any, device: str, reps: int, n: int = MATMUL_N) -> float:
    """The machine's ceiling: GFLOP/s of torch.mm on n x n matrices of `dtype` (median of `reps`)."""
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    inner = 5
    times = [timed(lambda: [torch.mm(a, b) for _ in range(inner)], device) / inner for _ in range(reps)]
    return 2 * n**3 / median(times) / 1e9


def ceiling(device: str, reps: int = 3) -> dict[str, float]:
    """{"fp32": GFLOP/s, "bf16": GFLOP/s} of the 2048x2048 matmul on `device`, measured now."""
    import torch

    return {"fp32": matmul_gflops(torch.float32, device, reps), "bf16": matmul_gflops(torch.bfloat16, device, reps)}


def floors(flops: float, fp32: float, bf16: float) -> tuple[float, float, float]:
    """Seconds `flops` would take at the fp32 and at the bf16 matmul rate (GFLOP/s), and the lower
    of the two: the floor a target is judged against. Where bf16 matmul is slower than fp32 (a CPU
    with AVX512_BF16 but no AMX), the "bf16 floor" is not the floor, and judging against it would
    flatter the measured time."""
    f32, f16 = flops / (fp32 * 1e9), flops / (bf16 * 1e9)
    return f16, f32, min(f16, f32)


def floor_note(bf16_floor: float, fp32_floor: float) -> str:
    """What a ratio column says where bf16 matmul is the slower one (the target is then judged on fp32)."""
    return "; bf16 matmul slower than fp32 here: judged on the fp32 floor" if bf16_floor > fp32_floor else ""


def run_command(args: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of a command; raises with its stderr when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def mnistlab_command() -> list[str]:
    """The installed `mnistlab` console script (what a user runs), else `python -m mnistlab`."""
    script = Path(sys.executable).parent / "mnistlab"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mnistlab"]


def available_devices(requested: str) -> list[str]:
    """cpu always; cuda too where a CUDA device is present (or only the one asked for)."""
    import torch

    if requested == "all":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [requested]


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare these figures with theirs."""
    import torch

    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16_isa": ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "none",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    try:
        info["load_average"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return info


# ----------------------------------------------------------------------------- data

def write_made_mnist(root: Path, n_train: int = 1200, n_test: int = 300) -> Path:
    """A data root whose mnist/ holds made-up IDX files (quick mode; never used for the figures in the docs)."""
    from mnistlab.data.synthetic import write_fake_mnist

    write_fake_mnist(root / "mnist", n_train=n_train, n_test=n_test)
    return root


def short_run(ctx: Context, name: str) -> Path:
    """A real `fast` run folder to predict with (a twentieth of an epoch: its accuracy does not matter), made once."""
    import mnistlab

    run_dir = ctx.work / name
    if not (run_dir / "checkpoints" / "best.pt").is_file():
        mnistlab.train(model="fast", data_dir=ctx.data_dir, epochs=0.05, out=str(ctx.work), name=name,
                       progress="quiet", plots=False, device="cpu")
    return run_dir


def load_mnist(ctx: Context) -> Any:
    """The MNIST of ctx.data_dir as mnistlab's ImageData (uint8 [N, 1, 28, 28] tensors)."""
    import warnings

    from mnistlab.data import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # made-up files warn that they are not the official ones
        return load_dataset("mnist", ctx.data_dir)
