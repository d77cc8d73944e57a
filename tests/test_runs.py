"""mnistlab.runs: the Run view of a run folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mnistlab.config import TrainConfig
from mnistlab.runs import load_run

FIXTURES = Path(__file__).parent / "fixtures" / "v1-runs"


def test_test_metrics_of_a_finished_run_are_the_summary_test_metrics(tmp_path: Path, fake_mnist_root: Path) -> None:
    from mnistlab.training.engine import train

    run = train(TrainConfig(model="logistic", epochs=1, data_dir=str(fake_mnist_root), out=str(tmp_path),
                            progress="quiet", plots=False))
    summary = json.loads((run.path / "summary.json").read_text())
    test = run.test_metrics
    assert summary["split"] == "test"
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "confusion_matrix",
                "per_class", "samples", "loss", "split", "checkpoint"):
        assert test[key] == summary[key], key
    assert test["samples"] == 200 and len(test["confusion_matrix"]) == 10
    # Only the test metrics: the run's own facts stay in summary.
    assert "status" not in test and "train_seconds" not in test and "name" not in test


def test_test_metrics_of_runs_without_them_are_empty(tmp_path: Path) -> None:
    # Interrupted before the test split was scored (image and text fixtures of an older engine).
    for kind in ("image", "text"):
        assert load_run(FIXTURES / kind).test_metrics == {}
    empty = tmp_path / "empty"
    shutil.copytree(FIXTURES / "image", empty)
    (empty / "summary.json").unlink()
    assert load_run(empty).test_metrics == {}


def test_test_metrics_nested_under_test_are_still_read(tmp_path: Path) -> None:
    # Older summaries nested the metrics under "test" (compare and the report read both forms).
    old = tmp_path / "old"
    shutil.copytree(FIXTURES / "image", old)
    summary = json.loads((old / "summary.json").read_text())
    (old / "summary.json").write_text(json.dumps({**summary, "test": {"accuracy": 0.5, "f1_macro": 0.4}}))
    assert load_run(old).test_metrics == {"accuracy": 0.5, "f1_macro": 0.4}
