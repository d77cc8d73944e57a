"""`mnistlab sweep`: grid parsing, validation before launch, parallel runs, resume and failed runs."""

from __future__ import annotations

import csv
import json
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

    # A run left unfinished (as an interrupted one is) is deleted and redone; the others are kept.
    summary_path = folder / names[1] / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "status": "interrupted"}))
    (folder / names[1] / "stale-marker").write_text("from the interrupted attempt")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") == 3 and f"redoing {names[1]}" in err and f"started {names[1]}" in err
    assert json.loads(summary_path.read_text())["status"] == "completed"
    assert not (folder / names[1] / "stale-marker").exists()
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
