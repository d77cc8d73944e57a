"""`mnistlab sweep`: grid parsing, validation before launch, parallel runs, resume and failed runs."""

from __future__ import annotations

import csv
import fcntl
import json
import shutil
import time
from pathlib import Path

import pytest

from mnistlab.cli import main
from mnistlab.errors import UsageError
from mnistlab.sweep import parse_grid, plan_sweep, run_name


def test_parse_grid_and_names() -> None:
    grid = parse_grid(["lr=0.1,0.5", "batch-size=32,64", "hidden_dims=784,128;784,256"])
    assert grid == [("lr", ["0.1", "0.5"]), ("batch_size", ["32", "64"]), ("hidden_dims", ["784,128", "784,256"])]
    assert run_name({"init": "kaiming", "batchnorm": "false"}) == "init=kaiming,batchnorm=false"
    assert run_name({"dataset": "csv:/x/y.csv"}) == "dataset=csv__x_y.csv"
    for bad in (["lr"], ["lr="], ["lr=0.1,,0.2"], ["name=a,b"], ["lr=1,2", "lr=3"], ["lr=1,1"], []):
        with pytest.raises(UsageError):
            parse_grid(bad)


def test_plan_types_fields_and_routes_model_options() -> None:
    runs = plan_sweep({"model": "dnn", "model_options": {"hidden_dims": "784,128"}},
                      parse_grid(["lr=0.01,0.1", "batchnorm=true,false"]))
    assert [r.name for r in runs] == ["lr=0.01,batchnorm=true", "lr=0.01,batchnorm=false",
                                      "lr=0.1,batchnorm=true", "lr=0.1,batchnorm=false"]
    assert runs[0].config["lr"] == 0.01 and runs[0].config["model_options"] == {"hidden_dims": "784,128",
                                                                                  "batchnorm": "true"}


@pytest.mark.parametrize("grid", [["lr=0.1,-1"], ["optimizer=sgd,adamm"], ["batchnrom=true,false"]])
def test_a_bad_combination_fails_before_launching(tmp_path: Path, grid: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sweep", "--model", "dnn", "--out", str(tmp_path)]
    for g in grid:
        argv += ["--grid", g]
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "dnn-sweep").exists()  # nothing launched, no folder made


