"""Results as a notebook shows them, without a kernel: a Run's HTML and its plot/confusion_matrix/predict,
the table `mnistlab.compare` returns, evaluate's metrics dict, and the progress bar's choice of place."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import mnistlab
import mnistlab.text
from mnistlab.data.synthetic import make_fake_mnist
from mnistlab.errors import DataError, MnistlabError, UsageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


@pytest.fixture
def finished_run(fake_mnist_root: Path, tmp_path: Path) -> mnistlab.Run:
    return mnistlab.train(mnistlab.TrainConfig(model="logistic", data_dir=str(fake_mnist_root), epochs=2,
                                               out=str(tmp_path / "runs"), progress="quiet", plots=False))


def test_run_shows_as_html_with_metrics_and_embedded_curves(finished_run: mnistlab.Run) -> None:
    html = finished_run._repr_html_()
    summary = finished_run.summary
    for text in ("Run logistic", "<td>model</td><td>logistic</td>", "<td>dataset</td><td>mnist</td>",
                 "<td>status</td><td>completed</td>", "Test metrics", f"{summary['accuracy']:.4f}",
                 f"{summary['f1_macro']:.4f}", "AUC (macro, OvR)"):
        assert text in html
    pictures = _embedded_pngs(html)
    assert len(pictures) == 1 and pictures[0].startswith(PNG_MAGIC)
    # Nothing that breaks when the notebook moves: no file links.
    assert "plots/" not in html and "file:" not in html
    assert repr(finished_run) == f"Run({str(finished_run.path)!r})"


def test_run_html_of_an_unfinished_run_says_so(finished_run: mnistlab.Run) -> None:
    summary_path = finished_run.path / "summary.json"
    summary = json.loads(summary_path.read_text())
    for key in ("accuracy", "f1_macro", "confusion_matrix"):
        summary.pop(key)
    summary["status"] = "interrupted"
    summary_path.write_text(json.dumps(summary))
    html = finished_run._repr_html_()
    assert "No test metrics yet (status interrupted)" in html
    assert len(_embedded_pngs(html)) == 1  # the epochs it did finish
    with pytest.raises(MnistlabError, match="no test metrics"):
        finished_run.confusion_matrix()


def test_plot_and_confusion_matrix_are_figures(finished_run: mnistlab.Run) -> None:
    from matplotlib.figure import Figure

    fig = finished_run.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [len(line.get_xdata()) for line in fig.axes[0].lines if line.get_label() == "train"] == [2]
    assert fig._repr_png_().startswith(PNG_MAGIC)  # how a notebook shows it, pyplot or not
    cm = finished_run.confusion_matrix()
    assert isinstance(cm, Figure)
    counts = np.asarray(finished_run.test_metrics["confusion_matrix"])
    shown = cm.axes[0].images[0].get_array()
    assert np.array_equal(np.asarray(shown), counts)
    (finished_run.path / "metrics.csv").unlink()
    with pytest.raises(MnistlabError, match="no finished epoch"):
        finished_run.plot()


def test_drawing_never_switches_the_matplotlib_backend(fake_mnist_root: Path, tmp_path: Path) -> None:
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands for a notebook's inline backend: the report must keep it
    try:
        mnistlab.train(mnistlab.TrainConfig(model="logistic", data_dir=str(fake_mnist_root), epochs=1,
                                            out=str(tmp_path / "runs"), progress="quiet"))
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "runs" / "logistic" / "plots" / "curves.png").read_bytes().startswith(PNG_MAGIC)
    finally:
        matplotlib.use(before)


def test_predict_arrays_match_evaluate(finished_run: mnistlab.Run, fake_mnist_root: Path) -> None:
    data = mnistlab.load_dataset("mnist", str(fake_mnist_root))
    images, labels = data.test_images.numpy(), data.test_labels.numpy()
    predicted, probabilities = finished_run.predict(images)
    assert probabilities.shape == (len(images), 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = np.mean(np.array(predicted).astype(int) == labels)
    assert accuracy == pytest.approx(mnistlab.evaluate(finished_run)["accuracy"])
    # The same images as a tensor, as [N, 1, H, W], as floats 0-1, and one at a time.
    as_tensor = finished_run.predict(torch.from_numpy(images))
    assert as_tensor.labels == predicted
    np.testing.assert_allclose(as_tensor.probabilities, probabilities, atol=1e-6)
    assert finished_run.predict(images[:, 0]).labels == predicted
    assert finished_run.predict(images[:20].astype(np.float32) / 255).labels == predicted[:20]
    one = finished_run.predict(images[3, 0])
    assert one.labels == [predicted[3]] and one.probabilities.shape == (1, 10)


def test_predict_files_pil_images_and_a_canvas(finished_run: mnistlab.Run, tmp_path: Path) -> None:
    from mnistlab.predict import Predictor, preprocess_image, quantize

    images, _ = make_fake_mnist(4, seed=3)
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(255 - image).resize((84, 84)).save(folder / f"d{i}.png")  # dark on light, larger
    files = sorted(folder.iterdir())
    by_folder = finished_run.predict(folder)
    expected, errors = Predictor.from_run(finished_run).predict_paths([folder])
    assert not errors and by_folder.labels == [p.prediction for p in expected]
    by_pil = finished_run.predict([Image.open(f) for f in files])
    assert by_pil.labels == by_folder.labels
    np.testing.assert_allclose(by_pil.probabilities, by_folder.probabilities, atol=1e-6)
    mixed = finished_run.predict([files[0], Image.open(files[1]), images[2]])
    assert mixed.labels[:2] == by_folder.labels[:2] and len(mixed.labels) == 3
    # A canvas array of another size is preprocessed like a picture; the model then sees this 28x28.
    canvas = np.asarray(Image.open(files[0]).resize((280, 280)))
    seen = quantize(preprocess_image(Image.fromarray(canvas))).astype(np.float32)
    np.testing.assert_allclose(finished_run.predict(canvas).probabilities,
                               finished_run.predict(seen, preprocess="none").probabilities, atol=1e-6)


def test_predict_refuses_what_it_cannot_use(finished_run: mnistlab.Run, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="int; predict takes image paths"):
        finished_run.predict(123)
    with pytest.raises(UsageError, match="nothing to predict"):
        finished_run.predict([])
    with pytest.raises(UsageError, match="bad preprocess"):
        finished_run.predict(np.zeros((28, 28), np.uint8), preprocess="photos")
    with pytest.raises(DataError, match="NaN"):
        finished_run.predict(np.full((28, 28), np.nan, np.float32))
    with pytest.raises(DataError, match="channels"):
        finished_run.predict(np.zeros((2, 5, 28, 28), np.uint8))
    with pytest.raises(DataError, match="280x280 images; the model takes 28x28"):
        finished_run.predict(np.zeros((280, 280), np.uint8), preprocess="none")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(DataError, match="broken.png"):
        finished_run.predict([broken])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="nothing to predict"):
        finished_run.predict(empty)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_predict_with_a_run_of_a_module_object_needs_a_fresh_instance(tmp_path: Path) -> None:
    x, y = make_fake_mnist(300, seed=0)
    run = mnistlab.fit(_Net(), data=(x, y), epochs=1, out=str(tmp_path / "runs"), progress="quiet", plots=False)
    with pytest.raises(MnistlabError, match="model=YourNet"):
        run.predict(x[:3])
    got = run.predict(x[:50], model=_Net())
    assert np.mean(np.array(got.labels).astype(int) == y[:50]) > 0.5


def test_compare_from_python_is_a_table(fake_mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path / "runs")
    common = {"data_dir": str(fake_mnist_root), "out": out, "progress": "quiet", "plots": False}
    a = mnistlab.train(mnistlab.TrainConfig(model="logistic", epochs=1, **common))
    b = mnistlab.train(mnistlab.TrainConfig(model="mlp", epochs=1, **common))
    table = mnistlab.compare(a, str(b.path), str(tmp_path / "missing"), sort="name")
    assert [row["name"] for row in table] == ["logistic", "mlp"] and len(table) == 2
    assert table[0]["test_accuracy"] == a.summary["accuracy"]
    assert any("missing: does not exist" in note for note in table.notes)
    assert "logistic" in str(table) and "test acc" in str(table) and repr(table) == "<RunTable of 2 runs>"
    html = table._repr_html_()
    assert html.count("<tr>") == 3 and "<th>test acc</th>" in html and f"{a.summary['accuracy']:.4f}" in html
    pytest.importorskip("pandas")
    frame = table.to_pandas()
    assert list(frame.index) == ["logistic", "mlp"] and frame.loc["mlp", "model"] == "mlp"
    assert frame.loc["logistic", "test_accuracy"] == a.summary["accuracy"]
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(UsageError, match="to_pandas\\(\\) needs pandas: pip install pandas"):
        table.to_pandas()


def test_compare_stays_callable_once_its_module_is_imported(quick_run: Path) -> None:
    """`import mnistlab.compare` (the CLI, a sweep) makes mnistlab.compare the module: still callable."""
    code = ("import sys, mnistlab, mnistlab.compare\n"
            "first = mnistlab.compare(sys.argv[1])\n"
            "from mnistlab.compare import run_row\n"
            "print(len(first), len(mnistlab.compare(sys.argv[1], sort='accuracy')))")
    done = subprocess.run([sys.executable, "-c", code, str(quick_run)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]


def test_evaluate_metrics_are_a_dict_that_shows_the_confusion_matrix(finished_run: mnistlab.Run) -> None:
    metrics = mnistlab.evaluate(finished_run)
    assert isinstance(metrics, dict)
    plain = dict(metrics)
    assert metrics == plain and json.loads(json.dumps(metrics)) == json.loads(json.dumps(plain))
    html = metrics._repr_html_()
    assert f"{metrics['accuracy']:.4f}" in html and "<summary>per class</summary>" in html
    assert "split test, checkpoint best" in html
    [picture] = _embedded_pngs(html)
    assert picture.startswith(PNG_MAGIC)


def test_progress_bar_outside_a_notebook_is_tqdms_terminal_bar() -> None:
    from tqdm import std

    from mnistlab.training.progress import Reporter, in_notebook, progress_bar

    assert not in_notebook()  # pytest: no kernel, whatever IPython may be imported
    bar = Reporter("bar").bar(10, "epoch 1/1")
    assert type(bar) is std.tqdm
    assert bar.disable  # stderr is captured here, not a terminal: off, as before
    bar.close()
    for mode in ("quiet", "jsonl"):
        quiet = Reporter(mode).bar(10, "x")
        assert quiet.disable
        quiet.close()
    shown = progress_bar(3, "download", show=True)
    assert not shown.disable
    shown.close()


EXAMPLE_NAMES = ["01-dnn-tutorial", "02-cnn-and-rnn", "03-predict-your-digits", "04-text-sentiment"]


def test_example_notebooks_are_committed_without_outputs_and_linked_from_the_readme() -> None:
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert sorted(p.stem for p in (root / "examples").glob("*.ipynb")) == EXAMPLE_NAMES
    for name in EXAMPLE_NAMES:
        nb = json.loads((root / "examples" / f"{name}.ipynb").read_text(encoding="utf-8"))
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), name
        assert f"(examples/{name}.ipynb)" in readme


class _StopAfterFirstEpoch(mnistlab.Callback):
    """Raises KeyboardInterrupt (the notebook's stop button) once epoch 1 is saved; keeps the trainer."""

    def __init__(self) -> None:
        self.trainer = None

    def on_epoch_end(self, trainer, state) -> None:  # type: ignore[no-untyped-def]
        self.trainer = trainer
        raise KeyboardInterrupt


def test_the_python_resume_hint_resumes(fake_mnist_root: Path, tmp_path: Path) -> None:
    """What a notebook prints after the stop button, run as printed, continues the run in its folder."""
    from mnistlab.training.callbacks.output import python_resume

    stop = _StopAfterFirstEpoch()
    with pytest.raises(KeyboardInterrupt, match="Resume with: mnistlab train --resume"):
        mnistlab.train(mnistlab.TrainConfig(model="logistic", data_dir=str(fake_mnist_root), epochs=2,
                                            out=str(tmp_path / "runs"), progress="quiet", plots=False),
                       callbacks=[stop])
    hint = python_resume(stop.trainer)
    assert hint == f"mnistlab.train(resume={str(tmp_path / 'runs' / 'logistic')!r})"
    run = eval(hint, {"mnistlab": mnistlab})  # noqa: S307 - the hint is ours
    assert run.path == tmp_path / "runs" / "logistic" and run.summary["status"] == "completed"
    assert run.summary["epochs_run"] == 2

    stop = _StopAfterFirstEpoch()
    with pytest.raises(KeyboardInterrupt):
        mnistlab.text.train_text("builtin:sentiment", epochs=3, out=str(tmp_path / "runs"), progress="quiet",
                                 plots=False, callbacks=[stop])
    hint = python_resume(stop.trainer)
    assert hint.startswith("mnistlab.text.train_text(resume=")
    assert eval(hint, {"mnistlab": mnistlab}).summary["epochs_run"] == 3  # noqa: S307


# ----------------------------------------------------------------------------- found by trying to break it (2)


@pytest.mark.parametrize("name, text", [("summary.json", ""), ("summary.json", "{bad"), ("summary.json", "[1, 2]"),
                                        ("metrics.csv", "epoch,train_loss\nabc,1\n"), ("metrics.csv", "\xff\xfe\x00")])
def test_a_damaged_run_file_is_one_clear_error_and_the_run_still_displays(
        finished_run: mnistlab.Run, name: str, text: str) -> None:
    (finished_run.path / name).write_bytes(text.encode("latin-1"))
    read = (lambda: finished_run.summary) if name == "summary.json" else (lambda: finished_run.history)
    with pytest.raises(MnistlabError, match=f"{name} is damaged .*restore it or delete it"):
        read()
    with pytest.raises(MnistlabError, match="is damaged"):
        finished_run.plot()
    html = finished_run._repr_html_()  # a notebook still shows the rest, and says what is wrong
    assert f"{name} is damaged" in html and "<td>model</td><td>logistic</td>" in html


def test_compare_of_nothing_or_of_a_mistyped_folder_is_an_error_as_on_the_cli(
        finished_run: mnistlab.Run, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="compare needs run folders"):
        mnistlab.compare()
    with pytest.raises(MnistlabError, match="no run folders found in .*rnus.*does not exist"):
        mnistlab.compare(str(tmp_path / "rnus"))
    table = mnistlab.compare([finished_run, str(finished_run.path)])  # a list of runs, as a notebook has them
    assert len(table) == 1 and table[0]["name"] == "logistic"


def test_a_colour_array_for_a_gray_run_names_the_one_channel_count_it_takes(finished_run: mnistlab.Run) -> None:
    with pytest.raises(DataError, match=r"3 channels \(shape \[1, 3, 28, 28\]\); the model needs 1$"):
        finished_run.predict(np.zeros((1, 3, 28, 28), np.float32))


def test_predict_of_a_text_run_names_the_python_call_for_texts(tmp_path: Path) -> None:
    run = mnistlab.text.train_text("builtin:sentiment", out=str(tmp_path), epochs=1, model="gru", embed_dim=8,
                                   hidden=8, progress="quiet", seed=0)
    assert "texts" in run._repr_html_() and run.plot() is not None and run.confusion_matrix() is not None
    with pytest.raises(MnistlabError, match=r"text run's checkpoint; .*mnistlab\.text\.predict_text\(run, texts\)"):
        run.predict(["a good film"])
    table = mnistlab.compare(run, str(run.path))  # a text run compares as an image run does
    assert len(table) == 1 and table[0]["model"] == "gru"


def test_predict_of_a_run_of_a_users_model_file_says_the_python_arguments(fake_mnist_root: Path, tmp_path: Path) -> None:
    net = tmp_path / "my_net.py"
    net.write_text("from torch import nn\n\ndef Net():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    run = mnistlab.train(mnistlab.TrainConfig(model=f"{net}:Net", data_dir=str(fake_mnist_root), epochs=1,
                                              out=str(tmp_path / "runs"), progress="quiet", plots=False))
    images = np.zeros((2, 28, 28), np.uint8)
    with pytest.raises(MnistlabError, match=r'--model-code FILE.py \(in Python: model_code="FILE.py"\)$'):
        run.predict(images)
    with pytest.raises(UsageError, match=f"--model-code {tmp_path} is not a file"):
        run.predict(images, model_code=tmp_path)
    other = tmp_path / "other.py"
    other.write_text(net.read_text() + "# changed\n")
    with pytest.raises(MnistlabError, match=r"pass --allow-changed-code \(in Python: allow_changed_code=True\)"):
        run.predict(images, model_code=other)
    assert len(run.predict(images, model_code=other, allow_changed_code=True).labels) == 2


