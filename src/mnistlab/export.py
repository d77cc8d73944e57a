"""Export a trained model to ONNX or TorchScript with its normalisation built in.

The exported graph takes what any image library produces without knowing the training
statistics:

    input  "image"   float32 [N, C, H, W], pixel values in [0, 1], white digit on black
    output "logits"  float32 [N, num_classes]   (softmax them for probabilities)

N is a dynamic axis; C, H and W are fixed by the checkpoint (1, 28, 28 for MNIST). Recurrent
models read the H rows as a sequence of fixed length H.

Every export is verified: onnxruntime (or the reloaded TorchScript module) must match
PyTorch within 1e-4 on a batch of images, and the largest difference is reported.

Example:
    >>> result = export_run("runs/fast", "onnx")           # doctest: +SKIP
    >>> result.path, result.max_diff                       # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from mnistlab.errors import MnistlabError, UsageError

FORMATS = ("onnx", "torchscript")
OPSET = 17
TOLERANCE = 1e-4
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class NormalizedModel(nn.Module):
    """Wraps a model so it takes images in [0, 1]: computes (x - mean) / std first."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] float in [0, 1] -> [N, K] logits."""
        return self.model((image - self.mean) / self.std)


@dataclass
class ExportResult:
    """What was written and how closely it matches PyTorch."""

    path: Path
    format: str
    max_diff: float
    samples: int
    sample_source: str
    in_channels: int
    image_size: int
    num_classes: int


def default_out(run_dir: Path, fmt: str) -> Path:
    """RUN/export/model.onnx or RUN/export/model.torchscript.pt."""
    return run_dir / "export" / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")


def export_onnx(wrapped: nn.Module, example: torch.Tensor, out: Path) -> None:
    """Write an ONNX file (opset 17, dynamic batch axis) and run the ONNX checker on it."""
    try:
        import onnx
    except ImportError:
        raise MnistlabError("ONNX export needs the onnx package: pip install 'mnistlab[export]'") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript-based exporter warns about RNN batch sizes and deprecations; the
        # numerical check below is what tells whether the export is right.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped.eval(), (example,), str(out),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True,
            dynamo=False,  # the dynamo exporter needs onnxscript; the TorchScript one does not
        )
    onnx.checker.check_model(onnx.load(str(out)))


def export_torchscript(wrapped: nn.Module, example: torch.Tensor, out: Path) -> None:
    """Trace the wrapped model and save it (load it with torch.jit.load; no mnistlab needed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-derived Python ints
        traced = torch.jit.trace(wrapped.eval(), (example,), check_trace=False)
    traced.save(str(out))


def run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits from onnxruntime (CPU) for float32 images [N, C, H, W] in [0, 1]."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MnistlabError("checking an ONNX export needs onnxruntime: pip install 'mnistlab[export]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})[0]


def verify(path: Path, fmt: str, wrapped: nn.Module, images: torch.Tensor) -> float:
    """The largest absolute logit difference between the exported file and PyTorch on `images`."""
    with torch.inference_mode():
        expected = wrapped.eval()(images).float().numpy()
    if fmt == "onnx":
        got = run_onnx(path, images.numpy())
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the portable format
            loaded = torch.jit.load(str(path), map_location="cpu").eval()
        with torch.inference_mode():
            got = loaded(images).float().numpy()
    if got.shape != expected.shape:
        raise MnistlabError(f"exported model gives shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got - expected).max()) if expected.size else 0.0


def export_model(
    model: nn.Module,
    mean: Sequence[float],
    std: Sequence[float],
    fmt: str,
    out: str | Path,
    *,
    in_channels: int = 1,
    image_size: int = 28,
    check_images: torch.Tensor | None = None,
) -> tuple[float, int]:
    """Export `model` with normalisation to `out` and verify it.

    Args:
        check_images: float images [N, C, H, W] in [0, 1] to compare on (default: 16 random ones).

    Returns:
        (max abs difference vs PyTorch, number of images compared).

    Raises:
        MnistlabError: the export fails or differs from PyTorch by more than 1e-4.
    """
    if fmt not in FORMATS:
        raise UsageError(f"bad format {fmt!r}: choose onnx or torchscript")
    out = Path(out)
    wrapped = NormalizedModel(model.float().cpu().eval(), mean, std).eval()
    # A batch of 2 traces the batch axis as a variable (1 can be specialised away).
    example = torch.rand(2, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    try:
        if fmt == "onnx":
            export_onnx(wrapped, example, out)
        else:
            export_torchscript(wrapped, example, out)
    except MnistlabError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter errors are long; keep the first line
        raise MnistlabError(f"{fmt} export of {type(model).__name__} failed: {str(exc).splitlines()[0][:300]}") from None
    if check_images is None:
        check_images = torch.rand(16, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(1))
    max_diff = verify(out, fmt, wrapped, check_images.float())
    if not max_diff <= TOLERANCE:
        raise MnistlabError(f"the {fmt} export differs from PyTorch by {max_diff:.2e} (> {TOLERANCE:g}); {out} is unreliable")
    return max_diff, len(check_images)


def _check_images(run_config: dict[str, Any], data: dict[str, Any], count: int = 64) -> tuple[torch.Tensor, str]:
    """The run's first `count` test images in [0, 1] if the dataset is at hand, else random images."""
    size, channels = int(data["image_size"]), int(data["in_channels"])
    try:
        from mnistlab.data import load_dataset

        dataset = load_dataset(run_config["dataset"], run_config.get("data_dir"), seed=int(run_config.get("seed", 0)))
        images = dataset.test_images[:count].float() / 255.0
        if tuple(images.shape[1:]) == (channels, size, size) and len(images):
            return images, "test"
    except Exception:  # noqa: BLE001 - no data here is fine: random images still prove the export
        pass
    return torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(1)), "random"


def export_run(
    run: Any, fmt: str, out: str | Path | None = None, *, checkpoint: str = "best", code: Any = None
) -> ExportResult:
    """Export a run's checkpoint (see the module docstring for the input/output contract).

    `code` (a usercode.ModelCode) is the model's file for a run of a user's model; the export
    itself is self-contained and needs no code to run.
    """
    from mnistlab.predict import load_checkpoint_path
    from mnistlab.runs import load_run
    from mnistlab.training.checkpoint import build_model_from_checkpoint, load_checkpoint

    if fmt not in FORMATS:
        raise UsageError(f"bad format {fmt!r}: choose onnx or torchscript")
    ckpt_path = load_checkpoint_path(run, checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    model = build_model_from_checkpoint(ckpt, str(ckpt_path), code=code)
    data = ckpt["data"]
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    try:
        config = load_run(run_dir).config
    except MnistlabError:
        config = {}
    images, source = _check_images(config, data) if config.get("dataset") else _check_images({}, data)
    target = Path(out) if out else default_out(run_dir, fmt)
    max_diff, samples = export_model(
        model, data["mean"], data["std"], fmt, target,
        in_channels=int(data["in_channels"]), image_size=int(data["image_size"]), check_images=images,
    )
    return ExportResult(
        path=target, format=fmt, max_diff=max_diff, samples=samples, sample_source=source,
        in_channels=int(data["in_channels"]), image_size=int(data["image_size"]), num_classes=len(data["classes"]),
    )
