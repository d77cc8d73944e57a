"""Your own model and data: `--model FILE.py:NAME`, `mnistlab.fit(model, data)`, and the boundary that keeps
a run folder from ever running code by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mnistlab
from mnistlab.cli import main
from mnistlab.data.synthetic import make_fake_mnist
from mnistlab.errors import MnistlabError, UsageError

MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class DNN(nn.Module):
        """The tutorials' DNN: hidden layers with BatchNorm and Dropout switches."""

        def __init__(self, hidden: int = 32, batchnorm: bool = True, dropout: float | None = 0.2, num_classes=10):
            super().__init__()
            layers = [nn.Flatten(), nn.Linear(784, hidden)]
            if batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(hidden, num_classes))
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            return self.net(x)


    def small_cnn(width=8, *, in_channels, num_classes):
        return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                             nn.Flatten(), nn.Linear(width * 16, num_classes))


    class NeedsWidth(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))


    class WrongShape(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 5)

        def forward(self, x):
            return self.fc(x.flatten(1))


    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(100, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))


    def not_a_module():
        return 3


    NOT_A_MODEL = 3
''')

# Writes a marker file beside itself when imported: proof of whether a command ran it.
MARKED = textwrap.dedent('''
    from pathlib import Path
    Path(__file__).with_suffix(".imported").write_text("imported")

    from torch import nn


    class Net(nn.Module):
        def __init__(self, hidden: int = 16):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))

        def forward(self, x):
            return self.net(x)