def test_a_colour_runs_pil_images_and_channels_last_arrays_predict_as_its_image_files(
        finished_run: mnistlab.Run, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (200, 3, 16, 16), dtype=np.uint8), rng.integers(0, 3, 200)
    run = mnistlab.fit("logistic", data=(x, y), epochs=1, out=str(tmp_path / "runs"), progress="quiet", plots=False)
    picture = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # as np.asarray gives a PIL image: [H, W, 3]
    Image.fromarray(picture).save(tmp_path / "p.png")
    from_file = run.predict(tmp_path / "p.png").probabilities
    chw = np.ascontiguousarray(np.moveaxis(picture, -1, 0))  # [3, H, W], as torchvision's ToTensor lays it out
    for given in (Image.open(tmp_path / "p.png"), picture, picture[None], [picture, picture], chw, torch.from_numpy(chw)):
        got = run.predict(given).probabilities  # was gray and digit-preprocessed (PIL), or 16 images of 16x3
        assert got.shape == (1 if not isinstance(given, list) else 2, 3) and np.allclose(got, from_file[0], atol=1e-6)
    assert np.allclose(run.predict(Image.open(tmp_path / "p.png"), preprocess="photo").probabilities, from_file)
    with pytest.raises(DataError, match=r"3 channels \(shape \[1, 3, 28, 28\]\); the model needs 1"):
        finished_run.predict(np.zeros((28, 28, 3), np.uint8))  # a gray run: not 28 images of 28x3


