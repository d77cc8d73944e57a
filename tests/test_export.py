"""`mnistlab export`: every model in the zoo to ONNX and TorchScript, normalisation built in,
dynamic batch axis, outputs matching PyTorch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.export import NormalizedModel, export_model
from mnistlab.models import create_model, list_models

MEAN, STD = [0.1307], [0.3081]
# torch.jit.load warns that TorchScript is deprecated; loading it is exactly what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")


@pytest.mark.parametrize("name", list_models())
def test_onnx_every_model(name: str, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model(name).eval()
    out = tmp_path / f"{name}.onnx"
    max_diff, _ = export_model(model, MEAN, STD, "onnx", out)
    assert max_diff <= 1e-4

    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named (dynamic) batch axis

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    wrapped = NormalizedModel(model, MEAN, STD).eval()
    for batch in (1, 5):  # two sizes prove the batch axis is dynamic
        x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
        got = session.run(["logits"], {"image": x.numpy()})[0]
        with torch.no_grad():
            expected = wrapped(x).numpy()
        assert got.shape == (batch, 10)
        assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("name", list_models())
def test_torchscript_every_model(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    out = tmp_path / f"{name}.pt"
    export_model(model, MEAN, STD, "torchscript", out)
    loaded = torch.jit.load(str(out))
    for batch in (1, 5):
        x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            assert torch.allclose(loaded(x), model((x - MEAN[0]) / STD[0]), atol=1e-4)


def test_normalisation_is_embedded(tmp_path: Path) -> None:
    """The exported model takes [0, 1] pixels: feeding it x equals feeding the model (x-mean)/std."""
    model = create_model("logistic").eval()
    out = tmp_path / "m.pt"
    export_model(model, [0.5], [0.25], "torchscript", out)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(out))(x), model((x - 0.5) / 0.25), atol=1e-6)


def test_export_command(fake_mnist_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import mnistlab

    run = mnistlab.train(mnistlab.TrainConfig(model="logistic", data_dir=str(fake_mnist_root), epochs=1,
                                              out=str(tmp_path / "runs"), progress="quiet", plots=False))
    for fmt, out in (("onnx", tmp_path / "m.onnx"), ("torchscript", None)):
        cmd = [sys.executable, "-m", "mnistlab", "export", str(run.path), "--format", fmt]
        if out:
            cmd += ["--out", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "max abs difference vs PyTorch" in r.stdout
        written = out or run.path / "export" / "model.torchscript.pt"
        assert written.is_file()
    r = subprocess.run([sys.executable, "-m", "mnistlab", "export", str(run.path), "--format", "tflite"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