''')


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(MODELS)
    return path


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("mnistlab: error:")]
    assert len(lines) == 1, err
    return lines[0]


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(root), "--out", str(out), "--epochs", "2", "-q", "--no-plots", *extra]


# ----------------------------------------------------------------------------- the command line

def test_a_file_model_trains_and_records_where_it_came_from(models, fake_mnist_root, tmp_path, capsys):
    code, _, err = cli(capsys, *train_args(fake_mnist_root, tmp_path / "runs", "--model", f"{models}:DNN",
                                           "--set", "hidden=24", "--set", "dropout=none", "--init", "kaiming"))
    assert code == 0, err
    run = mnistlab.load_run(tmp_path / "runs" / "dnn")
    sha = __import__("hashlib").sha256(models.read_bytes()).hexdigest()
    record = {"path": str(models.resolve()), "name": "DNN", "sha256": sha}
    assert run.config["model"] == f"{models.resolve()}:DNN" and run.config["model_options"] == {"hidden": 24,
                                                                                               "dropout": None}
    assert run.config["model_code"] == record and run.summary["model_code"] == record
    assert run.summary["accuracy"] > 0.5 and run.summary["parameters"] == 784 * 24 + 24 + 2 * 24 + 24 * 10 + 10
    ckpt = torch.load(run.checkpoint_path("best"), weights_only=True)
    assert ckpt["model"]["code"] == record and ckpt["model"]["options"]["batchnorm"] is True


def test_a_builder_function_gets_the_data_arguments(models, fake_mnist_root, tmp_path, capsys):
    code, _, err = cli(capsys, *train_args(fake_mnist_root, tmp_path, "--model", f"{models}:small_cnn",
                                           "--set", "width=4"))
    assert code == 0, err
    assert mnistlab.load_run(tmp_path / "small_cnn").summary["parameters"] == 4 * 9 + 4 + 4 * 16 * 10 + 10


@pytest.mark.parametrize("spec, expected", [
    ("missing.py:DNN", "does not exist"),
    ("{models}:DNX", "has no 'DNX'. Did you mean DNN?"),
    ("{models}:NOT_A_MODEL", "is a int, not an nn.Module subclass or a function"),
    ("{models}:not_a_module", "returned a int, not an nn.Module"),
    ("{models}:WrongShape", "maps a batch of shape [2, 1, 28, 28] to [2, 5]; it must give logits of shape [2, 10]"),
    ("{models}:Fails", "fails on a batch of shape [2, 1, 28, 28]: RuntimeError"),
    ("{models}:NeedsWidth", "needs a value for width: pass --set width=..."),
    ("{syntax}:Net", "does not import: SyntaxError"),
    ("{missing_pkg}:Net", "does not import: ModuleNotFoundError: No module named 'no_such_package_here'"),
])
def test_a_bad_model_file_is_one_line_and_leaves_no_run_folder(spec, expected, models, fake_mnist_root, tmp_path,
                                                                capsys):
    (tmp_path / "syntax.py").write_text("def broken(:\n")
    (tmp_path / "missing_pkg.py").write_text("import no_such_package_here\n")
    spec = spec.format(models=models, syntax=tmp_path / "syntax.py", missing_pkg=tmp_path / "missing_pkg.py")
    code, _, err = cli(capsys, *train_args(fake_mnist_root, tmp_path / "runs", "--model", spec))
    assert code == 2 and expected in one_line(err), err
    assert not (tmp_path / "runs").exists()


def test_an_unknown_option_lists_the_accepted_ones(models, fake_mnist_root, tmp_path, capsys):
    code, _, err = cli(capsys, *train_args(fake_mnist_root, tmp_path, "--model", f"{models}:DNN", "--set", "hiden=3"))
    assert code == 2 and "has no option 'hiden'. Did you mean: hidden? Its options: hidden, batchnorm, dropout" in err
    code, _, err = cli(capsys, *train_args(fake_mnist_root, tmp_path, "--model", f"{models}:DNN", "--set",
                                           "batchnorm=perhaps"))
    assert code == 2 and "bad value 'perhaps' for option 'batchnorm'" in err


def test_summary_of_a_file_model(models, capsys):
    code, out, err = cli(capsys, "summary", f"{models}:small_cnn", "--set", "width=4")
    assert code == 0, err
    assert "Total params: 690" in out


def test_a_sweep_over_a_file_models_options(models, fake_mnist_root, tmp_path, capsys):
    code, out, err = cli(capsys, "sweep", "--model", f"{models}:DNN", "--grid", "hidden=8,16", "--epochs", "1",
                         "--data-dir", str(fake_mnist_root), "--out", str(tmp_path), "--workers", "1")
    assert code == 0, err
    sweep = tmp_path / "dnn-sweep"
    assert {mnistlab.load_run(sweep / n).summary["status"] for n in ("hidden=8", "hidden=16")} == {"completed"}


# ----------------------------------------------------------------------------- the security boundary

@pytest.fixture
def marked_run(tmp_path, fake_mnist_root, capsys) -> tuple[Path, Path, Path]:
    """A run of a model file that leaves a marker when imported; the marker removed after training."""
    code_file = tmp_path / "marked.py"
    # Unique content per test: an imported file stays imported in this process (keyed by its hash).
    code_file.write_text(MARKED + f"\n# {tmp_path}\n")
    marker = code_file.with_suffix(".imported")
    code, _, err = cli(capsys, "train", "--model", f"{code_file}:Net", "--data-dir", str(fake_mnist_root), "--out",
                       str(tmp_path / "runs"), "--epochs", "1", "-q")
    assert code == 0, err
    assert marker.exists()  # named on the command line: imported, as it should be
    marker.unlink()
    return tmp_path / "runs" / "net", code_file, marker


def test_no_command_on_a_run_imports_its_model_file_by_itself(marked_run, fake_mnist_root, tmp_path, capsys):
    run, code_file, marker = marked_run
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(make_fake_mnist(1, 3)[0][0]).save(image)
    commands = [
        ["evaluate", run, "--data-dir", fake_mnist_root],
        ["predict", run, image],
        ["export", run, "--format", "onnx"],
        ["train", "--resume", run, "--epochs", "2", "--data-dir", fake_mnist_root],
        ["train", "--config", run / "config.yaml", "--data-dir", fake_mnist_root, "--out", tmp_path / "again"],
        ["compare", run],
        ["predict", run / "checkpoints" / "best.pt", image],
    ]
    for argv in commands:
        code, _, err = cli(capsys, *argv)
        assert not marker.exists(), f"mnistlab {' '.join(map(str, argv))} imported the run's model file"
        if argv[0] != "compare":
            assert code != 0 and ("--model-code" in err or "--model" in err), (argv, err)
    from mnistlab.serve import build_app

    with pytest.raises(MnistlabError, match="--model-code"):
        build_app(run)
    assert not marker.exists()
    # Passed explicitly, the same file is imported (and its hash checked): in a process of its own, as a
    # command would (this one imported the file once already, while training the fixture's run).
    res = subprocess.run([sys.executable, "-m", "mnistlab", "evaluate", str(run), "--data-dir", str(fake_mnist_root),
                          "--model-code", str(code_file), "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert marker.exists() and json.loads(res.stdout)["accuracy"] > 0.5


def test_a_changed_model_file_is_refused_naming_both_hashes(marked_run, fake_mnist_root, tmp_path, capsys):
    run, code_file, _ = marked_run
    changed = tmp_path / "changed.py"
    changed.write_text(code_file.read_text() + "\n# an edit\n")
    code, _, err = cli(capsys, "evaluate", run, "--data-dir", fake_mnist_root, "--model-code", changed)
    line = one_line(err)
    recorded = mnistlab.load_run(run).config["model_code"]["sha256"]
    now = __import__("hashlib").sha256(changed.read_bytes()).hexdigest()
    assert code == 1 and recorded in line and now in line and "--allow-changed-code" in line
    code, _, err = cli(capsys, "evaluate", run, "--data-dir", fake_mnist_root, "--model-code", changed,
                       "--allow-changed-code", "--no-plots")
    assert code == 0, err


def test_the_export_of_a_file_model_runs_without_its_code(marked_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    run, code_file, _ = marked_run
    out = tmp_path / "net.onnx"
    code, _, err = cli(capsys, "export", run, "--format", "onnx", "--out", out, "--model-code", code_file)
    assert code == 0, err
    code_file.unlink()  # the code is gone: the export must not need it
    probe = ("import numpy as np, onnxruntime as ort, sys\n"
             "s = ort.InferenceSession(sys.argv[1])\n"
             "print(s.run(None, {'image': np.zeros((3, 1, 28, 28), np.float32)})[0].shape)\n")
    res = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and "(3, 10)" in res.stdout, res.stderr


def test_a_file_model_run_resumes_exactly_with_its_code(models, fake_mnist_root, tmp_path, capsys):
    common = ["--model", f"{models}:DNN", "--epochs", "3", "--seed", "4", "--batch-size", "32"]
    code, _, err = cli(capsys, *train_args(fake_mnist_root, tmp_path, *common, "--name", "straight"))
    assert code == 0, err

    class StopAt2(mnistlab.Callback):
        def on_epoch_start(self, trainer, state):
            if state.epoch == 2:
                raise KeyboardInterrupt()

    cfg = mnistlab.TrainConfig(model=f"{models}:DNN", epochs=3, seed=4, batch_size=32, data_dir=str(fake_mnist_root),
                               out=str(tmp_path), name="cut", progress="quiet", plots=False)
    with pytest.raises(KeyboardInterrupt, match="mnistlab train --resume"):
        mnistlab.train(cfg, callbacks=[StopAt2()])
    code, _, err = cli(capsys, "train", "--resume", tmp_path / "cut", "-q")
    assert code == 1 and "--model-code" in one_line(err)
    code, _, err = cli(capsys, "train", "--resume", tmp_path / "cut", "-q", "--model-code", models)
    assert code == 0, err
    a = mnistlab.load_run(tmp_path / "straight")
    b = mnistlab.load_run(tmp_path / "cut")
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert a.summary["accuracy"] == b.summary["accuracy"]


# ----------------------------------------------------------------------------- mnistlab.fit

class Net(nn.Module):
    """A notebook-style model: defined here, passed as an object."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def arrays():
    return make_fake_mnist(600, 0)


def test_fit_a_module_object_on_arrays(arrays, tmp_path):
    images, labels = arrays
    torch.manual_seed(0)
    run = mnistlab.fit(Net(), (images, labels), epochs=2, out=str(tmp_path), progress="quiet")
    s = run.summary
    assert run.path.name == "net-tensors" and s["status"] == "completed" and s["accuracy"] > 0.8
    assert s["model"] == "object:test_own_model.Net" and s["model_object"] == "test_own_model.Net"
    assert run.config["dataset"] == "tensors" and len(run.config["data_sha256"]) == 64
    assert (run.path / "plots" / "misclassified.png").is_file() and (run.path / "plots" / "samples.png").is_file()
    # 20% of the 600 images held out as test, the rest split 80/20 as train/valid
    assert s["samples"] == 120 and sum(1 for _ in run.history) == 2
    model = mnistlab.load_model(run, model=Net())
    x = torch.randn(4, 1, 28, 28)
    assert model(x).shape == (4, 10)
    with pytest.raises(MnistlabError, match="does not match model Net"):
        mnistlab.load_model(run, model=Net(hidden=8))
    with pytest.raises(MnistlabError, match="mnistlab.load_model"):
        mnistlab.load_model(run)


def test_fit_takes_floats_and_an_explicit_test_split(arrays, tmp_path):
    images, labels = arrays
    floats = torch.from_numpy(images).float() / 255  # [N, H, W] in [0, 1], as ToTensor gives
    test = make_fake_mnist(100, 9)
    run = mnistlab.fit(Net(), (floats, torch.from_numpy(labels)), test=test, epochs=1, out=str(tmp_path),
                       progress="quiet", plots=False)
    assert run.summary["samples"] == 100 and run.summary["accuracy"] > 0.5


class Items(torch.utils.data.Dataset):
    """A Dataset of (float [1, 28, 28] in [0, 1], label) items, like torchvision's MNIST with ToTensor."""

    def __init__(self, images, labels) -> None:
        self.images, self.labels = images, labels
        self.reads = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        self.reads += 1
        return torch.from_numpy(self.images[i]).float().div(255).unsqueeze(0), int(self.labels[i])


def test_fit_reads_a_dataset_into_memory_or_streams_it(arrays, tmp_path, capsys):
    images, labels = arrays
    kept = Items(images, labels)
    a = mnistlab.fit(Net(), kept, epochs=2, out=str(tmp_path), name="kept", seed=3, plots=False)
    assert kept.reads == len(images)  # read once
    assert "in memory" in capsys.readouterr().out
    streamed = Items(images, labels)
    torch.manual_seed(0)
    b = mnistlab.fit(Net(), streamed, epochs=2, out=str(tmp_path), name="streamed", seed=3, memory_budget=10_000,
                     plots=False)
    assert "streamed from the Dataset each epoch" in capsys.readouterr().out
    assert streamed.reads > 2 * len(images)  # every epoch reads the images again
    assert b.config["dataset"] == "dataset:Items" and b.summary["accuracy"] > 0.8
    # The same images and order either way: the same numbers (both models start from the same weights).
    torch.manual_seed(0)
    again = mnistlab.fit(Net(), Items(images, labels), epochs=2, out=str(tmp_path), name="again", seed=3,
                         progress="quiet", plots=False)
    assert again.summary["accuracy"] == b.summary["accuracy"]
    assert [r["train_loss"] for r in again.history] == pytest.approx([r["train_loss"] for r in b.history], rel=1e-5)
    assert a.summary["status"] == "completed"


def test_fit_augments_a_streamed_dataset_as_one_in_memory(arrays, tmp_path):
    images, labels = arrays
    runs = []
    for name, budget in (("kept", None), ("streamed", 10_000)):
        torch.manual_seed(0)
        runs.append(mnistlab.fit(Net(), Items(images, labels), epochs=1, out=str(tmp_path), name=name, seed=3,
                                 memory_budget=budget, augment=True, rotate=10, zoom=0.1, progress="quiet",
                                 plots=False))
    torch.manual_seed(0)
    plain = mnistlab.fit(Net(), Items(images, labels), epochs=1, out=str(tmp_path), name="plain", seed=3,
                         memory_budget=10_000, progress="quiet", plots=False)
    kept, streamed = (r.history[0]["train_loss"] for r in runs)
    assert streamed == pytest.approx(kept, rel=1e-5) and streamed != pytest.approx(plain.history[0]["train_loss"])


def test_fit_a_zoo_model_and_a_file_model(arrays, models, fake_mnist_root, tmp_path):
    images, labels = arrays
    run = mnistlab.fit("dnn", (images, labels), epochs=1, out=str(tmp_path), progress="quiet", plots=False,
                       set={"hidden_dims": [784, 16]})
    assert run.config["model_options"]["hidden_dims"] == [784, 16]
    run = mnistlab.fit(f"{models}:small_cnn", "mnist", data_dir=str(fake_mnist_root), epochs=1, out=str(tmp_path),
                       progress="quiet", plots=False)
    assert run.summary["model_code"]["name"] == "small_cnn"


def test_fit_resumes_a_module_objects_run_exactly(arrays, tmp_path):
    images, labels = arrays
    torch.manual_seed(1)
    first = Net()
    state = {k: v.clone() for k, v in first.state_dict().items()}
    straight = mnistlab.fit(first, (images, labels), epochs=3, out=str(tmp_path), name="straight", progress="quiet",
                            plots=False)

    class Cut(mnistlab.Callback):
        def on_epoch_start(self, trainer, s):
            if s.epoch == 3:
                raise KeyboardInterrupt()

    again = Net()
    again.load_state_dict(state)
    with pytest.raises(KeyboardInterrupt):
        mnistlab.fit(again, (images, labels), epochs=3, out=str(tmp_path), name="cut", progress="quiet", plots=False,
                     callbacks=[Cut()])
    resumed = mnistlab.fit(Net(), (images, labels), out=str(tmp_path), progress="quiet",
                           resume=str(tmp_path / "cut"))
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    assert resumed.summary["accuracy"] == straight.summary["accuracy"]
    with pytest.raises(UsageError, match="other data"):
        mnistlab.fit(Net(), (images[::-1].copy(), labels[::-1].copy()), out=str(tmp_path), progress="quiet",
                     resume=str(tmp_path / "cut"), epochs=4)


def test_commands_on_a_module_objects_run_say_the_code_is_needed(arrays, tmp_path, capsys):
    images, labels = arrays
    run = mnistlab.fit(Net(), (images, labels), epochs=1, out=str(tmp_path), progress="quiet", plots=False)
    code, _, err = cli(capsys, "export", run.path, "--format", "onnx")
    assert code == 1 and "mnistlab.load_model(run, model=YourNet(...))" in one_line(err)
    code, _, err = cli(capsys, "train", "--resume", run.path)
    assert code == 2 and "resume it from Python" in one_line(err)
    code, _, err = cli(capsys, "evaluate", run.path)
    assert code == 1 and "mnistlab.fit" in one_line(err)


@pytest.mark.parametrize("data, expected", [
    ((np.full((10, 28, 28), 2.0, np.float32), np.zeros(10, np.int64)), "float images must be in [0, 1]"),
    ((np.zeros((10, 28, 20), np.uint8), np.zeros(10, np.int64)), "must be square"),
    ((np.zeros((10, 28, 28), np.uint8), np.zeros(9, np.int64)), "expected 10 labels"),
    ((np.zeros((10, 28, 28), np.uint8), np.full(10, 0.5)), "whole class numbers"),
    ((np.zeros((10, 2, 2, 28, 28), np.uint8), np.zeros(10, np.int64)), "must be [N, H, W] or [N, C, H, W]"),
    ([1, 2, 3], "(images, labels), got 3 items"),
    (3.5, "not a float"),
])
def test_bad_data_given_to_fit_is_one_clear_error(data, expected, tmp_path):
    with pytest.raises(UsageError) as err:
        mnistlab.fit(Net(), data, out=str(tmp_path), progress="quiet")
    assert expected in str(err.value)
    assert not (tmp_path / "net-tensors").exists()


def test_fit_validates_its_settings_like_the_flags(arrays, tmp_path):
    with pytest.raises(UsageError, match="unknown setting 'learning_rate'"):
        mnistlab.fit(Net(), arrays, learning_rate=0.1, out=str(tmp_path))
    with pytest.raises(UsageError, match="bad lr"):
        mnistlab.fit(Net(), arrays, lr=-1, out=str(tmp_path))
    with pytest.raises(UsageError, match="model options"):
        mnistlab.fit(Net(), arrays, set={"hidden": 3}, out=str(tmp_path))


# ----------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_your_own_model_on_the_real_mnist(real_data_root, models, tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--model", f"{models}:DNN", "--set", "hidden=128", "--epochs", "2",
                       "--data-dir", real_data_root, "--out", tmp_path, "-q")
    assert code == 0, err
    run = mnistlab.load_run(tmp_path / "dnn")
    assert run.summary["accuracy"] > 0.95
    code, out, err = cli(capsys, "evaluate", run.path, "--json", "--no-plots", "--model-code", models,
                         "--data-dir", real_data_root)
    assert code == 0 and json.loads(out)["accuracy"] == run.summary["accuracy"]


@pytest.mark.slow
def test_a_file_model_under_torchrun(models, fake_mnist_root, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "-m", "mnistlab", "train", "--model", f"{models}:DNN", "--data-dir",
           str(fake_mnist_root), "--out", str(tmp_path / "runs"), "--batch-size", "64", "--epochs", "1",
           "--device", "cpu", "-q", "--no-plots"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "MNISTLAB_DIST_TIMEOUT": "60"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["dnn"]
    assert mnistlab.load_run(tmp_path / "runs" / "dnn").summary["status"] == "completed"


@pytest.mark.slow
def test_the_readme_example_runs_as_written(fake_mnist_root, tmp_path, monkeypatch, capsys):
    """README's "Your own model": the file, every command of its shell block, then its Python block."""
    import re
    import shlex

    from PIL import Image

    section = (Path(__file__).parents[1] / "README.md").read_text().split("### Your own model", 1)[1]
    section = section.split("\n### ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    code_file, shell, python = blocks[0][1], blocks[1][1], blocks[2][1]
    monkeypatch.setenv("MNISTLAB_DATA", str(fake_mnist_root))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_dnn.py").write_text(code_file)
    Image.fromarray(make_fake_mnist(1, 5)[0][0]).save(tmp_path / "my_digit.png")
    for line in shell.splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[0] == "mnistlab"
        code, out, err = cli(capsys, *argv[1:])
        assert code == 0, (line, err)
    assert (tmp_path / "runs" / "dnn" / "export" / "model.onnx").is_file()
    exec(compile(python, "README.md", "exec"), {})
    assert mnistlab.load_run(tmp_path / "runs" / "dnn-2").summary["status"] == "completed"


# ----------------------------------------------------------------------------- found by trying to break it

def test_a_sweep_notices_an_edited_model_file(models, fake_mnist_root, tmp_path, capsys):
    args = ["sweep", "--model", f"{models}:DNN", "--grid", "hidden=8", "--epochs", "1", "--data-dir",
            str(fake_mnist_root), "--out", str(tmp_path), "--workers", "1"]
    assert cli(capsys, *args)[0] == 0
    models.write_text(MODELS.replace("nn.ReLU()", "nn.Tanh()"))  # same options, other code
    code, _, err = cli(capsys, *args)
    assert code == 1 and "model code sha256" in one_line(err) and "nothing was started" in err


KWARGS = textwrap.dedent('''
    from torch import nn


    class Passes(nn.Module):
        """Takes **kwargs and hands them to nn.Module, which takes none: no data argument may go in."""

        def __init__(self, hidden=16, **kwargs):
            super().__init__(**kwargs)
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))

        def forward(self, x):
            return self.net(x)


    def options(**kwargs):
        width = kwargs.get("width", 8)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))


    class TupleWhenTraining(nn.Module):
        """Like GoogLeNet's aux heads: a tuple in training mode, logits in eval mode."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            y = self.fc(x.flatten(1))
            return (y, y) if self.training else y


    class IntLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)).argsort(1)


    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)).detach()
''')


def test_kwargs_builders_get_no_data_arguments_but_take_options(fake_mnist_root, tmp_path, capsys):
    path = tmp_path / "kw.py"
    path.write_text(KWARGS)
    code, _, err = cli(capsys, *train_args(fake_mnist_root, tmp_path, "--model", f"{path}:Passes", "--epochs", "1"))
    assert code == 0, err
    code, _, err = cli(capsys, *train_args(fake_mnist_root, tmp_path, "--model", f"{path}:options", "--set",
                                           "width=12", "--epochs", "1", "--name", "opts"))
    assert code == 0, err
    run = mnistlab.load_run(tmp_path / "opts")
    assert run.config["model_options"] == {"width": 12}
    assert run.summary["parameters"] == 784 * 12 + 12 + 12 * 10 + 10


@pytest.mark.parametrize("name, expected", [
    ("TupleWhenTraining", "in training mode to tuple"),
    ("IntLogits", "gives torch.int64 logits"),
    ("Detached", "logits without a gradient"),
])
def test_a_model_that_only_fails_in_training_is_caught_before_the_run(name, expected, fake_mnist_root, tmp_path,
                                                                       capsys):
    path = tmp_path / "kw.py"
    path.write_text(KWARGS)
    code, _, err = cli(capsys, *train_args(fake_mnist_root, tmp_path, "--model", f"{path}:{name}"))
    assert code == 2 and expected in one_line(err)
    assert not list(tmp_path.glob("*/config.yaml"))


def test_the_forward_check_leaves_the_model_and_the_random_streams_as_they_were(tmp_path):
    from mnistlab.models.usercode import check_output

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 10))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_output(model, "x", 1, 28, 10)
    assert torch.equal(torch.rand(3), expected) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm stats untouched


class Labelled(torch.utils.data.Dataset):
    def __init__(self, items) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _pil(mode: str, value: int):
    from PIL import Image

    return Image.fromarray(np.full((28, 28), value, "<u2")) if mode == "I;16" else Image.new(mode, (28, 28), value)


@pytest.mark.parametrize("data, expected", [
    ((np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)), "no images"),
    ((np.full((10, 28, 28), np.nan, np.float32), np.zeros(10, np.int64)), "NaN"),
    ((np.zeros((10, 28, 28), np.uint8), np.full(10, 3.7)), "whole class numbers"),
    ((np.zeros((10, 28, 28), np.uint8), np.ones(10, bool)), "whole class numbers"),
    (Labelled([(np.zeros((28, 28), np.uint8), 0), (np.zeros((20, 20), np.uint8), 1)]), "same shape"),
    (Labelled([(np.zeros((28, 28), np.uint8), "seven")]), "label 'seven'"),
    (Labelled([(np.zeros((28, 28), np.uint8), True)]), "label True"),
])
def test_more_bad_data_given_to_fit(data, expected, tmp_path):
    with pytest.raises(UsageError) as err:
        mnistlab.fit(Net(), data, out=str(tmp_path), progress="quiet")
    assert expected in str(err.value)
    assert not list(tmp_path.glob("*/config.yaml"))
    with pytest.raises(UsageError, match="memory_budget"):
        mnistlab.fit(Net(), make_fake_mnist(50, 0), memory_budget=-1, out=str(tmp_path), progress="quiet")


def test_data_fit_accepts_as_its_plain_meaning(tmp_path):
    from mnistlab.data.given import as_images, as_labels, _item

    assert as_images(torch.ones(2, 28, 28, dtype=torch.bool), "x").max() == 255  # True is white
    assert as_labels(np.array([3.0, 0.0]), 2, "y").tolist() == [3, 0]  # whole floats are classes
    # 16-bit and palette PIL images through the shared converters: scaled to 0..255, not clipped
    item = _item(Labelled([(_pil("I;16", 65535), torch.tensor(4))]), 0)
    assert item[1] == 4 and int(item[0].max()) == 255 and item[0].dtype == torch.uint8
    assert int(_item(Labelled([(_pil("I;16", 256), 1)]), 0)[0].max()) == 1