def test_a_colour_array_of_another_size_says_the_size_not_gray_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (200, 3, 16, 16), dtype=np.uint8), rng.integers(0, 3, 200)
    run = mnistlab.fit("logistic", data=(x, y), epochs=1, out=str(tmp_path / "runs"), progress="quiet", plots=False)
    with pytest.raises(DataError, match=r"holds colour 20x20 images; the model takes 16x16 \(colour arrays are not"):
        run.predict(np.zeros((2, 3, 20, 20), np.uint8))  # was: "3 channels ...; the model needs 1 (photo ...)"


def test_a_killed_run_shows_as_interrupted_and_a_training_one_as_running(finished_run: mnistlab.Run) -> None:
    from mnistlab.locks import folder_lock

    summary_path = finished_run.path / "summary.json"
    summary = {k: v for k, v in json.loads(summary_path.read_text()).items() if k not in ("accuracy", "confusion_matrix")}
    summary_path.write_text(json.dumps({**summary, "status": "running", "epochs_run": 0}))  # as a killed run leaves it
    assert finished_run.status == "interrupted"  # nothing holds its .lock
    assert "<td>status</td><td>interrupted</td>" in finished_run._repr_html_()
    assert mnistlab.compare(finished_run)[0]["status"] == "interrupted"
    assert mnistlab.compare(finished_run)[0]["epochs"] == 2  # the epochs of metrics.csv
    with pytest.raises(MnistlabError, match=r"no test metrics \(status interrupted\)"):
        finished_run.confusion_matrix()
    with folder_lock(finished_run.path / ".lock", "busy"):  # as the process training it holds it
        assert finished_run.status == "running" and mnistlab.compare(finished_run)[0]["status"] == "running"
    (finished_run.path / ".lock").unlink()
    assert finished_run.status == "running"  # no .lock: cannot be told (a run of an older version)


