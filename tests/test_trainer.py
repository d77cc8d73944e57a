"""The one training engine: callbacks, fractional epochs, exact resume, true run statuses, old run folders.

Each test of a defect names it as the engine issue lists it; all run on made data in seconds.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mnistlab
from mnistlab.cli import main
from mnistlab.config import TrainConfig
from mnistlab.errors import MnistlabError, UsageError
from mnistlab.runs import read_metrics_csv
from mnistlab.text.engine import train_text

FIXTURES = Path(__file__).parent / "fixtures" / "v1-runs"


def cfg(root: Path, tmp_path: Path, **kw) -> TrainConfig:
    base = dict(dataset="mnist", data_dir=str(root), out=str(tmp_path / "runs"), progress="quiet", plots=False)
    return TrainConfig(**{**base, **kw})


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


class Recorder(mnistlab.Callback):
    """Records every hook call with the epoch and what the state holds at that moment."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_fit_start(self, trainer, state):
        self.calls.append(("fit_start", state.epoch, (trainer.path / "config.yaml").is_file()))

    def on_epoch_start(self, trainer, state):
        self.calls.append(("epoch_start", state.epoch, state.row))

    def on_validation_end(self, trainer, state):
        self.calls.append(("validation_end", state.epoch, state.row["valid_loss"] is not None))

    def on_epoch_end(self, trainer, state):
        rows = read_metrics_csv(trainer.path / "metrics.csv")
        self.calls.append(("epoch_end", state.epoch, len(rows)))

    def on_fit_end(self, trainer, state):
        self.calls.append(("fit_end", state.epoch, state.summary["status"]))

    def on_exception(self, trainer, state):
        self.calls.append(("exception", state.epoch, state.status))


# ----------------------------------------------------------------------------- callbacks

def test_hooks_run_in_order_with_the_state_they_promise(fake_mnist_root, tmp_path):
    rec = Recorder()
    mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=2), callbacks=[rec])
    assert rec.calls == [
        ("fit_start", 0, True),
        ("epoch_start", 1, None), ("validation_end", 1, True), ("epoch_end", 1, 1),
        ("epoch_start", 2, None), ("validation_end", 2, True), ("epoch_end", 2, 2),
        ("fit_end", 2, "completed"),
    ]


def test_text_runs_take_callbacks_too(tmp_path):
    rec = Recorder()
    train_text("builtin:sentiment", epochs=2, embed_dim=8, hidden=8, out=str(tmp_path), progress="quiet",
               plots=False, callbacks=[rec])
    assert [c[0] for c in rec.calls].count("epoch_end") == 2 and rec.calls[-1] == ("fit_end", 2, "completed")


class StopAt(mnistlab.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_end(self, trainer, state):
        if state.epoch == self.epoch:
            state.stop(f"pruned at epoch {state.epoch}")


def test_a_callback_stops_the_run_with_its_reason(fake_mnist_root, tmp_path):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=5), callbacks=[StopAt(2)])
    s = run.summary
    assert s["status"] == "completed" and s["stop_reason"] == "pruned at epoch 2" and s["epochs_run"] == 2
    assert "accuracy" in s  # the run is still tested
    assert (run.path / "checkpoints" / "last.pt").is_file()
    with pytest.raises(MnistlabError, match="was stopped \\(pruned at epoch 2\\)"):
        mnistlab.train(TrainConfig(resume=str(run.path), epochs=8, progress="quiet"))


