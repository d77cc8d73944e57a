"""The training engine on made data: learning, early stopping, resume, checkpoints, divergence, run folders."""

import dataclasses
import functools
import json
import math

import pytest
import torch
import yaml

import mnistlab
from mnistlab.config import TrainConfig
from mnistlab.errors import TrainingDiverged
from mnistlab.runs import read_metrics_csv
from mnistlab.training.checkpoint import build_model_from_checkpoint, load_checkpoint
from mnistlab.training.early_stopping import EarlyStopping

TEST_KEYS = {"accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro", "confusion_matrix", "per_class"}


def cfg(root, tmp_path, **kw):
    base = dict(dataset="mnist", data_dir=str(root), out=str(tmp_path / "runs"), progress="quiet", plots=False)
    return TrainConfig(**{**base, **kw})


def test_fast_model_learns_made_data(fake_mnist_root, tmp_path):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="fast", epochs=4, batch_size=32))
    hist = run.history
    assert len(hist) == 4
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    s = run.summary
    assert s["status"] == "completed" and s["epochs_run"] == 4
    assert s["accuracy"] > 0.6  # 10 classes: chance is 0.1
    assert TEST_KEYS <= set(s)
    assert s["train_seconds"] > 0 and s["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in hist))
    assert s["best_epoch"] in range(1, 5) and "completed" in s["stop_reason"]


def test_run_folder_contents_and_names(fake_mnist_root, tmp_path):
    c = cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1)
    first, second = mnistlab.train(c), mnistlab.train(c)
    assert first.path.name == "logistic" and second.path.name == "logistic-2"
    for name in ["config.yaml", "metrics.csv", "summary.json", "environment.json", "checkpoints/best.pt",
                 "checkpoints/last.pt"]:
        assert (first.path / name).is_file(), name
    config = yaml.safe_load((first.path / "config.yaml").read_text())
    assert config["model"] == "logistic" and config["optimizer"] == "sgd" and config["package_version"]
    env = json.loads((first.path / "environment.json").read_text())
    assert env["torch_version"] == torch.__version__ and env["device"] == "cpu"
    # no temp files left beside the atomically written ones
    assert not [p for p in first.path.rglob("*.tmp")]
    # checkpoints hold plain values only
    torch.load(first.path / "checkpoints" / "last.pt", weights_only=True)


def test_checkpoint_reloads_with_identical_outputs(fake_mnist_root, tmp_path):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="cnn-bn", epochs=1, batch_size=64))
    ckpt = load_checkpoint(run.checkpoint_path("best"))
    fresh = build_model_from_checkpoint(ckpt)
    x = torch.randn(8, 1, 28, 28)
    other = mnistlab.create_model("cnn-bn")
    other.load_state_dict(ckpt["state_dict"])
    other.eval()
    assert torch.equal(fresh(x), other(x))


def test_checkpoint_survives_a_changed_builder_default(fake_mnist_root, tmp_path, monkeypatch):
    # The checkpoint lists every option, defaults included, so a later mnistlab that changes
    # a default (as `fast` once changed c1) still rebuilds the trained architecture.
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="fast", epochs=0.2, batch_size=64))
    ckpt = load_checkpoint(run.checkpoint_path("best"))
    assert ckpt["model"]["options"] == {"c1": 16, "c2": 32, "hidden": 256}
    from mnistlab.models import registry

    info = registry.get_model_info("fast")

    @functools.wraps(info.builder)  # same options (the signature follows __wrapped__)
    def wider_by_default(**kw):
        return info.builder(**{"c1": 48, **kw})

    monkeypatch.setitem(registry._REGISTRY, "fast", dataclasses.replace(info, builder=wider_by_default))
    assert mnistlab.create_model("fast")[0].out_channels == 48
    rebuilt = build_model_from_checkpoint(ckpt)
    assert rebuilt[0].out_channels == 16


def test_evaluate_matches_summary(fake_mnist_root, tmp_path):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="mlp", epochs=2, lr=0.5))
    metrics = mnistlab.evaluate(run, data_dir=str(fake_mnist_root))
    for key in ("accuracy", "f1_macro", "auc_macro", "confusion_matrix"):
        assert metrics[key] == run.summary[key]
    valid = mnistlab.evaluate(run, "valid", data_dir=str(fake_mnist_root))
    assert valid["samples"] == 120  # 20% of 600
    assert valid["accuracy"] == pytest.approx(run.history[run.summary["best_epoch"] - 1]["valid_accuracy"])


def test_early_stopping_fires(fake_mnist_root, tmp_path):
    # A learning rate of ~0 leaves the weights unchanged: the valid loss never improves after epoch 1.
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=10, lr=1e-30, patience=2))
    s = run.summary
    assert s["epochs_run"] == 3 and s["best_epoch"] == 1
    assert s["stop_reason"].startswith("early stopping")


def test_early_stopping_counter_resets_on_improvement():
    es = EarlyStopping(patience=2)
    assert es.update(1.0, 1) and not es.should_stop
    assert not es.update(1.1, 2) and es.bad_epochs == 1
    assert es.update(0.9, 3) and es.bad_epochs == 0  # reset
    es.update(0.95, 4)
    es.update(0.95, 5)
    assert es.should_stop and es.best_epoch == 3
    clone = EarlyStopping()
    clone.load_state_dict(es.state_dict())
    assert clone == es


