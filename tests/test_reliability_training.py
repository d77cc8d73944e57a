"""Reliability: training that is killed, interrupted or diverges.

- SIGKILL at a random moment leaves a loadable last.pt and a metrics.csv consistent with it,
  and `--resume` then ends with exactly the metrics of an uninterrupted run (CPU, same seed).
- Ctrl-C (SIGINT) saves, says how to resume and exits 130.
- A loss that becomes NaN/inf stops the run (exit 1, one line), keeps the best checkpoint and
  marks the run failed.
See docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mnistlab
from conftest import write_fake_mnist
from mnistlab.cli import main
from mnistlab.config import TrainConfig, resolve_config
from mnistlab.runs import read_metrics_csv
from mnistlab.tasks.image import ImageTask
from mnistlab.training import callbacks as cb
from mnistlab.training.checkpoint import save_checkpoint
from mnistlab.training.strategy import SingleProcess
from mnistlab.training.trainer import Trainer

# A small MLP run: 96 steps per epoch, long enough that a kill lands anywhere in it.
EPOCHS = 6
RUN_FLAGS = ["--model", "mlp", "--epochs", str(EPOCHS), "--batch-size", "5", "--seed", "3", "--no-plots",
             "--threads", "1"]  # one thread: the same float sums in the subprocess and in-process
COMPARE = ("accuracy", "f1_macro", "auc_macro", "best_epoch", "confusion_matrix", "epochs_run")


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("mnistlab: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_fake_mnist(root / "mnist")
    return root


def _reference_run(data_root: Path, out: Path, flags: list[str]) -> dict:
    assert main(["train", *flags, "--data-dir", str(data_root), "--out", str(out), "--name", "ref", "-q"]) == 0
    run = out / "ref"
    return {"summary": json.loads((run / "summary.json").read_text()), "history": read_metrics_csv(run / "metrics.csv")}


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory) -> dict:
    """The summary and history of the uninterrupted run every resumed run must reproduce."""
    return _reference_run(data_root, tmp_path_factory.mktemp("ref"), RUN_FLAGS)


# The Ctrl-C test signals after epoch 1 and needs the run still going when the signal lands:
# on a quiet machine the 6-epoch run can finish first, so that test runs 60 epochs.
LONG_EPOCHS = 60
LONG_FLAGS = [*RUN_FLAGS[:2], "--epochs", str(LONG_EPOCHS), *RUN_FLAGS[4:]]


@pytest.fixture(scope="module")
def long_reference(data_root, tmp_path_factory) -> dict:
    return _reference_run(data_root, tmp_path_factory.mktemp("ref-long"), LONG_FLAGS)


def check_consistent(run: Path) -> int:
    """last.pt loads with weights_only; metrics.csv rows are epochs 1..k with last.pt at epoch k or k+1."""
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    rows = read_metrics_csv(run / "metrics.csv")
    k = len(rows)
    assert [r["epoch"] for r in rows] == list(range(1, k + 1))
    assert ckpt["epoch"] in (k, k + 1), (ckpt["epoch"], k)
    assert len(ckpt["history"]) == ckpt["epoch"]
    best = run / "checkpoints" / "best.pt"
    if best.exists():
        torch.load(best, map_location="cpu", weights_only=True)
    # (a write cut by SIGKILL may leave a dot-named temp file beside its target; --resume removes them)
    return int(ckpt["epoch"])


def assert_same_result(run: Path, reference: dict, epochs: int = EPOCHS) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    for key in COMPARE:
        assert summary[key] == reference["summary"][key], key
    history = read_metrics_csv(run / "metrics.csv")
    assert len(history) == len(reference["history"]) == epochs
    for a, b in zip(history, reference["history"]):
        assert a["train_loss"] == b["train_loss"] and a["valid_loss"] == b["valid_loss"], a["epoch"]
    # best.pt is the checkpoint of the epoch the summary names
    best = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert best["epoch"] == summary["best_epoch"]
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]


def start(data_root: Path, out: Path, name: str, flags: list[str] = RUN_FLAGS) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mnistlab", "train", *flags, "--data-dir", str(data_root),
           "--out", str(out), "--name", name, "--jsonl"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # A pytest started in the background by a shell without job control (`pytest &` in a script) has
    # SIGINT ignored, and a child inherits that: Python would then install no Ctrl-C handler and the
    # Ctrl-C test's run would train to the end. The child gets the default disposition, as a terminal gives it.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path} appeared: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.01)


def wait_for_epochs(proc: subprocess.Popen, n: int) -> float:
    """Read the --jsonl stream until `n` epochs have finished (0: until training has started).

    Returns the last epoch's duration in seconds (0.5 before the first epoch).
    """
    seen, seconds = 0, 0.5
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "epoch":
            seen += 1
            seconds = float(event["epoch_seconds"])
        if seen >= n and (n > 0 or event.get("event") == "info"):
            return seconds
    raise AssertionError(f"the run ended after {seen} epochs: {proc.stderr.read()}")


# --------------------------------------------------------------------------- SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_sigkill_at_a_random_moment_then_resume(trial, data_root, reference, tmp_path, capsys):
    rng = random.Random(1000 + trial)
    proc = start(data_root, tmp_path, "killed")
    run = tmp_path / "killed"
    epoch_seconds = wait_for_epochs(proc, rng.randrange(0, EPOCHS - 1))  # a random epoch...
    time.sleep(rng.uniform(0.0, 1.2 * epoch_seconds))  # ...and a random step in it (or in its checkpointing)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    epoch = check_consistent(run)
    finished = json.loads((run / "summary.json").read_text())["status"] == "completed"
    code, err = run_cli(capsys, "train", "--resume", str(run), "-q")
    if finished:
        assert code == 1 and "already finished" in err  # killed after it finished: nothing to do
    else:
        assert code == 0, err
    assert_same_result(run, reference)


def test_sigkill_right_after_start_then_resume(data_root, reference, tmp_path, capsys):
    """The fast variant: killed as soon as the epoch-0 checkpoint exists."""
    proc = start(data_root, tmp_path, "early")
    run = tmp_path / "early"
    wait_for(run / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    check_consistent(run)
    code, err = run_cli(capsys, "train", "--resume", str(run), "-q")
    assert code == 0, err
    assert_same_result(run, reference)


class _Killed(BaseException):
    """Stands for SIGKILL in-process: nothing after the raise runs, no handler sees it."""


def _train_with(data_root: Path, out: Path, name: str, builtins: list) -> None:
    """The RUN_FLAGS run, trained with the built-in callbacks given (one of them standing in for a kill)."""
    cfg = resolve_config(TrainConfig(model="mlp", epochs=EPOCHS, batch_size=5, seed=3, plots=False, threads=1,
                                     data_dir=str(data_root), out=str(out), name=name, progress="quiet"))
    Trainer(ImageTask(), cfg, strategy=SingleProcess(torch.device("cpu")), builtins=builtins).fit()


class _KillAt(cb.Callback):
    """Killed in on_epoch_end of epoch `at` (placed between two built-ins)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_end(self, trainer, state) -> None:
        if state.epoch == self.at:
            raise _Killed