class Counter(mnistlab.Callback):
    """Counts epochs; its count must survive a resume through the checkpoint."""

    def __init__(self) -> None:
        self.count = 0
        self.seen_at_start: list[int] = []

    def on_fit_start(self, trainer, state):
        self.seen_at_start.append(self.count)

    def on_validation_end(self, trainer, state):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class InterruptAt(mnistlab.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_start(self, trainer, state):
        if state.epoch == self.at:
            raise KeyboardInterrupt()


def test_callback_state_goes_into_checkpoints_and_comes_back_on_resume(fake_mnist_root, tmp_path):
    c = cfg(fake_mnist_root, tmp_path, model="logistic", epochs=4, name="counted")
    first = Counter()
    with pytest.raises(KeyboardInterrupt):
        mnistlab.train(c, callbacks=[first, InterruptAt(3)])
    assert first.count == 2
    ckpt = torch.load(tmp_path / "runs" / "counted" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["callback:Counter"] == {"count": 2}
    again = Counter()
    mnistlab.train(TrainConfig(resume=str(tmp_path / "runs" / "counted"), progress="quiet"), callbacks=[again])
    assert again.seen_at_start == [2] and again.count == 4


def test_bad_callbacks_are_usage_errors(fake_mnist_root, tmp_path):
    with pytest.raises(UsageError, match="mnistlab.Callback instances"):
        mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1), callbacks=[object()])
    with pytest.raises(UsageError, match="give each its own state_key"):
        mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1), callbacks=[Counter(), Counter()])
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- fractional epochs

def test_a_hair_over_one_epoch_runs_one_epoch_not_a_fake_second(fake_mnist_root, tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--model", "logistic", "--epochs", "1.001", "--patience", "1",
                         "--data-dir", str(fake_mnist_root), "--out", str(tmp_path), "--jsonl", "--no-plots")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]  # every line is valid JSON (no NaN)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 1 and math.isfinite(epochs[0]["train_loss"])
    summary = json.loads((tmp_path / "logistic" / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["stop_reason"] == "completed 1.001 epochs"


def test_text_run_a_hair_over_one_epoch(tmp_path):
    run = train_text("builtin:sentiment", epochs=1.05, patience=1, embed_dim=8, hidden=8, out=str(tmp_path),
                     progress="quiet", plots=False)
    assert run.summary["epochs_run"] == 1 and run.summary["stop_reason"].startswith("completed")


@pytest.mark.parametrize("first, then", [(0.5, 1), (1.5, 2)])
def test_a_fractional_run_trained_longer_continues_from_its_exact_step(fake_mnist_root, tmp_path, first, then):
    # dropout and batchnorm (the dnn) and a shuffled order: the continued epoch must see the rest of
    # the same batches, in the same random state, as an uninterrupted run.
    c = cfg(fake_mnist_root, tmp_path, model="dnn", batch_size=32, seed=5)
    straight = mnistlab.train(c, epochs=then, name="straight")
    short = mnistlab.train(c, epochs=first, name="short")
    longer = mnistlab.train(TrainConfig(resume=str(short.path), epochs=then, progress="quiet"))
    a, b = straight.summary, longer.summary
    assert b["stop_reason"] == f"completed {then:g} epochs" and b["epochs_run"] == a["epochs_run"] == then
    for key in ("accuracy", "f1_macro", "best_epoch", "confusion_matrix", "loss"):
        assert a[key] == b[key], key
    for ra, rb in zip(straight.history, longer.history, strict=True):
        assert rb["valid_loss"] == ra["valid_loss"]
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-6)  # a weighted mean of two parts
        assert rb["lr"] == ra["lr"]
    assert not (longer.path / "checkpoints" / "best-before-partial.pt").exists()


def test_an_interrupted_run_resumed_with_fewer_epochs_than_it_trained_is_refused(fake_mnist_root, tmp_path):
    c = cfg(fake_mnist_root, tmp_path, model="logistic", epochs=3, name="three")
    with pytest.raises(KeyboardInterrupt):
        mnistlab.train(c, callbacks=[InterruptAt(3)])
    run = tmp_path / "runs" / "three"
    with pytest.raises(MnistlabError, match="already trained 2 epochs, more than --epochs 1"):
        mnistlab.train(TrainConfig(resume=str(run), epochs=1, progress="quiet"))
    assert mnistlab.load_run(run).config["epochs"] == 3  # config.yaml untouched by the refused resume


# ----------------------------------------------------------------------------- metrics.csv

def test_the_lr_column_is_the_rate_each_epoch_trained_at(fake_mnist_root, tmp_path):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=3, lr=0.1, optimizer="sgd",
                             scheduler="step", step_size=1, gamma=0.5))
    assert [r["lr"] for r in run.history] == pytest.approx([0.1, 0.05, 0.025])