class InterruptAt(mnistlab.Callback):
    """Ctrl-C at the start of epoch `at` (before any of its steps)."""

    def __init__(self, at):
        self.at = at

    def on_epoch_start(self, trainer, state):
        if state.epoch == self.at:
            raise KeyboardInterrupt()


@pytest.mark.parametrize("model", ["cnn-bn", "dnn"])
def test_resume_equals_uninterrupted(fake_mnist_root, tmp_path, model):
    # dropout, batchnorm, a scheduler and a shuffled order: everything that resume must restore
    c = cfg(fake_mnist_root, tmp_path, model=model, epochs=3, batch_size=64, scheduler="cosine", seed=7)
    full = mnistlab.train(c, name="full")
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        mnistlab.train(c, name="cut", callbacks=[InterruptAt(3)])
    cut = tmp_path / "runs" / "cut"
    assert json.loads((cut / "summary.json").read_text())["status"] == "interrupted"
    assert len(read_metrics_csv(cut / "metrics.csv")) == 2
    resumed = mnistlab.train(TrainConfig(resume=str(cut), progress="quiet"))
    assert resumed.path == cut
    a, b = full.summary, resumed.summary
    assert b["status"] == "completed" and b["epochs_run"] == 3
    for key in ("accuracy", "f1_macro", "auc_macro", "best_epoch", "confusion_matrix"):
        assert a[key] == b[key], key
    for ra, rb in zip(full.history, resumed.history):
        assert ra["train_loss"] == rb["train_loss"] and ra["valid_loss"] == rb["valid_loss"]


def test_resume_with_more_epochs_trains_a_finished_run_longer(fake_mnist_root, tmp_path):
    short = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1), name="short")
    straight = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=2), name="straight")
    longer = mnistlab.train(TrainConfig(resume=str(short.path), epochs=2, progress="quiet"))
    assert longer.path == short.path and longer.summary["epochs_run"] == 2
    assert [r["train_loss"] for r in longer.history] == [r["train_loss"] for r in straight.history]
    assert longer.summary["accuracy"] == straight.summary["accuracy"]
    with pytest.raises(mnistlab.errors.MnistlabError, match="already finished its 2 epochs"):
        mnistlab.train(TrainConfig(resume=str(short.path), progress="quiet"))


def test_resume_refuses_what_it_cannot_continue(fake_mnist_root, tmp_path):
    planned = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1, scheduler="onecycle"))
    with pytest.raises(mnistlab.errors.UsageError, match="onecycle schedule plans the learning rate over 1 epochs"):
        mnistlab.train(TrainConfig(resume=str(planned.path), epochs=2, progress="quiet"))
    # lr ~0: the valid loss never improves after epoch 1, so patience 1 stops the run at epoch 2
    stopped = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=10, lr=1e-30, patience=1),
                             name="stopped")
    assert stopped.summary["stop_reason"].startswith("early stopping")
    with pytest.raises(mnistlab.errors.MnistlabError, match="ended by early stopping"):
        mnistlab.train(TrainConfig(resume=str(stopped.path), epochs=40, progress="quiet"))


def test_resume_from_first_epoch(fake_mnist_root, tmp_path):
    c = cfg(fake_mnist_root, tmp_path, model="logistic", epochs=2)
    with pytest.raises(KeyboardInterrupt):
        mnistlab.train(c, name="early", callbacks=[InterruptAt(1)])
    run = mnistlab.train(TrainConfig(resume="early", out=str(tmp_path / "runs"), progress="quiet"))
    assert run.summary["epochs_run"] == 2


def test_divergence_stops_with_clear_message(fake_mnist_root, tmp_path):
    with pytest.raises(TrainingDiverged) as err:
        mnistlab.train(cfg(fake_mnist_root, tmp_path, model="dnn", epochs=3, lr=1e3, optimizer="sgd",
                           model_options={"batchnorm": False, "dropout": False}, name="boom"))
    msg = str(err.value)
    assert "epoch 1" in msg and "step" in msg and "--lr" in msg
    summary = json.loads((tmp_path / "runs" / "boom" / "summary.json").read_text())
    assert summary["status"] == "failed" and "diverged" in summary["stop_reason"]
    assert (tmp_path / "runs" / "boom" / "checkpoints" / "last.pt").is_file()


def test_fractional_epochs(fake_mnist_root, tmp_path):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1.5, batch_size=48))
    assert run.summary["epochs_run"] == 2
    assert math.isfinite(run.history[-1]["train_loss"])


def test_readme_api_example(fake_mnist_root, tmp_path, monkeypatch):
    """The Python example in the README runs as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.setenv("MNISTLAB_DATA", str(fake_mnist_root))
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "logistic" / "summary.json").is_file()


@pytest.mark.slow
def test_real_mnist_fast_run(real_data_root, tmp_path):
    run = mnistlab.train(TrainConfig(data_dir=str(real_data_root), out=str(tmp_path), progress="quiet"))
    assert run.summary["accuracy"] >= 0.98