@pytest.mark.parametrize("at_epoch", [3, EPOCHS])
def test_killed_between_checkpoint_and_metrics(at_epoch, data_root, reference, tmp_path, capsys):
    """The window where last.pt is one epoch ahead of metrics.csv, in the middle and at the very end."""
    builtins = [cb.EarlyStop(0), cb.Checkpoint(), _KillAt(at_epoch), cb.MetricsCsv(), cb.Summary(), cb.Progress()]
    with pytest.raises(_Killed):
        _train_with(data_root, tmp_path, "gap", builtins)
    run = tmp_path / "gap"
    assert check_consistent(run) == at_epoch and len(read_metrics_csv(run / "metrics.csv")) == at_epoch - 1
    code, err = run_cli(capsys, "train", "--resume", str(run), "-q")
    assert code == 0, err
    assert_same_result(run, reference)


class _KilledBeforeBestLink(cb.Checkpoint):
    """Writes last.pt of improving epoch `at`, then is killed before best.pt points at it."""

    def __init__(self, at: int) -> None:
        self.at = at

    def save(self, folder: Path, payload: dict, best: bool) -> None:
        if best and payload["epoch"] == self.at:
            save_checkpoint(folder / "last.pt", payload)
            raise _Killed
        super().save(folder, payload, best)