# ----------------------------------------------------------------------------- clip-grad

def _losses(root, tmp_path, name, **kw):
    run = mnistlab.train(cfg(root, tmp_path, model="rnn", epochs=0.5, batch_size=64, name=name, **kw))
    return [r["train_loss"] for r in run.history], run


def test_clip_grad_zero_switches_off_a_recipes_clipping(fake_mnist_root, tmp_path, capsys):
    _, run = _losses(fake_mnist_root, tmp_path, "recipe")
    assert run.config["clip_grad"] == 1.0  # rnn's recipe clips at 1
    off, run = _losses(fake_mnist_root, tmp_path, "off", clip_grad=0)
    assert run.config["clip_grad"] == 0
    huge, _ = _losses(fake_mnist_root, tmp_path, "huge", clip_grad=1e9)  # a bound never reached: no clipping
    tight, _ = _losses(fake_mnist_root, tmp_path, "tight", clip_grad=1e-3)  # clipping at work changes the losses
    assert off == huge and off != tight
    args = mnistlab.cli.build_parser().parse_args(["train", "--clip-grad", "none"])
    assert args.clip_grad == 0.0
    code, _, err = cli(capsys, "train", "--clip-grad", "sometimes")
    assert code == 2 and "none/off" in err


# ----------------------------------------------------------------------------- true statuses

def test_a_last_batch_of_one_sample_with_batchnorm_is_left_out(fake_mnist_root, tmp_path, capsys):
    # 480 training images, batch 479: the second batch would hold 1 image, which BatchNorm1d rejects.
    code, out, err = cli(capsys, "train", "--model", "dnn", "--batch-size", "479", "--epochs", "1",
                         "--data-dir", str(fake_mnist_root), "--out", str(tmp_path), "--no-plots")
    assert code == 0, err
    assert "batch of 1 image" in err and "left out" in err
    assert json.loads((tmp_path / "dnn" / "summary.json").read_text())["status"] == "completed"


class Boom(mnistlab.Callback):
    def __init__(self, exc: BaseException, at: int = 2) -> None:
        self.exc, self.at = exc, at

    def on_epoch_end(self, trainer, state):
        if state.epoch == self.at:
            raise self.exc


def test_an_unexpected_error_leaves_the_run_failed_not_running(fake_mnist_root, tmp_path):
    rec = Recorder()
    with pytest.raises(RuntimeError, match="something broke"):
        mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=3, name="broken"),
                       callbacks=[Boom(RuntimeError("something broke")), rec])
    s = json.loads((tmp_path / "runs" / "broken" / "summary.json").read_text())
    assert s["status"] == "failed" and s["stop_reason"] == "error: RuntimeError: something broke"
    assert rec.calls[-1] == ("exception", 2, "failed")


def test_a_write_error_in_a_text_run_leaves_it_failed(tmp_path):
    from mnistlab.training.checkpoint import WriteError

    full = WriteError(tmp_path / "x" / "metrics.csv", OSError(28, "No space left on device"))
    with pytest.raises(WriteError):
        train_text("builtin:sentiment", epochs=3, embed_dim=8, hidden=8, out=str(tmp_path), name="full",
                   progress="quiet", plots=False, callbacks=[Boom(full)])
    s = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert s["status"] == "failed" and "No space left on device" in s["stop_reason"]


