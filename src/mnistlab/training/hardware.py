"""The machine a run trains on: device choice, bf16 support, seeding and the random generators' state."""

from __future__ import annotations

import os
import platform
import random
from typing import Any

import numpy as np
import torch
from torch import nn

import mnistlab
from mnistlab.errors import UsageError


def select_device(name: str = "auto") -> torch.device:
    """auto -> cuda, then mps, then cpu; an explicit device that is missing is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here (use --device auto or cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: no Apple MPS device is available here (use --device auto or cpu)")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix math runs in hardware (CUDA Ampere+, CPUs with AVX512_BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def has_amx() -> bool:
    """True on CPUs with AMX tiles (Intel Sapphire Rapids and later), where oneDNN's bf16 matmul runs
    several times faster than fp32; torch asks the kernel for the tiles here."""
    init = getattr(getattr(torch._C, "_cpu", None), "_init_amx", None)
    try:
        return bool(init()) if init is not None else False
    except RuntimeError:
        return False


def bf16_pays(device: torch.device) -> bool:
    """Whether `--amp auto` should train in bf16 on `device`: CUDA with bf16, or a CPU with AMX.

    AVX512_BF16 alone is native bf16 too, yet there bf16 matmul ran at about 0.6x fp32 and the
    `fast` default trained 1.38x slower in bf16 than in fp32 (benchmarks/bench_amp.py)."""
    if device.type == "cpu":
        return native_bf16(device) and has_amx()
    return native_bf16(device)


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def has_batchnorm(model: nn.Module) -> bool:
    """True if any layer normalises over the batch (it cannot train on a batch of one sample)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The random generators' states as plain values (loadable with weights_only=True)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    py = random.getstate()
    state["python"] = [py[0], list(py[1]), py[2]]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def environment_info(device: torch.device, amp: bool, channels_last: bool) -> dict[str, Any]:
    """environment.json: versions, platform, device and the numeric settings a run trained with."""
    env = {
        "mnistlab_version": mnistlab.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "bf16_autocast": amp,
        "channels_last": channels_last,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
