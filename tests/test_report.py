"""The run report: every picture and report.md/html after a run on made data; one failing plot keeps the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mnistlab import report
from mnistlab.config import TrainConfig
from mnistlab.errors import UsageError
from mnistlab.runs import Run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One quick logistic run (with augment, so samples.png shows shifted inputs) on the fake MNIST."""
    from mnistlab.training.engine import train
    from tests.conftest import write_fake_mnist

    root = tmp_path_factory.mktemp("report")
    write_fake_mnist(root / "data" / "mnist")
    cfg = TrainConfig(model="logistic", epochs=2, data_dir=str(root / "data"), out=str(root / "runs"),
                      progress="quiet", augment=True)
    return train(cfg)


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        w, h = img.size
    assert 100 <= w <= 4000 and 50 <= h <= 4000, (path, img.size)


def test_train_writes_every_plot_and_the_report(trained: Run) -> None:
    for name in report.PLOTS:
        check_png(trained.path / "plots" / f"{name}.png")
    md = (trained.path / "report.md").read_text(encoding="utf-8")
    summary = trained.summary
    assert f"# Run {trained.name}" in md
    assert f"{summary['accuracy']:.4f}" in md and f"{summary['f1_macro']:.4f}" in md
    assert "Per class" in md and "| 9 |" in md  # per-class rows
    assert "7,850" in md  # parameter count
    assert summary["stop_reason"] in md and "training time" in md
    assert "```yaml" in md and "model: logistic" in md
    for name in report.PLOTS:
        assert f"](plots/{name}.png)" in md
    assert "Problems while writing" not in md
    page = (trained.path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<img src='plots/curves.png'" in page
    assert f"{summary['accuracy']:.4f}" in page


def test_a_failing_plot_leaves_the_others_and_the_report(trained: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    import mnistlab.plots

    for name in report.PLOTS:
        (trained.path / "plots" / f"{name}.png").unlink()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(mnistlab.plots, "plot_confusion_matrix", broken)
    result = report.write_run_report(trained)  # no logits: the misclassified grid cannot be drawn either
    assert set(result.failed) == {"confusion_matrix", "misclassified"}
    assert "boom" in result.failed["confusion_matrix"]
    check_png(trained.path / "plots" / "curves.png")
    check_png(trained.path / "plots" / "samples.png")
    assert not (trained.path / "plots" / "confusion_matrix.png").exists()
    md = (trained.path / "report.md").read_text(encoding="utf-8")
    assert "Problems while writing this report" in md and "confusion_matrix: RuntimeError: boom" in md
    assert "](plots/curves.png)" in md and "](plots/confusion_matrix.png)" not in md


def test_evaluate_rewrites_the_report(trained: Run) -> None:
    from mnistlab.evaluation import evaluate

    (trained.path / "report.md").unlink()
    (trained.path / "plots" / "curves.png").unlink(missing_ok=True)
    metrics = evaluate(trained, plots=True, device="cpu")
    check_png(trained.path / "plots" / "misclassified.png")
    check_png(trained.path / "plots" / "curves.png")
    assert f"{metrics['accuracy']:.4f}" in (trained.path / "report.md").read_text(encoding="utf-8")


def _scored(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("| checkpoint scored |"))


def test_the_report_labels_the_checkpoint_evaluate_scored(trained: Run) -> None:
    import torch

    from mnistlab.evaluation import evaluate

    # Make the two checkpoints score differently: last.pt with its weights zeroed (uniform logits).
    last = trained.checkpoint_path("last")
    saved = last.read_bytes()
    ckpt = torch.load(last, weights_only=True)
    ckpt["state_dict"] = {k: torch.zeros_like(v) for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, last)
    try:
        metrics = evaluate(trained, checkpoint="last", plots=True, device="cpu")
        md = (trained.path / "report.md").read_text(encoding="utf-8")
        assert f"{metrics['accuracy']:.4f}" in md and metrics["accuracy"] != trained.summary["accuracy"]
        assert _scored(md) == f"| checkpoint scored | last (epoch {metrics['epoch']}) |"
        metrics = evaluate(trained, plots=True, device="cpu")
        md = (trained.path / "report.md").read_text(encoding="utf-8")
        assert _scored(md) == f"| checkpoint scored | best (epoch {metrics['epoch']}) |"
    finally:
        last.write_bytes(saved)
    # Written by train (no evaluation): what summary.json says train scored, with its epoch.
    report.write_run_report(trained)
    md = (trained.path / "report.md").read_text(encoding="utf-8")
    assert _scored(md) == f"| checkpoint scored | best (epoch {trained.summary['best_epoch']}) |"


def test_tensorboard_missing_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     fake_mnist_root: Path) -> None:
    import sys

    from mnistlab.training.engine import train

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(UsageError, match="pip install tensorboard"):
        train(TrainConfig(model="logistic", epochs=1, tensorboard=True, data_dir=str(fake_mnist_root),
                          out=str(tmp_path / "runs"), progress="quiet"))
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made


def test_tensorboard_logs_epoch_scalars(tmp_path: Path, fake_mnist_root: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mnistlab.training.engine import train

    run = train(TrainConfig(model="logistic", epochs=2, data_dir=str(fake_mnist_root), out=str(tmp_path),
                            progress="quiet", plots=False, tensorboard=True))
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/valid", "accuracy/train", "accuracy/valid"} <= tags
    assert [e.step for e in acc.Scalars("accuracy/valid")] == [1, 2]