class _InterruptTestPass:
    """A task whose test-split prediction is interrupted (Ctrl-C after training)."""

    def __init__(self, task):
        self.task = task

    def __getattr__(self, name):
        return getattr(self.task, name)

    def prepare(self, *args):
        prep = self.task.prepare(*args)
        predict, test = prep.predict, prep.test

        def interrupted(model, items):
            if items is test:
                raise KeyboardInterrupt()
            return predict(model, items)

        prep.predict = interrupted
        return prep


def test_ctrl_c_in_a_text_runs_test_pass_is_handled_and_resumable(tmp_path):
    from mnistlab.tasks.text import TextTask
    from mnistlab.text.settings import TextSettings, resolve_text
    from mnistlab.training.strategy import SingleProcess
    from mnistlab.training.trainer import Trainer

    text = TextSettings(embed_dim=8, hidden=8)
    c = resolve_text(text, TrainConfig(epochs=2, out=str(tmp_path), name="t", progress="quiet", plots=False))
    with pytest.raises(KeyboardInterrupt, match="Finish with: mnistlab text train --resume"):
        Trainer(_InterruptTestPass(TextTask(text)), c, strategy=SingleProcess(torch.device("cpu"))).fit()
    s = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["stop_reason"] == "interrupted while computing the test metrics"
    run = train_text(resume=str(tmp_path / "t"), progress="quiet")
    assert run.summary["status"] == "completed" and run.summary["epochs_run"] == 2 and "accuracy" in run.summary