def test_sweep_runs_every_combination_then_skips_them(tmp_path: Path, fake_mnist_root: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sweep", "--model", "logistic", "--grid", "lr=0.1,0.5", "--grid", "batch_size=32,64", "--epochs", "1",
            "--workers", "2", "--data-dir", str(fake_mnist_root), "--out", str(tmp_path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    folder = tmp_path / "logistic-sweep"
    names = ["lr=0.1,batch_size=32", "lr=0.1,batch_size=64", "lr=0.5,batch_size=32", "lr=0.5,batch_size=64"]
    for name in names:
        summary = json.loads((folder / name / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["accuracy"] > 0.3
        assert name in out
    with (folder / "comparison.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == names and all(r["status"] == "completed" for r in rows)
    config = (folder / names[3] / "config.yaml").read_text()
    assert "lr: 0.5" in config and "batch_size: 64" in config
    md = (folder / "comparison.md").read_text()
    assert all(f"| {n} |" in md for n in names) and "test_accuracy.png" in md
    assert (folder / "test_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The same command again: everything is skipped, nothing retrained.
    start = time.perf_counter()
    assert main(argv) == 0
    assert time.perf_counter() - start < 20
    err = capsys.readouterr().err
    assert err.count("skipped") == 4 and "started" not in err

    # A run interrupted after its last epoch (while scoring the test split) still has its
    # checkpoints: it is resumed, never deleted, and its finished epochs are kept.
    summary_path = folder / names[1] / "summary.json"
    metrics_before = (folder / names[1] / "metrics.csv").read_text()
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "status": "interrupted"}))
    (folder / names[1] / "marker").write_text("from the interrupted attempt")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") == 3 and f"resuming {names[1]}" in err
    assert json.loads(summary_path.read_text())["status"] == "completed"
    assert (folder / names[1] / "marker").exists()
    assert (folder / names[1] / "metrics.csv").read_text() == metrics_before

    # A folder without a checkpoint (killed before its first one) has nothing to resume: redone.
    shutil.rmtree(folder / names[2] / "checkpoints")
    (folder / names[2] / "summary.json").unlink()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") == 3 and f"redoing {names[2]}" in err and f"started {names[2]}" in err
    assert json.loads((folder / names[2] / "summary.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == names  # same folder, no -2 copies


def test_a_failing_run_is_recorded_and_the_rest_finish(tmp_path: Path, fake_mnist_root: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # A dataset value that passes validation but cannot be read when the run starts.
    missing = tmp_path / "missing.csv"
    argv = ["sweep", "--model", "logistic", "--grid", f"dataset=mnist,csv:{missing}", "--epochs", "1",
            "--workers", "2", "--data-dir", str(fake_mnist_root), "--out", str(tmp_path), "--name", "mixed"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    folder = tmp_path / "mixed"
    bad = run_name({"dataset": f"csv:{missing}"})
    assert "FAILED" in err and "1 of 2 runs failed" in err
    assert json.loads((folder / "dataset=mnist" / "summary.json").read_text())["status"] == "completed"
    assert "missing.csv" in (folder / f"{bad}.log").read_text()  # its log is kept
    with (folder / "comparison.csv").open() as fh:
        status = {r["name"]: r["status"] for r in csv.DictReader(fh)}
    assert status == {"dataset=mnist": "completed", bad: "failed"}

    # Rerun: the completed run is skipped, the failed one is retried (and fails again).
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "skipped dataset=mnist" in err and f"started {bad}" in err


def _sweep_argv(out: Path, data: Path, *extra: str) -> list[str]:
    return ["sweep", "--model", "logistic", "--grid", "lr=0.1,0.5", "--epochs", "1", "--workers", "2",
            "--data-dir", str(data), "--out", str(out), *extra]


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def test_a_rerun_with_changed_settings_is_refused_naming_them(tmp_path: Path, fake_mnist_root: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_sweep_argv(tmp_path, fake_mnist_root)) == 0
    capsys.readouterr()
    folder = tmp_path / "logistic-sweep"
    before = _snapshot(folder)

    # Other epochs and batch size: the finished runs are not these settings' results.
    assert main(_sweep_argv(tmp_path, fake_mnist_root, "--epochs", "2", "--batch-size", "50")) == 1
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[0].startswith("sweep logistic-sweep:"), err  # the plan, then one error line
    error = lines[1]
    assert error.startswith("mnistlab: error:") and "epochs 1 -> 2" in error and "batch_size 100 -> 50" in error
    assert "lr=0.1" in error and "--name" in error
    assert "  skipped " not in err and "  started " not in err
    assert _snapshot(folder) == before  # nothing deleted, retrained or rewritten

    # Output-only settings do not count.
    assert main(_sweep_argv(tmp_path, fake_mnist_root, "--no-plots", "--workers", "1", "--quiet")) == 0
    assert capsys.readouterr().err.count("skipped") == 2

    # A new --name is a new sweep with the new settings, beside the old one.
    assert main(_sweep_argv(tmp_path, fake_mnist_root, "--epochs", "2", "--name", "two-epochs")) == 0
    assert json.loads((tmp_path / "two-epochs" / "lr=0.5" / "summary.json").read_text())["epochs_run"] == 2


def test_config_changes_name_model_options_and_settings(tmp_path: Path) -> None:
    from mnistlab.runs import write_yaml
    from mnistlab.sweep import config_changes

    [planned] = plan_sweep({"model": "dnn", "model_options": {"hidden_dims": "784,128"}}, parse_grid(["lr=0.01"]))
    run = tmp_path / "lr=0.01"
    run.mkdir()
    # As train writes it: the resolved config with its own output settings and the package version.
    write_yaml(run / "config.yaml", {**planned.resolved, "out": "elsewhere", "name": "lr=0.01-2", "progress": "bar",
                                     "threads": 3, "plots": False, "package_version": "0.0.1",
                                     "mlflow": "http://127.0.0.1:5000", "mlflow_checkpoints": True})
    assert config_changes(run, planned.resolved) == []
    [other] = plan_sweep({"model": "dnn", "model_options": {"hidden_dims": "784,256"}, "epochs": 3},
                         parse_grid(["lr=0.01"]))
    assert config_changes(run, other.resolved) == ["hidden_dims 784,128 -> 784,256", "epochs 100 -> 3"]


def test_an_interrupted_run_is_resumed_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           fake_mnist_root: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # A run folder interrupted after epoch 1 of 2 (tests/fixtures/v1-runs/image), placed where a
    # sweep with its settings keeps its grid point init=kaiming.
    fixture = Path(__file__).parent / "fixtures" / "v1-runs" / "image"
    folder = tmp_path / "resume-sweep"
    shutil.copytree(fixture, folder / "init=kaiming")
    first_epoch = (fixture / "metrics.csv").read_text().splitlines()[:2]
    monkeypatch.setenv("MNISTLAB_DATA", str(fake_mnist_root))
    argv = ["sweep", "--model", "dnn", "--set", "hidden_dims=784,16,16", "--epochs", "2", "--batch-size", "64",
            "--scheduler", "step", "--step-size", "1", "--gamma", "0.5", "--seed", "3", "--no-plots",
            "--grid", "init=kaiming", "--out", str(tmp_path), "--name", "resume-sweep", "--workers", "1"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "resuming init=kaiming" in err and "redoing" not in err
    run = folder / "init=kaiming"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    assert (run / "metrics.csv").read_text().splitlines()[:2] == first_epoch  # epoch 1 kept, not retrained
    assert "completed 2 epochs" in (run / "train.log").read_text()  # its log, kept in the run folder


def test_two_sweeps_cannot_work_in_one_folder(tmp_path: Path, fake_mnist_root: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "logistic-sweep"
    folder.mkdir()
    (folder / "lr=0.1").mkdir()  # an unfinished run of the other sweep: must survive
    # Another sweep holds the folder's lock (an open file description of its own, as another process has).
    with open(folder / ".sweep.lock", "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(_sweep_argv(tmp_path, fake_mnist_root)) == 1
    err = capsys.readouterr().err
    error = [ln for ln in err.splitlines() if ln.startswith("mnistlab: error:")]
    assert len(error) == 1 and "another sweep" in error[0] and str(folder) in error[0]
    assert "  started " not in err and (folder / "lr=0.1").is_dir()


def _lock_is_free(folder: Path) -> bool:
    with open(folder / ".sweep.lock", "a+") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_the_training_processes_hold_the_lock_of_a_killed_sweep(tmp_path: Path, fake_mnist_root: Path) -> None:
    # The training processes inherit the sweep's lock: a sweep killed while its runs train
    # (they go on, orphaned) still keeps a second sweep out until they end.
    import signal
    import subprocess
    import sys

    folder = tmp_path / "logistic-sweep"
    argv = _sweep_argv(tmp_path, fake_mnist_root)
    argv[argv.index("--epochs") + 1] = "300"  # a few seconds of training per run
    proc = subprocess.Popen([sys.executable, "-m", "mnistlab", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(folder.glob("lr=*/metrics.csv"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # both runs are past their first epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not _lock_is_free(folder)
    while not _lock_is_free(folder) and time.monotonic() < deadline:
        time.sleep(0.2)  # free once the orphaned runs end
    assert _lock_is_free(folder)
    for run in (folder / "lr=0.1", folder / "lr=0.5"):
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"
