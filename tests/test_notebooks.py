"""mnistlab in a real Jupyter kernel (ipykernel, driven by nbclient / jupyter_client): the progress bar
(widget, or text without ipywidgets), two runs in one kernel, the stop button, and every example
notebook in examples/ executed with few epochs and its outputs checked.

The example notebooks are checked on real MNIST when $MNISTLAB_DATA has it (as CI does), else on the
made dataset (whose "not the official files" warning is then the one stderr line allowed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

SETUP = '''
import json, os, threading, time
import mnistlab
from torch import nn
from mnistlab.data.synthetic import make_fake_mnist


class Slow(nn.Module):
    """A linear model that takes 4 ms a step: an epoch lasts long enough for the bar to redraw."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        time.sleep(0.004)
        return self.fc(x.flatten(1))


x, y = make_fake_mnist(3000, seed=0)
'''
FIT = "mnistlab.fit(Slow(), (x, y), epochs={epochs}, batch_size=4, out='runs'{more})"
# Threads and open files of the kernel process, after a run.
RESOURCES = "(threading.active_count(), len(os.listdir('/proc/self/fd')) if os.path.isdir('/proc/self/fd') else 0)"


def execute(sources: list[str], cwd: Path) -> Any:
    """Run code cells in a fresh kernel (cwd as its folder); returns the executed notebook."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    return execute_notebook(nb, cwd)


def execute_notebook(nb: Any, cwd: Path) -> Any:
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def streams(cell: Any, name: str) -> str:
    return "".join(o["text"] for o in cell.outputs if o.output_type == "stream" and o["name"] == name)


def visible(text: str) -> list[str]:
    """The lines a notebook's output area shows: a carriage return starts its line again."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n") if line.rsplit("\r", 1)[-1].strip()]


def html_outputs(cell: Any) -> list[str]:
    return [o["data"]["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})]


def no_stderr(nb: Any, allowed: tuple[str, ...] = ()) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = streams(cell, "stderr").splitlines()
        for i, line in enumerate(lines):
            # An allowed warning, and the source line Python's warnings print under it (indented).
            ok = any(a in line for a in allowed) or (line.startswith("  ") and i and any(a in lines[i - 1] for a in allowed))
            assert ok, f"unexpected stderr in {cell.source[:60]!r}: {line}"


@pytest.mark.slow
def test_text_bar_without_ipywidgets_and_two_runs_in_one_kernel(tmp_path: Path) -> None:
    nb = execute([
        "import sys\nsys.modules['ipywidgets'] = None  # as if it were not installed\n" + SETUP,
        f"run1 = {FIT.format(epochs=2, more='')}\nafter1 = {RESOURCES}",
        (f"run2 = {FIT.format(epochs=2, more=', plots=False')}\nafter2 = {RESOURCES}\n"
         "print(json.dumps({'paths': [str(run1.path), str(run2.path)], 'after': [after1, after2],"
         " 'status': [run1.summary['status'], run2.summary['status']]}))"),
        "run2",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()",
    ], tmp_path)
    no_stderr(nb)  # no TqdmWarning, no "IProgress not found"
    out = streams(nb.cells[1], "stdout")
    assert "\x1b" not in out  # no escape codes
    # A live bar: a frame between 0% and 100% while epoch 1 ran, redrawn in place (carriage returns).
    assert re.search(r"\repoch 1/2:\s+([1-9]\d?)%\|", out), out[:2000]
    lines = visible(out)
    assert [line.split()[0] for line in lines] == ["data:", "training", "epoch", "epoch", "test", "run"], lines
    assert lines[2].startswith("epoch 1/2  train loss") and lines[3].startswith("epoch 2/2  train loss")
    report = json.loads(visible(streams(nb.cells[2], "stdout"))[-1])
    assert report["paths"] == ["runs/slow-tensors", "runs/slow-tensors-2"]
    assert report["status"] == ["completed", "completed"]
    assert report["after"][0] == report["after"][1]  # the second run left no thread or open file behind
    [html] = html_outputs(nb.cells[3])
    assert "Run slow-tensors-2" in html and "Test metrics" in html and "data:image/png;base64," in html
    # The run's plots did not take the notebook's matplotlib backend away.
    assert any("image/png" in o.get("data", {}) for o in nb.cells[4].outputs)


@pytest.mark.slow
def test_widget_bar_with_ipywidgets(tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    fit = FIT.format(epochs=2, more=", plots=False")
    nb = execute([SETUP, f"run = {fit}", f"os.environ['QT_API'] = 'pyqt5'  # Qt Console draws no widgets\nrun = {fit}"],
                 tmp_path)
    no_stderr(nb)  # no TqdmExperimentalWarning either
    cell = nb.cells[1]
    widgets = [o for o in cell.outputs if WIDGET_MIME in o.get("data", {})]
    assert len(widgets) == 2  # one bar per epoch
    out = streams(cell, "stdout")
    assert "%|" not in out and "\r" not in out
    assert [line.split()[0] for line in visible(out)] == ["data:", "training", "epoch", "epoch", "test", "run"]
    qt = nb.cells[2]
    assert not any(WIDGET_MIME in o.get("data", {}) for o in qt.outputs)
    assert "\repoch 1/2:" in streams(qt, "stdout")  # the text bar instead


@pytest.mark.slow
def test_stop_button_leaves_the_run_resumable_and_says_how(tmp_path: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        assert kc.execute_interactive(SETUP, timeout=300)["content"]["status"] == "ok"
        seen: dict[str, Any] = {"stdout": "", "error": None, "interrupted": False}

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream" and content["name"] == "stdout":
                seen["stdout"] += content["text"]
                if "epoch 1/3  train loss" in seen["stdout"] and not seen["interrupted"]:
                    km.interrupt_kernel()  # what the stop button does
                    seen["interrupted"] = True
            elif msg["msg_type"] == "error":
                seen["error"] = content

        reply = kc.execute_interactive(f"run = {FIT.format(epochs=3, more=', plots=False')}", timeout=300,
                                       output_hook=hook)
        assert reply["content"]["status"] == "error" and seen["error"]["ename"] == "KeyboardInterrupt"
        assert "Resume with: mnistlab train --resume runs/slow-tensors" not in seen["stdout"]
        assert ("Resume with: mnistlab.fit(Slow(...), data, resume='runs/slow-tensors')"
                in seen["stdout"]), seen["stdout"][-800:]
        summary = json.loads((tmp_path / "runs" / "slow-tensors" / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        resumed: list[str] = []
        kc.execute_interactive(
            "run = mnistlab.fit(Slow(), (x, y), resume='runs/slow-tensors')\n"
            "print('RESULT', run.path, run.summary['status'], run.summary['epochs_run'])", timeout=300,
            output_hook=lambda m: resumed.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
        assert "RESULT runs/slow-tensors completed 3" in "".join(resumed)
        assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["slow-tensors"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# Per notebook: epochs on real MNIST, on the made data, and the lowest acceptable first test accuracy.
SETTINGS = {
    "01-dnn-tutorial": ("0.05", "2", 0.6),
    "02-cnn-and-rnn": ("0.03", "2", 0.15),
    "03-predict-your-digits": ("0.1", "2", 0.3),
    "04-text-sentiment": (None, None, 0.55),  # its default epochs take a second
}
ALLOWED_STDERR = {"01-dnn-tutorial": ("warning: init 'zeros' sets every weight to 0",)}
FAKE_DATA_WARNING = "are not the official"


def _data_root(fake_mnist_root: Path) -> tuple[Path, bool]:
    env = os.environ.get("MNISTLAB_DATA", "").strip()
    if env and any((Path(env) / "mnist").glob("t10k-images-idx3-ubyte*")):
        return Path(env), True
    return fake_mnist_root, False


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_notebook_runs(path: Path, tmp_path: Path, fake_mnist_root: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    if path.stem == "02-cnn-and-rnn":
        pytest.importorskip("pandas")  # its table.to_pandas() (CI installs pandas)
    root, real = _data_root(fake_mnist_root)
    real_epochs, fake_epochs, threshold = SETTINGS[path.stem]
    epochs = real_epochs if real else fake_epochs
    monkeypatch.setenv("MNISTLAB_DATA", str(root))
    if epochs:
        monkeypatch.setenv("MNISTLAB_EXAMPLE_EPOCHS", epochs)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(path, work / path.name)
    nb = execute_notebook(nbformat.read(work / path.name, as_version=4), work)
    no_stderr(nb, ALLOWED_STDERR.get(path.stem, ()) + (() if real else (FAKE_DATA_WARNING,)))
    text = "".join(streams(c, "stdout") for c in nb.cells if c.cell_type == "code")
    assert "Warning" not in text and "\x1b" not in text
    accuracy = float(re.search(r"^test accuracy (\d\.\d+)$", text, re.MULTILINE).group(1))
    assert accuracy >= threshold, f"{path.stem}: test accuracy {accuracy} < {threshold}"
    shown = [h for c in nb.cells if c.cell_type == "code" for h in html_outputs(c)]
    assert any("Test metrics" in h and f"{accuracy:.4f}" in h and "data:image/png;base64," in h for h in shown)
    pictures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert pictures >= (0 if path.stem == "04-text-sentiment" else 1)
    if path.stem in ("01-dnn-tutorial", "02-cnn-and-rnn"):
        assert any("<th>test acc</th>" in h for h in shown)  # the mnistlab.compare table