def _start(root: Path, out: Path, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mnistlab", "train", "--model", "mlp", "--epochs", "60", "--batch-size", "5",
           "--threads", "1", "--data-dir", str(root), "--out", str(out), "--name", "term", "--jsonl", "--no-plots",
           *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_is_handled_like_ctrl_c(fake_mnist_root, tmp_path, capsys):
    proc = _start(fake_mnist_root, tmp_path)
    for line in proc.stdout:  # wait for the first epoch
        if json.loads(line).get("event") == "epoch":
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and f"Resume with: mnistlab train --resume {tmp_path / 'term'}" in err
    s = json.loads((tmp_path / "term" / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["stop_reason"].startswith("terminated (SIGTERM) during epoch")
    code, _, err = cli(capsys, "train", "--resume", str(tmp_path / "term"), "--epochs", "2", "-q")
    assert code == 0, err


# ----------------------------------------------------------------------------- resume quirks

def test_resume_refuses_the_flags_it_would_ignore(fake_mnist_root, tmp_path, capsys):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1))
    code, _, err = cli(capsys, "train", "--resume", str(run.path), "--epochs", "2", "--lr", "0.5",
                       "--batch-size", "7", "--name", "other")
    assert code == 2
    assert "--lr, --batch-size, --name cannot change" in err and "--epochs" in err
    text = train_text("builtin:sentiment", epochs=1, embed_dim=8, hidden=8, out=str(tmp_path), progress="quiet",
                      plots=False)
    code, _, err = cli(capsys, "text", "train", "--resume", str(text.path), "--hidden", "32", "--lr", "0.1")
    assert code == 2 and "--lr, --hidden cannot change" in err


def test_total_seconds_stay_cumulative_over_a_resume(fake_mnist_root, tmp_path):
    c = cfg(fake_mnist_root, tmp_path, model="logistic", epochs=3, name="timed")
    with pytest.raises(KeyboardInterrupt):
        mnistlab.train(c, callbacks=[InterruptAt(3)])
    before = json.loads((tmp_path / "runs" / "timed" / "summary.json").read_text())["total_seconds"]
    time.sleep(0.05)
    run = mnistlab.train(TrainConfig(resume=str(tmp_path / "runs" / "timed"), progress="quiet"))
    s = run.summary
    assert s["total_seconds"] >= s["train_seconds"] and s["total_seconds"] > before
    assert s["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in run.history))


# ----------------------------------------------------------------------------- text run options

def test_text_train_no_plots_and_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    code, _, err = cli(capsys, "text", "train", "--data", "builtin:sentiment", "--epochs", "1", "--embed-dim", "8",
                       "--hidden", "8", "--out", str(tmp_path), "--no-plots", "--tensorboard", "-q")
    assert code == 0, err
    run = tmp_path / "text-lstm"
    assert not (run / "plots").exists() and not (run / "report.md").exists()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


# ----------------------------------------------------------------------------- run folders of the old engine

def _copy_fixture(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


@pytest.mark.parametrize("kind", ["image", "text"])
def test_a_run_interrupted_by_the_old_engine_resumes_to_the_old_engines_result(kind, fake_mnist_root, tmp_path):
    """tests/fixtures/v1-runs holds run folders the engine of 2d9f186 wrote (tests/fixtures/make_v1_runs.py)."""
    expected = json.loads((FIXTURES / "expected.json").read_text())[kind]
    path = _copy_fixture(kind, tmp_path)
    if kind == "image":
        run = mnistlab.train(TrainConfig(resume=str(path), data_dir=str(fake_mnist_root), progress="quiet"))
    else:
        run = train_text(resume=str(path), progress="quiet")
    s, e = run.summary, expected["summary"]
    assert s["status"] == "completed" and s["epochs_run"] == e["epochs_run"]
    for key in ("accuracy", "f1_macro", "best_epoch", "confusion_matrix"):
        assert s[key] == e[key], key
    assert s["loss"] == pytest.approx(e["loss"], rel=1e-4)
    for got, want in zip(run.history, expected["history"], strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
        assert got["valid_loss"] == pytest.approx(want["valid_loss"], rel=1e-4)


def test_old_checkpoints_still_evaluate_and_predict(fake_mnist_root, tmp_path):
    image = _copy_fixture("image", tmp_path)
    metrics = mnistlab.evaluate(image, data_dir=str(fake_mnist_root))
    assert metrics["checkpoint"] == "best" and metrics["samples"] == 200
    text = _copy_fixture("text", tmp_path)
    from mnistlab.text.engine import predict_text

    assert predict_text(text, ["a great film"])[0]["label"] in ("negative", "positive")


def test_readme_callback_example(fake_mnist_root, tmp_path, monkeypatch, capsys):
    """The Callbacks example in the README runs as written and its callback stops the run."""
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"### Callbacks.*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.setenv("MNISTLAB_DATA", str(fake_mnist_root))
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert "reached 0.9" in capsys.readouterr().out


# ----------------------------------------------------------------------------- found by trying to break it

def test_best_pt_is_right_after_a_fractional_run_is_resumed_twice(tmp_path):
    # Random labels: the valid loss is best early and worsens, so a half-done epoch can be "best" for a while.
    import numpy as np

    rng = np.random.default_rng(0)
    data = (rng.integers(0, 256, (500, 28, 28), dtype=np.uint8), rng.integers(0, 10, 500))
    common = dict(out=str(tmp_path), progress="quiet", plots=False, batch_size=20, lr=5e-2, seed=1)
    straight = mnistlab.fit("mlp", data, epochs=2, name="straight", **common)
    chain = mnistlab.fit("mlp", data, epochs=1.3, name="chain", **common)
    losses = [float(chain.history[-1]["valid_loss"])]
    for epochs in (1.6, 2):
        chain = mnistlab.fit("mlp", data, epochs=epochs, out=str(tmp_path), progress="quiet", resume=str(chain.path))
        losses.append(float(chain.history[-1]["valid_loss"]))
    a, b = straight.summary, chain.summary
    first = float(straight.history[0]["valid_loss"])
    # The set-up this test needs: both partial sessions of epoch 2 beat epoch 1, the whole epoch 2 does not.
    assert losses[0] < first and losses[1] < first and losses[2] > first and a["best_epoch"] == 1
    assert b["best_epoch"] == a["best_epoch"] and b["loss"] == a["loss"] and b["accuracy"] == a["accuracy"]
    best = torch.load(chain.path / "checkpoints" / "best.pt", weights_only=True)
    want = torch.load(straight.path / "checkpoints" / "best.pt", weights_only=True)
    assert (best["epoch"], best["global_step"]) == (want["epoch"], want["global_step"])
    assert all(torch.equal(best["state_dict"][k], want["state_dict"][k]) for k in want["state_dict"])


class NumpyState(mnistlab.Callback):
    def state_dict(self):
        return {"best": __import__("numpy").float64(1.5)}


def test_a_callback_state_checkpoints_cannot_hold_is_refused_before_any_run_folder(fake_mnist_root, tmp_path):
    with pytest.raises(UsageError, match="NumpyState's state_dict\\(\\)\\['best'\\] holds a numpy.float64"):
        mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1), callbacks=[NumpyState()])
    assert not (tmp_path / "runs").exists()


def test_resume_on_other_data_is_refused(fake_mnist_root, tmp_path, capsys):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1))
    from mnistlab.data.synthetic import write_fake_mnist

    other = write_fake_mnist(tmp_path / "other" / "mnist", seed=7).parent
    code, _, err = cli(capsys, "train", "--resume", str(run.path), "--epochs", "2", "--data-dir", str(other))
    assert code == 1 and "trained on other data" in err
    text = train_text("builtin:sentiment", epochs=1, embed_dim=8, hidden=8, out=str(tmp_path), progress="quiet",
                      plots=False)
    rows = (Path(mnistlab.text.csvdata.resolve_data_path("builtin:sentiment")).read_text(encoding="utf-8")
            .splitlines())
    edited = tmp_path / "edited.csv"
    edited.write_text("\n".join(rows[:1] + rows[1:][::-1]) + "\n", encoding="utf-8")  # same classes, rows reordered
    code, _, err = cli(capsys, "text", "train", "--resume", str(text.path), "--epochs", "2", "--data", str(edited))
    assert code == 1 and "other data" in err