def test_killed_between_last_and_best_checkpoint(data_root, reference, tmp_path, capsys):
    """last.pt of an improving epoch is written but best.pt not yet re-linked to it."""
    best_epoch = reference["summary"]["best_epoch"]  # every epoch up to the best one improves on this data
    builtins = [cb.EarlyStop(0), _KilledBeforeBestLink(best_epoch), cb.MetricsCsv(), cb.Summary(), cb.Progress()]
    with pytest.raises(_Killed):
        _train_with(data_root, tmp_path, "nolink", builtins)
    run = tmp_path / "nolink"
    check_consistent(run)
    code, err = run_cli(capsys, "train", "--resume", str(run), "-q")
    assert code == 0, err
    assert_same_result(run, reference)


# --------------------------------------------------------------------------- SIGINT


def test_ctrl_c_saves_says_how_to_resume_and_exits_130(data_root, long_reference, tmp_path, capsys):
    proc = start(data_root, tmp_path, "ctrlc", LONG_FLAGS)
    run = tmp_path / "ctrlc"
    wait_for_epochs(proc, 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"mnistlab train --resume {run}" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    check_consistent(run)
    code, err = run_cli(capsys, "train", "--resume", str(run), "-q")
    assert code == 0, err
    assert_same_result(run, long_reference, LONG_EPOCHS)


# --------------------------------------------------------------------------- divergence


def test_divergence_in_first_epoch(data_root, tmp_path, capsys):
    code, err = run_cli(
        capsys, "train", "--model", "dnn", "--set", "batchnorm=false", "--set", "dropout=false", "--optimizer", "sgd",
        "--lr", "1000", "--epochs", "3", "--data-dir", str(data_root), "--out", str(tmp_path), "--name", "boom",
        "-q", "--no-plots",
    )
    line = one_error_line(err)
    assert code == 1
    assert "diverged" in line and "--lr" in line and str(tmp_path / "boom") in line
    summary = json.loads((tmp_path / "boom" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stop_reason"].startswith("diverged")
    torch.load(tmp_path / "boom" / "checkpoints" / "last.pt", weights_only=True)  # the epoch-0 checkpoint


class _LrExplodesAt(cb.Callback):
    """A bad schedule: from epoch `at` on the learning rate is 1e38, so the loss goes inf/NaN."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_start(self, trainer, state) -> None:
        if state.epoch == self.at:
            for group in trainer.optimizer.param_groups:
                group["lr"] = 1e38


def test_divergence_after_a_good_epoch_keeps_best_checkpoint(data_root, tmp_path, capsys):
    """Epoch 1 trains well; in epoch 2 the learning rate explodes and the loss goes inf/NaN."""
    with pytest.raises(mnistlab.errors.TrainingDiverged) as err:
        mnistlab.train(TrainConfig(model="mlp", epochs=4, data_dir=str(data_root), out=str(tmp_path), name="late",
                                   progress="quiet", plots=False), callbacks=[_LrExplodesAt(2)])
    line = str(err.value)
    run = tmp_path / "late"
    assert "diverged" in line and "epoch 2" in line and "best checkpoint (epoch 1)" in line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["best_epoch"] == 1
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in best["state_dict"].values())
    # the kept checkpoint is usable
    code, err = run_cli(capsys, "evaluate", str(run), "--data-dir", str(data_root), "--no-plots", "--json")
    assert code == 0, err