def test_a_run_made_from_a_string_path_works_as_load_runs(finished_run: mnistlab.Run) -> None:
    run = mnistlab.Run(str(finished_run.path))  # was: AttributeError 'str' object has no attribute 'name'
    assert run.name == "logistic" and run == finished_run and "Run logistic" in run._repr_html_()
    assert len(mnistlab.compare(run)) == 1


def test_predict_takes_rows_of_pixels_as_one_image_each(finished_run: mnistlab.Run) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    want = finished_run.predict(images).probabilities
    for rows in (images.reshape(3, 784), torch.from_numpy(images.reshape(3, 784))):  # as Kaggle's CSV holds them
        got = finished_run.predict(rows).probabilities  # was: one 3x784 picture, one prediction
        assert got.shape == (3, 10) and np.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("bad", ["abc", [[1, 2], [3]], [[1, "x"], [0, 1]], [[True, 0], [0, 1]], [[-1, 0], [0, 1]], 7])
def test_a_hand_edited_confusion_matrix_is_one_clear_error(finished_run: mnistlab.Run, bad) -> None:
    summary_path = finished_run.path / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "confusion_matrix": bad}))  # was: a raw TypeError
    with pytest.raises(MnistlabError, match="confusion_matrix is not a square list of rows of counts"):
        finished_run.confusion_matrix()