class Exit(mnistlab.Callback):
    def on_epoch_end(self, trainer, state):
        raise SystemExit(3)


def test_sys_exit_in_a_callback_leaves_an_interrupted_resumable_run(fake_mnist_root, tmp_path):
    with pytest.raises(SystemExit):
        mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=2, name="exit"), callbacks=[Exit()])
    s = json.loads((tmp_path / "runs" / "exit" / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["stop_reason"].startswith("exited (sys.exit(3))")
    assert mnistlab.train(TrainConfig(resume=str(tmp_path / "runs" / "exit"), progress="quiet")).summary["status"] == "completed"


class DeleteFolder(mnistlab.Callback):
    def on_validation_end(self, trainer, state):
        shutil.rmtree(trainer.path)


def test_a_run_folder_deleted_while_training_stops_the_run_and_is_not_recreated(fake_mnist_root, tmp_path):
    with pytest.raises(MnistlabError, match="deleted or moved while training"):
        mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=3, name="gone"),
                       callbacks=[DeleteFolder()])
    assert not (tmp_path / "runs" / "gone").exists()


class InterruptReport(mnistlab.Callback):
    def on_fit_end(self, trainer, state):
        raise KeyboardInterrupt()


def test_ctrl_c_while_the_report_is_written_keeps_the_completed_run(fake_mnist_root, tmp_path):
    with pytest.raises(KeyboardInterrupt, match="the run is complete"):
        mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1, name="done"),
                       callbacks=[InterruptReport()])
    s = json.loads((tmp_path / "runs" / "done" / "summary.json").read_text())
    assert s["status"] == "completed" and s["accuracy"] is not None


