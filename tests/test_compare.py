"""`mnistlab compare` on hand-made run folders: rows, sorting, formats, globs and skipped folders."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from mnistlab.cli import main
from mnistlab.compare import compare_runs, format_rows


def make_run(root: Path, name: str, *, acc: float | None, f1: float | None, seconds: float, status: str = "completed",
             model: str = "logistic", options: dict | None = None, lr: float = 0.1, epochs: int = 3) -> Path:
    """A run folder as `train` leaves it, written by hand: config.yaml, summary.json, metrics.csv."""
    path = root / name
    path.mkdir(parents=True)
    config = {"model": model, "dataset": "mnist", "model_options": options or {}, "lr": lr, "optimizer": "sgd",
              "batch_size": 100, "epochs": epochs, "init": "default", "seed": 0}
    (path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    summary = {"name": name, "model": model, "parameters": 7850, "status": status, "epochs_run": epochs,
               "train_seconds": seconds, "best_valid_accuracy": None if acc is None else acc - 0.01}
    if acc is not None:
        summary.update(accuracy=acc, f1_macro=f1, auc_macro=0.99, split="test")
    (path / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    rows = ["epoch,train_loss,train_accuracy,valid_loss,valid_accuracy,lr,train_seconds,epoch_seconds"]
    for e in range(1, epochs + 1):
        va = (acc or 0.5) - 0.01 * (epochs - e)
        rows.append(f"{e},0.5,0.8,0.4,{va},0.1,{seconds / epochs},{seconds / epochs}")
    (path / "metrics.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "alpha", acc=0.91, f1=0.90, seconds=30.0)
    make_run(root, "bravo", acc=0.97, f1=0.96, seconds=50.0, lr=0.5)
    make_run(root, "charlie", acc=0.93, f1=0.95, seconds=10.0, model="dnn",
             options={"hidden_dims": [784, 128, 128, 128], "batchnorm": False})
    make_run(root, "delta", acc=None, f1=None, seconds=5.0, status="failed", epochs=1)
    (root / "not-a-run").mkdir()
    return root


def names(rows: list[dict]) -> list[str]:
    return [r["name"] for r in rows]


def test_rows_hold_every_column(runs_root: Path) -> None:
    rows, notes = compare_runs([runs_root / "bravo", runs_root / "charlie"])
    assert names(rows) == ["bravo", "charlie"]
    bravo, charlie = rows
    assert bravo["test_accuracy"] == 0.97 and bravo["f1"] == 0.96 and bravo["auc"] == 0.99
    assert bravo["parameters"] == 7850 and bravo["epochs"] == 3 and bravo["train_seconds"] == 50.0
    assert bravo["best_valid_accuracy"] == pytest.approx(0.96)
    assert "lr=0.5" in bravo["options"]  # a deviation from the logistic recipe (lr 0.1)
    assert "hidden_dims=784,128,128,128" in charlie["options"] and "batchnorm=false" in charlie["options"]
    assert notes == []


@pytest.mark.parametrize(
    "key, expected",
    [
        ("test_accuracy", ["bravo", "charlie", "alpha", "delta"]),
        ("f1", ["bravo", "charlie", "alpha", "delta"]),
        ("train_seconds", ["delta", "charlie", "alpha", "bravo"]),
        ("name", ["alpha", "bravo", "charlie", "delta"]),
    ],
)
def test_sort_orders(runs_root: Path, key: str, expected: list[str]) -> None:
    rows, _ = compare_runs([str(runs_root / "*")], sort=key)
    assert names(rows) == expected


def test_failed_run_shows_its_status(runs_root: Path) -> None:
    rows, _ = compare_runs([runs_root / "delta"])
    assert rows[0]["status"] == "failed" and rows[0]["test_accuracy"] is None
    assert "failed" in format_rows(rows, "table")


def test_glob_and_folder_of_runs_skip_non_runs(runs_root: Path) -> None:
    by_glob, glob_notes = compare_runs([str(runs_root / "*")])
    by_folder, folder_notes = compare_runs([runs_root])
    assert names(by_glob) == names(by_folder) == ["alpha", "bravo", "charlie", "delta"]
    assert any("not-a-run" in n for n in glob_notes) and any("not-a-run" in n for n in folder_notes)
    # The same run named twice (folder and glob) is one row.
    both, _ = compare_runs([runs_root / "alpha", str(runs_root / "a*")])
    assert names(both) == ["alpha"]


def test_cli_csv_and_markdown(runs_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(runs_root / "*"), "--format", "csv", "--sort", "test_accuracy"]) == 0
    out, err = capsys.readouterr()
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in table] == ["bravo", "charlie", "alpha", "delta"]
    assert float(table[0]["test_accuracy"]) == 0.97 and table[3]["status"] == "failed"
    assert "not-a-run" in err  # the skip note goes to stderr, never into the CSV

    assert main(["compare", str(runs_root), "--format", "markdown", "--sort", "name"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("| name | model |") and lines[1].startswith("|---")
    assert "| alpha | logistic |" in lines[2] and "0.9100" in lines[2]


def test_cli_plot_overlays_curves(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "valid.png"
    assert main(["compare", str(runs_root / "alpha"), str(runs_root / "bravo"), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_sort_key_is_a_usage_error(runs_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(runs_root), "--sort", "speed"]) == 2
    err = capsys.readouterr().err
    assert "speed" in err and "test_accuracy" in err and "train_seconds" in err


def test_no_runs_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tmp_path / "nothing*")]) == 1
    assert "no match" in capsys.readouterr().err


def test_text_runs_show_their_own_options(tmp_path: Path) -> None:
    # A text run's options are measured against the text defaults (mnistlab text train), not
    # against the image `lstm` recipe that shares its model name.
    import shutil

    from mnistlab.compare import key_options

    fixture = Path(__file__).parent / "fixtures" / "v1-runs" / "text"
    config = yaml.safe_load((fixture / "config.yaml").read_text(encoding="utf-8"))
    # The fixture: embed_dim 8, hidden 8, 3 epochs, seed 1, otherwise text defaults.
    assert key_options(config) == "embed_dim=8 hidden=8 epochs=3 seed=1"
    bi = tmp_path / "bi"
    shutil.copytree(fixture, bi)
    (bi / "config.yaml").write_text(yaml.safe_dump({**config, "bidirectional": True, "hidden": 32, "layers": 2,
                                                    "dropout": 0.5, "lr": 0.01}), encoding="utf-8")
    rows, _ = compare_runs([str(bi)])
    assert rows[0]["options"] == "bidirectional=true embed_dim=8 hidden=32 layers=2 dropout=0.5 lr=0.01 epochs=3 seed=1"
    defaults = dict(config, embed_dim=64, hidden=64, epochs=10, seed=0)
    assert key_options(defaults) == ""