def test_two_processes_cannot_train_one_run(fake_mnist_root, tmp_path):
    from mnistlab.locks import folder_lock

    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1))
    with folder_lock(run.path / ".lock", "busy"):  # as the process training it holds it
        with pytest.raises(MnistlabError, match="being trained by another process"):
            mnistlab.train(TrainConfig(resume=str(run.path), epochs=2, progress="quiet"))


def test_resume_refuses_a_flag_given_with_its_default_value(fake_mnist_root, tmp_path, capsys):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1, seed=5))
    code, _, err = cli(capsys, "train", "--resume", str(run.path), "--epochs", "2", "--seed", "0")
    assert code == 2 and "--seed cannot change" in err
    code, _, err = cli(capsys, "train", "--resume", str(run.path), "--epochs", "2", "--seed", "5", "-q")
    assert code == 0, err  # the run's own value changes nothing
    code, _, err = cli(capsys, "train", "--resume", str(run.path), "--config", "/dev/null")
    assert code == 2 and "--config cannot go with --resume" in err


def test_a_full_disk_on_the_first_checkpoint_leaves_the_epochs_it_saved(fake_mnist_root, tmp_path):
    from mnistlab.training import callbacks as cbs
    from mnistlab.training.checkpoint import WriteError
    from mnistlab.training.strategy import SingleProcess
    from mnistlab.training.trainer import Trainer

    class FullAt1(cbs.Checkpoint):
        def save(self, folder, payload, best):
            if payload["epoch"] == 1:
                raise WriteError(folder / "last.pt", OSError(28, "No space left on device"))
            super().save(folder, payload, best)

    from mnistlab.config import resolve_config
    from mnistlab.tasks.image import ImageTask

    c = resolve_config(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=2, name="full"))
    with pytest.raises(WriteError):
        Trainer(ImageTask(), c, strategy=SingleProcess(torch.device("cpu")),
                builtins=[cbs.EarlyStop(0), FullAt1(), cbs.MetricsCsv(), cbs.Summary()]).fit()
    s = json.loads((tmp_path / "runs" / "full" / "summary.json").read_text())
    assert s["status"] == "failed" and s["epochs_run"] == 0


def test_amp_auto_is_bf16_only_where_it_pays_and_a_resume_keeps_what_the_run_trained_in(fake_mnist_root, tmp_path):
    from mnistlab.tasks.image import auto_amp, recorded_amp

    # A CPU with AVX512_BF16 but no AMX: native bf16 that does not pay (fp32 trains faster there).
    assert auto_amp(pays=False, native=True, conv=True, cuda=False, recorded=None) is False
    assert auto_amp(pays=True, native=True, conv=True, cuda=False, recorded=None) is True
    assert auto_amp(pays=True, native=True, conv=False, cuda=False, recorded=None) is False  # a DNN: slower
    assert auto_amp(pays=True, native=True, conv=False, cuda=True, recorded=None) is True
    # Resumed: the precision the run trained in, whatever the rule says now (and never bf16 without it).
    assert auto_amp(pays=False, native=True, conv=True, cuda=False, recorded=True) is True
    assert auto_amp(pays=True, native=True, conv=True, cuda=False, recorded=False) is False
    assert auto_amp(pays=True, native=False, conv=True, cuda=False, recorded=True) is False
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1))
    assert recorded_amp(run) is False and recorded_amp(None) is None
    (run.path / "environment.json").write_text("{broken")
    assert recorded_amp(run) is None


# ----------------------------------------------------------------------------- found by trying to break it (2)

def test_resuming_a_run_in_a_read_only_folder_is_one_clear_error(fake_mnist_root, tmp_path, monkeypatch):
    import os

    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1))
    real_open = os.open

    def read_only(path, *args, **kwargs):  # as a read-only folder (chmod does not stop root)
        if Path(path).name == ".lock":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(MnistlabError, match=r"cannot lock .*\.lock: Permission denied \(the folder must be writable\)"):
        mnistlab.train(TrainConfig(resume=str(run.path), epochs=2, progress="quiet"))
