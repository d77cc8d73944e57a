"""The training tools: gradient accumulation, EMA of the weights, test-time augmentation, class weights
and the learning-rate finder. Each test shows what the tool does to the numbers, on made data."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_trainer import cfg, cli
from torch import nn

import mnistlab
from mnistlab.class_weights import balanced_weights, imbalance, loss_weights, read_weights_file
from mnistlab.config import TrainConfig
from mnistlab.errors import UsageError
from mnistlab.predict import Predictor
from mnistlab.runs import read_metrics_csv
from mnistlab.scoring import predict_logits
from mnistlab.text.engine import load_text_run, train_text
from mnistlab.training.callbacks import EMA
from mnistlab.training.checkpoint import load_checkpoint
from mnistlab.training.epoch import train_one_epoch
from mnistlab.training.lr_finder import suggest
from mnistlab.training.state import FitState
from mnistlab.tta import SHIFTS, averaged_logits, shifted

CPU = torch.device("cpu")


class FlatLinear(nn.Module):
    """A user's own module: one Linear layer on the flattened image."""

    def __init__(self, inputs: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(inputs, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def weights(run, which: str = "last", key: str = "state_dict") -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run.checkpoint_path(which))
    return ckpt["ema"]["state_dict"] if key == "ema" else ckpt[key]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if tol:
            torch.testing.assert_close(a[k], b[k], **tol, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- gradient accumulation

NO_BN_NO_DROPOUT = {"hidden_dims": (784, 64, 32), "batchnorm": False, "dropout": None}


def test_four_batches_of_16_accumulated_are_one_batch_of_64(fake_mnist_root, tmp_path):
    # 480 training images: batch 16 x 4 and batch 64 both make 8 optimizer steps an epoch; 1/8 epoch is one step.
    c = cfg(fake_mnist_root, tmp_path, model="dnn", model_options=NO_BN_NO_DROPOUT, optimizer="sgd", lr=0.5,
            momentum=0.9, epochs=0.125, seed=3)
    accumulated = mnistlab.train(c, batch_size=16, accumulate=4, name="b16x4")
    big = mnistlab.train(c, batch_size=64, name="b64")
    single = mnistlab.train(c, batch_size=16, epochs=1 / 30, name="b16")  # one step of the first 16 alone
    for run in (accumulated, big, single):
        assert load_checkpoint(run.checkpoint_path("last"))["global_step"] == 1
    assert_same(weights(accumulated), weights(big), rtol=1e-5, atol=1e-6)
    differs = [k for k in weights(big) if not torch.allclose(weights(big)[k], weights(single)[k], atol=1e-4)]
    assert differs  # a batch of 16 is another step: the comparison can fail
    assert accumulated.summary["accuracy"] == pytest.approx(big.summary["accuracy"], abs=0.01)
    assert yaml.safe_load((accumulated.path / "config.yaml").read_text())["accumulate"] == 4


def test_an_epochs_last_step_takes_the_batches_left_and_averages_over_them():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    xs, ys = torch.randn(40, 6), torch.randint(0, 3, (40,))
    batches = [(xs[i : i + 8], ys[i : i + 8]) for i in range(0, 40, 8)]  # 5 batches: steps of 3 and 2
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    result = train_one_epoch(model, batches, opt, None, max_steps=2, max_batches=5, accumulate=3,
                             label_smoothing=0.0, clip_grad=None, autocast=torch.autocast("cpu", enabled=False),
                             device=CPU, bar=None, epoch=1)
    assert result.steps == 2 and result.samples == 40
    ref = nn.Linear(6, 3)
    ref.load_state_dict(start)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.3)
    for lo, hi in ((0, 24), (24, 40)):  # the same two steps on one batch each
        ref_opt.zero_grad()
        nn.functional.cross_entropy(ref(xs[lo:hi]), ys[lo:hi]).backward()
        ref_opt.step()
    assert_same(model.state_dict(), ref.state_dict(), rtol=1e-5, atol=1e-6)


def test_the_schedule_and_the_budget_count_optimizer_steps(fake_mnist_root, tmp_path):
    # 480 images in batches of 64: 8 batches an epoch, 3 steps of 3, 3 and 2 batches with --accumulate 3.
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", batch_size=64, accumulate=3, epochs=2,
                             scheduler="onecycle", lr=0.1, optimizer="sgd"))
    ckpt = load_checkpoint(run.checkpoint_path("last"))
    assert ckpt["global_step"] == 6 and ckpt["scheduler"]["last_epoch"] == 6
    assert ckpt["scheduler"]["total_steps"] == 6
    assert [row["steps"] for row in ckpt["history"]] == [3, 3] and [r["samples"] for r in ckpt["history"]] == [480] * 2


def test_a_fractional_accumulating_run_resumes_at_its_exact_step(fake_mnist_root, tmp_path):
    c = cfg(fake_mnist_root, tmp_path, model="dnn", batch_size=32, accumulate=3, ema=0.9, seed=2)
    straight = mnistlab.train(c, epochs=1, name="straight")
    half = mnistlab.train(c, epochs=0.5, name="half")
    assert load_checkpoint(half.checkpoint_path("last"))["global_step"] == 2  # 15 batches: 5 steps, half is 2
    resumed = mnistlab.train(TrainConfig(resume=str(half.path), epochs=1, progress="quiet"))
    assert_same(weights(straight), weights(resumed))
    assert_same(weights(straight, key="ema"), weights(resumed, key="ema"))
    for key in ("accuracy", "loss", "confusion_matrix"):
        assert straight.summary[key] == resumed.summary[key], key


# ----------------------------------------------------------------------------- EMA of the weights

def _fake_trainer(model: nn.Module) -> types.SimpleNamespace:
    return types.SimpleNamespace(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5))


def test_ema_averages_the_parameters_after_each_step_and_copies_the_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    trainer = _fake_trainer(model)
    ema = EMA(0.2)
    ema.on_fit_start(trainer, FitState())
    assert trainer.eval_model is ema.model and ema.model is not model
    expected = [p.detach().clone() for p in model.parameters()]
    for t in (1, 2, 3):
        trainer.optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        trainer.optimizer.step()
        decay = min(0.2, (1 + t) / (10 + t))  # the warm-up caps the decay early on: 0.18 at step 1
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.parameters())]
    for avg, want in zip(ema.model.parameters(), expected):
        torch.testing.assert_close(avg, want)
    assert not torch.allclose(ema.model[0].weight, model[0].weight)  # the average lags the weights
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)  # copied, not averaged
    assert ema.updates == 3 and not any(p.requires_grad for p in ema.model.parameters())
    ema.on_fit_end(trainer, FitState())
    before = [p.clone() for p in ema.model.parameters()]
    trainer.optimizer.step()  # the hook is gone: the average no longer moves
    assert all(torch.equal(a, b) for a, b in zip(before, ema.model.parameters()))


def test_ema_validates_and_tests_with_the_average_and_never_changes_the_training(fake_mnist_root, tmp_path):
    c = cfg(fake_mnist_root, tmp_path, model="logistic", epochs=2, optimizer="sgd", lr=0.5, seed=1)
    plain = mnistlab.train(c, name="plain")
    averaged = mnistlab.train(c, ema=0.95, name="ema")
    assert_same(weights(plain), weights(averaged))  # the raw weights trained exactly as without
    raw, avg = weights(averaged), weights(averaged, key="ema")
    assert any(not torch.allclose(raw[k], avg[k]) for k in raw)
    last_row = read_metrics_csv(averaged.path / "metrics.csv")[-1]
    on_valid = mnistlab.evaluate(averaged, split="valid", checkpoint="last")
    assert on_valid["loss"] == pytest.approx(float(last_row["valid_loss"]), rel=1e-5)
    assert on_valid["loss"] != pytest.approx(read_metrics_csv(plain.path / "metrics.csv")[-1]["valid_loss"], rel=1e-3)
    tested = mnistlab.evaluate(averaged)
    assert tested["loss"] == pytest.approx(averaged.summary["loss"], rel=1e-6)
    # evaluate, predict, export and load_model all rebuild through the same place: the average.
    model = mnistlab.load_model(averaged)
    assert_same(model.state_dict(), avg)
    assert_same(Predictor.from_run(averaged.path).model.state_dict(), avg)
    assert yaml.safe_load((averaged.path / "config.yaml").read_text())["ema"] == 0.95


def test_ema_resumes_exactly_after_an_interruption(fake_mnist_root, tmp_path):
    class StopAt(mnistlab.Callback):
        def on_epoch_start(self, trainer, state):
            if state.epoch == 3:
                raise KeyboardInterrupt()

    c = cfg(fake_mnist_root, tmp_path, model="dnn", batch_size=64, epochs=3, ema=0.9, seed=4)
    straight = mnistlab.train(c, name="straight")
    with pytest.raises(KeyboardInterrupt):
        mnistlab.train(c, name="cut", callbacks=[StopAt()])
    cut = tmp_path / "runs" / "cut"
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["ema"]["updates"] == 16
    resumed = mnistlab.train(TrainConfig(resume=str(cut), progress="quiet"))
    assert_same(weights(straight, key="ema"), weights(resumed, key="ema"))
    assert_same(weights(straight), weights(resumed))
    assert straight.summary["loss"] == resumed.summary["loss"]


def test_ema_for_a_module_object_and_a_text_run(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    images = rng.integers(0, 40, (90, 8, 8)).astype(np.uint8)
    images[np.arange(90), labels * 2 + 1, 2] = 250
    run = mnistlab.fit(FlatLinear(64, 3), data=(images, labels), epochs=2, ema=0.8, accumulate=2, out=str(tmp_path / "runs"),
                       progress="quiet", plots=False, optimizer="sgd", lr=0.5)
    ckpt = load_checkpoint(run.checkpoint_path("best"))
    assert_same(mnistlab.load_model(run, model=FlatLinear(64, 3)).state_dict(), ckpt["ema"]["state_dict"])

    text = train_text("builtin:sentiment", epochs=1, ema=0.9, accumulate=2, class_weights="balanced",
                      out=str(tmp_path / "runs"), progress="quiet", plots=False)
    ckpt = load_checkpoint(text.checkpoint_path("best"))
    assert_same(load_text_run(text.path).model.state_dict(), ckpt["ema"]["state_dict"])
    assert len(ckpt["class_weights"]) == len(text.summary["per_class"]) == len(text.summary["class_weights"])
    with pytest.raises(UsageError, match="text run"):
        mnistlab.evaluate(text, tta=True)
    with pytest.raises(UsageError, match="text runs"):
        train_text("builtin:sentiment", epochs=1, tta=True, out=str(tmp_path / "runs"), progress="quiet")
    for images_only in ({"augment": True}, {"augment": True, "rotate": 10.0}):
        with pytest.raises(UsageError, match="text runs have none"):
            train_text("builtin:sentiment", epochs=1, out=str(tmp_path / "runs"), progress="quiet", **images_only)


# ----------------------------------------------------------------------------- test-time augmentation

def test_shifted_moves_the_content_and_fills_with_black():
    x = torch.zeros(1, 1, 5, 5, dtype=torch.uint8)
    x[0, 0, 2, 3] = 200
    assert shifted(x, 1, 0)[0, 0, 3, 3] == 200 and shifted(x, 0, -1)[0, 0, 2, 2] == 200
    assert shifted(x, 0, 2)[0, 0].sum() == 0  # pushed out: nothing wraps around
    assert shifted(x, -1, 0).dtype == torch.uint8 and shifted(x, -1, 0).shape == x.shape


def _template_model(spots: list[tuple[int, int]]) -> nn.Module:
    """Class k lights up only when pixel spots[k] is bright: a model that knows one exact position per class."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, len(spots), bias=False))
    with torch.no_grad():
        net[1].weight.zero_()
        for k, (r, c) in enumerate(spots):
            net[1].weight[k, r * 28 + c] = 10.0
    return net.eval()


def test_tta_finds_digits_one_pixel_off_where_the_plain_pass_cannot():
    spots = [(5, 5), (5, 20), (20, 5), (20, 20)]
    model = _template_model(spots)
    images = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    labels = torch.arange(8) % 4
    for i, k in enumerate(labels.tolist()):
        r, c = spots[k]
        dy, dx = SHIFTS[1 + i % 4]  # each one pixel off its class's spot, in each direction
        images[i, 0, r + dy, c + dx] = 255
    plain = predict_logits(model, images, (0.0,), (1.0,))
    assert (plain.argmax(1) == labels).float().mean() < 0.5  # every logit is 0: a guess
    tta = predict_logits(model, images, (0.0,), (1.0,), tta=True)
    assert torch.equal(tta.argmax(1), labels)
    # The log of the mean softmax over the 5 views, and the same numbers from predict's Predictor.
    assert torch.allclose(torch.softmax(tta, 1).sum(1), torch.ones(8))
    predictor = Predictor(model, (0.0,), (1.0,), [str(k) for k in range(4)])
    predictor.tta = True
    assert np.allclose(predictor.predict_logits(images.numpy()), tta.numpy(), atol=1e-6)
    predictor.tta = False
    assert np.allclose(predictor.predict_logits(images.numpy()), plain.numpy())


def test_averaged_logits_is_the_log_of_the_mean_softmax():
    views = []

    def forward(x):
        views.append(x.clone())
        return torch.full((1, 3), float(len(views))) * torch.tensor([[1.0, 0.0, -1.0]])

    out = averaged_logits(forward, torch.zeros(1, 1, 4, 4))
    want = torch.stack([torch.softmax(torch.tensor([v, 0.0, -v]), 0) for v in (1.0, 2, 3, 4, 5)]).mean(0).log()
    assert len(views) == len(SHIFTS) == 5 and torch.allclose(out[0], want)


def test_tta_in_train_evaluate_and_predict_gives_one_answer(fake_mnist_root, tmp_path, capsys):
    run = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1, tta=True))
    assert run.summary["tta"] is True
    with_tta, without = mnistlab.evaluate(run, tta=True), mnistlab.evaluate(run)
    assert with_tta["tta"] is True and without["tta"] is False
    assert with_tta["loss"] == pytest.approx(run.summary["loss"], rel=1e-6)
    assert with_tta["loss"] != pytest.approx(without["loss"], rel=1e-4)
    metrics = tmp_path / "m.json"
    code, out, err = cli(capsys, "predict", str(run.path), "--dataset", "mnist", "--data-dir", str(fake_mnist_root),
                         "--metrics", str(metrics), "--tta")
    assert code == 0, err
    saved = json.loads(metrics.read_text())
    assert saved["tta"] is True and saved["accuracy"] == with_tta["accuracy"]
    assert saved["loss"] == pytest.approx(with_tta["loss"], rel=1e-5)
    assert "(test-time augmentation)" in err
    code, out, _ = cli(capsys, "evaluate", str(run.path), "--tta", "--no-plots")
    assert code == 0 and "test-time augmentation (5 views)" in out


# ----------------------------------------------------------------------------- class weights

def test_balanced_weights_and_weight_files(tmp_path):
    assert balanced_weights([30, 10, 0]) == [40 / 90, 40 / 30, 0.0]
    assert loss_weights(None, [3, 1], ["a", "b"]) is None
    good = tmp_path / "w.json"
    good.write_text('{"b": 3}')
    assert read_weights_file(good, ["a", "b"]) == [1.0, 3.0]
    good.write_text("[0.5, 2]")
    assert loss_weights(str(good), [3, 1], ["a", "b"]) == [0.5, 2.0]
    for text, match in (("[1, 2, 3]", "list of 2 numbers"), ('{"zz": 1}', "names classes"), ("[1, -1]", ">= 0"),
                        ("[0, 0]", "all 0"), ("{nope", "not valid JSON"), ('[1, "x"]', ">= 0")):
        good.write_text(text)
        with pytest.raises(UsageError, match=match):
            read_weights_file(good, ["a", "b"])
    with pytest.raises(UsageError, match="cannot read"):
        read_weights_file(tmp_path / "missing.json", ["a", "b"])
    assert imbalance([30, 10], ["a", "b"]) is None and "3.1:1" in imbalance([31, 10], ["a", "b"])
    assert "no images" in imbalance([5, 0], ["a", "b"])


def _imbalanced_folder(root: Path) -> Path:
    """train/: 300 images of class a, 30 each of b and c; test/: 60 of each. A faint square on noise marks
    the class: the classes overlap, so a model trained without weights favours the big class."""
    rng = np.random.default_rng(0)
    spots = {"a": (7, 7), "b": (7, 20), "c": (20, 14)}
    for split, counts in (("train", {"a": 300, "b": 30, "c": 30}), ("test", {"a": 60, "b": 60, "c": 60})):
        for name, n in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            r, c = spots[name]
            for i in range(n):
                img = rng.integers(0, 120, (28, 28)).astype(np.int32)
                img[r - 2 : r + 3, c - 2 : c + 3] += 20
                Image.fromarray(img.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_balanced_class_weights_raise_the_macro_recall_of_imbalanced_data(tmp_path, capsys):
    data = _imbalanced_folder(tmp_path / "imbalanced")
    code, _, err = cli(capsys, "data", "info", "--dataset", f"folder:{data}")
    assert code == 0 and "warning: the classes are imbalanced: 'a' has 300 training images, 'b' 30 (10.0:1" in err
    c = cfg(tmp_path, tmp_path, dataset=f"folder:{data}", model="logistic", optimizer="sgd", lr=0.05, epochs=3,
            batch_size=32, valid_fraction=0.0)
    plain = mnistlab.train(c, name="plain")
    assert "the classes are imbalanced" in capsys.readouterr().err
    weighted = mnistlab.train(c, class_weights="balanced", name="weighted")
    assert "imbalanced" not in capsys.readouterr().err
    a, b = plain.summary, weighted.summary
    print(f"macro recall {a['recall_macro']:.3f} without weights, {b['recall_macro']:.3f} with")
    assert b["recall_macro"] > a["recall_macro"] + 0.03
    small = [r["recall"] for r in a["per_class"][1:]], [r["recall"] for r in b["per_class"][1:]]
    assert sum(small[1]) > sum(small[0])  # the small classes are found more often
    assert b["class_weights"] == pytest.approx([360 / 900, 360 / 90, 360 / 90])


def test_no_imbalance_warning_for_balanced_data(fake_mnist_root, tmp_path, capsys):
    cli(capsys, "data", "info", "--data-dir", str(fake_mnist_root))
    mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=1))
    assert "imbalanced" not in capsys.readouterr().err


def test_a_weights_file_is_recorded_and_a_resume_keeps_the_weights_it_trained_with(fake_mnist_root, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("w.json").write_text(json.dumps({"3": 5.0, "7": 0.2}))
    c = cfg(fake_mnist_root, tmp_path, model="dnn", batch_size=32, class_weights="w.json")
    straight = mnistlab.train(c, epochs=1, name="straight")
    recorded = yaml.safe_load((straight.path / "config.yaml").read_text())["class_weights"]
    assert recorded == str(tmp_path / "w.json")
    half = mnistlab.train(c, epochs=0.5, name="half")
    Path("w.json").write_text("[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]")  # edited after the run started
    resumed = mnistlab.train(TrainConfig(resume=str(half.path), epochs=1, progress="quiet"))
    assert_same(weights(straight), weights(resumed))
    assert resumed.summary["class_weights"][3] == 5.0
    rerun = mnistlab.train(c, epochs=1, name="rerun")
    assert rerun.summary["class_weights"] == [1.0] * 10  # a new run reads the file as it is now


# ----------------------------------------------------------------------------- learning-rate finder

def test_the_suggestion_rules():
    lrs = [10 ** (-6 + 0.1 * i) for i in range(61)]  # 1e-6 .. 1
    # falls fastest at 1e-3 (a tanh step), lowest at 1e-1, then rises
    loss = [2 - math.tanh(3 * (math.log10(lr) + 3)) + max(0.0, math.log10(lr) + 1) ** 2 * 5 for lr in lrs]
    assert suggest(lrs, loss, "min10") == pytest.approx(lrs[loss.index(min(loss))] / 10)
    assert suggest(lrs, loss, "steepest") == pytest.approx(1e-3, rel=0.3)
    with pytest.raises(UsageError, match="too few"):
        suggest(lrs[:5], loss[:5], "min10")
    with pytest.raises(UsageError, match="fell by less than 5%"):
        suggest(lrs, sorted(loss), "min10")
    with pytest.raises(UsageError, match="fell by less than 5%"):
        suggest(lrs, [2.0 - 0.001 * i for i in range(61)], "min10")  # a flat, noiseless curve


def test_lr_find_tests_a_copy_and_its_suggestion_trains(fake_mnist_root, tmp_path):
    torch.manual_seed(0)
    net = FlatLinear(784, 10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = mnistlab.lr_find(model=net, data_dir=str(fake_mnist_root), optimizer="sgd", batch_size=32,
                              steps=60, start_lr=1e-6, end_lr=1e4, progress="quiet", plot=tmp_path / "lr.png")
    assert_same(net.state_dict(), before)  # the object itself never trained
    assert (tmp_path / "lr.png").stat().st_size > 1000
    assert result.stopped.startswith("stopped at lr")  # lr 1e4 with SGD blows the loss up before the end
    assert len(result.lrs) < 60 and result.lrs[0] == 1e-6
    c = cfg(fake_mnist_root, tmp_path, model="logistic", optimizer="sgd", batch_size=32, epochs=1, valid_fraction=0.2)
    at_suggestion = mnistlab.train(c, lr=result.suggestion, name="suggested")
    far_below = mnistlab.train(c, lr=result.suggestion / 1e4, name="tiny")
    assert at_suggestion.summary["accuracy"] > 0.9 > far_below.summary["accuracy"]


def test_lr_find_command(fake_mnist_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["lr-find", "--model", "logistic", "--data-dir", str(fake_mnist_root), "--steps", "40"]
    code, out, err = cli(capsys, *base)
    assert code == 0, err
    assert "suggested lr" in out and "rule min10: the lr of the lowest smoothed loss, divided by 10" in out
    assert Path("lr-find.png").is_file() and not Path("runs").exists()  # nothing trained, nothing saved
    code, out, err = cli(capsys, *base, "--apply", "--epochs", "1", "--quiet", "--rule", "steepest", "--json",
                         "--plot", "s.png")
    assert code == 0, err
    found = json.loads(out)  # stdout is the one JSON object; the run that follows reports on stderr
    assert "training with --lr" in err
    assert found["rule"] == "steepest" and len(found["lrs"]) == len(found["smoothed"]) <= 40
    config = yaml.safe_load((tmp_path / "runs" / "logistic" / "config.yaml").read_text())
    assert config["lr"] == found["suggestion"]  # applied only because --apply said so
    for bad, message in ((["--lr", "0.1"], "leave out --lr"), (["--start-lr", "1", "--end-lr", "0.1"], "--start-lr"),
                         (["--steps", "1"], "--steps"), (["--resume", "runs/logistic"], "--resume"),
                         (["--plot", "lr.txt"], "use a .png file name")):
        code, _, err = cli(capsys, *base, *bad)
        assert code == 2 and message in err and "Traceback" not in err, (bad, err)


def test_lr_find_ends_on_sigterm_with_one_line_and_exit_143(fake_mnist_root, tmp_path, capsys, monkeypatch):
    import os
    import signal

    from mnistlab.training import lr_finder

    real, calls = lr_finder.train_one_epoch, []

    def step_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # as `timeout` or a scheduler sends it
        return real(*args, **kwargs)

    monkeypatch.setattr(lr_finder, "train_one_epoch", step_then_sigterm)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "lr-find", "--model", "logistic", "--data-dir", str(fake_mnist_root))
    assert code == 143 and "terminated (SIGTERM) during the range test; nothing was saved" in err
    assert len(calls) <= 6 and not Path("lr-find.png").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone afterwards


# ----------------------------------------------------------------------------- flags, config.yaml, resume

def test_flags_are_recorded_refused_when_bad_and_fixed_on_resume(fake_mnist_root, tmp_path, capsys):
    out = str(tmp_path / "runs")
    common = ["train", "--model", "logistic", "--data-dir", str(fake_mnist_root), "--out", out, "--quiet",
              "--no-plots"]
    code, _, err = cli(capsys, *common, "--epochs", "1", "--ema", "0.99", "--accumulate", "2", "--tta",
                       "--class-weights", "balanced", "--name", "tools")
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "runs" / "tools" / "config.yaml").read_text())
    assert (config["ema"], config["accumulate"], config["tta"], config["class_weights"]) == (0.99, 2, True, "balanced")
    code, _, err = cli(capsys, "train", "--config", str(tmp_path / "runs" / "tools" / "config.yaml"), "--name", "again",
                       "--data-dir", str(fake_mnist_root), "--out", out, "--quiet")
    assert code == 0, err
    again = yaml.safe_load((tmp_path / "runs" / "again" / "config.yaml").read_text())
    assert {k: again[k] for k in ("ema", "accumulate", "tta", "class_weights")} == \
        {k: config[k] for k in ("ema", "accumulate", "tta", "class_weights")}
    for bad, message in ((["--ema", "1"], "bad ema"), (["--ema", "x"], "--ema"), (["--accumulate", "0"], "accumulate"),
                         (["--class-weights", str(tmp_path / "none.json")], "cannot read the class weights file")):
        code, _, err = cli(capsys, *common, *bad)
        assert code == 2 and message in err and "Traceback" not in err, (bad, err)
    code, _, err = cli(capsys, "train", "--resume", str(tmp_path / "runs" / "tools"), "--ema", "0.5")
    assert code == 2 and "--ema" in err
    code, _, err = cli(capsys, *common, "--epochs", "1", "--ema", "off", "--name", "off")
    assert code == 0 and yaml.safe_load((tmp_path / "runs" / "off" / "config.yaml").read_text())["ema"] == 0
    assert "ema" not in load_checkpoint(tmp_path / "runs" / "off" / "checkpoints" / "last.pt")


# ----------------------------------------------------------------------------- under torchrun

@pytest.mark.slow
def test_two_processes_accumulate_like_one_and_every_rank_holds_the_same_average(fake_mnist_root, tmp_path):
    from test_distributed import _torchrun

    script = tmp_path / "ddp_tools.py"
    script.write_text(f"""
import sys, torch, mnistlab

class Probe(mnistlab.Callback):
    main_only = False  # runs on every rank
    def on_epoch_end(self, trainer, state):
        torch.save(trainer.eval_model.state_dict(), {str(tmp_path)!r} + f"/avg-{{trainer.strategy.rank}}.pt")

mnistlab.train(mnistlab.TrainConfig(model="logistic", data_dir={str(fake_mnist_root)!r}, out={str(tmp_path)!r} + "/ddp",
               epochs=2, batch_size=32, accumulate=3, ema=0.9, device="cpu", progress="quiet", plots=False),
               callbacks=[Probe()])
""")
    proc = _torchrun([str(script)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"avg-{r}.pt", weights_only=True) for r in (0, 1)]
    assert_same(ranks[0], ranks[1])  # the same average on both ranks, bit for bit
    ddp = mnistlab.load_run(tmp_path / "ddp" / "logistic")
    assert_same(weights(ddp, key="ema"), ranks[0])
    one = mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=2, batch_size=32, accumulate=3,
                             ema=0.9, device="cpu", name="one"))
    # The global batch of 32 is 16 per rank; 3 of them a step, gradients averaged over the ranks.
    assert load_checkpoint(ddp.checkpoint_path("last"))["global_step"] == load_checkpoint(
        one.checkpoint_path("last"))["global_step"]
    assert_same(weights(ddp), weights(one), rtol=1e-4, atol=1e-5)
    assert ddp.summary["loss"] == pytest.approx(one.summary["loss"], rel=1e-3)


def test_tta_mirrors_colour_images_and_never_digits():
    from mnistlab.tta import views

    gray = torch.zeros(2, 1, 8, 8)
    gray[..., 0] = 1  # a bright left column: its mirror would be a right column
    colour = gray.repeat(1, 3, 1, 1)
    assert len(views(gray)) == len(SHIFTS) and not any(bool(v[..., -1].any()) for v in views(gray))
    seen = views(colour)
    assert len(seen) == len(SHIFTS) + 1 and torch.equal(seen[-1], colour.flip(-1))
    # A model that tells left from right: TTA's average on colour includes the mirrored vote.
    probs = torch.softmax(averaged_logits(lambda x: torch.stack([x[:, :, :, 0].sum((1, 2)),
                                                                 x[:, :, :, -1].sum((1, 2))], 1), colour), 1)
    # views: itself, down, up (the left class, surely), right, left (nothing lit at either edge: 50/50),
    # and the mirror (the right class): 2 of 6; without the mirror it would be 1 of 5.
    assert float(probs[0, 1]) == pytest.approx(2 / 6, abs=1e-4)


# ----------------------------------------------------------------------------- found by trying to break it

def test_a_fractional_accumulating_run_resumed_writes_the_metrics_of_a_straight_run(fake_mnist_root, tmp_path):
    # 15 batches of 32, 4 a step: steps of 4, 4, 4 and 3 batches. Half the epoch is 2 steps (8 batches), the
    # rest 2 steps of 7: merging the two parts' train_loss by steps (2 and 2) was not the mean of the 15.
    c = cfg(fake_mnist_root, tmp_path, model="logistic", batch_size=32, accumulate=4, seed=2)
    straight = mnistlab.train(c, epochs=1, name="straight")
    half = mnistlab.train(c, epochs=0.5, name="half")
    resumed = mnistlab.train(TrainConfig(resume=str(half.path), epochs=1, progress="quiet"))
    keys = ("epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "lr")
    rows = [[{k: row[k] for k in keys} for row in read_metrics_csv(run.path / "metrics.csv")]
            for run in (straight, resumed)]
    assert rows[0] == rows[1]


@pytest.mark.parametrize("weight", [1e300, 1e39, float("inf")])
def test_a_class_weight_too_large_for_float32_is_refused_before_training(tmp_path, weight):
    # 1e300 is a finite JSON number, but inf as the float32 weight of the loss: the run diverged at step 1.
    path = tmp_path / "w.json"
    path.write_text(json.dumps([weight, 1, 1]))
    with pytest.raises(UsageError, match="<= 1e"):
        read_weights_file(path, ["a", "b", "c"])
    path.write_text(json.dumps([1e30, 1, 1]))
    assert read_weights_file(path, ["a", "b", "c"])[0] == 1e30


def test_lr_find_refuses_a_plot_it_cannot_write_before_the_test(tmp_path, monkeypatch):
    # The plot was written after the whole range test: a folder, or a file where its folder should be,
    # failed only then (exit 1), the test's minutes lost.
    from mnistlab.training import lr_finder

    monkeypatch.setattr(lr_finder, "range_test", lambda *a, **k: pytest.fail("the range test ran"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dir.png").mkdir()
    for plot, match in ((tmp_path / "afile" / "x.png", "not a writable folder"), (tmp_path / "dir.png", "a folder")):
        with pytest.raises(UsageError, match=match):
            mnistlab.lr_find(model="logistic", plot=plot, data_dir=str(tmp_path))


def test_a_class_without_training_images_is_not_advised_class_weights(tmp_path, capsys):
    # balanced weighs a class of no training images 0: the warning advised --class-weights balanced anyway.
    data = tmp_path / "holes"
    for cls, n in (("a", 12), ("b", 0)):
        (data / "train" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((28, 28), 20 * i, np.uint8)).save(data / "train" / cls / f"{i}.png")
    code, _, err = cli(capsys, "data", "info", "--dataset", f"folder:{data}")
    assert code == 0 and "'b' 0 (no images" in err and "add training images of it" in err
    assert "--class-weights" not in err


def test_a_finished_fractional_run_resumed_for_its_test_pass_keeps_its_train_loss():
    # Ctrl-C during the test pass of a fractional run; `--resume` trains 0 more steps of the partial epoch,
    # whose loss is NaN (no batches): merged by steps, 0 * NaN made metrics.csv's train_loss NaN.
    from mnistlab.training.epoch import EpochResult, epoch_row, merge_rows

    first = epoch_row(1, EpochResult(loss=0.5, accuracy=0.75, seconds=1.0, steps=2, samples=8, batches=6,
                                     loss_sum=3.0), 0.1)
    rest = epoch_row(1, EpochResult(loss=math.nan, accuracy=0.0, seconds=0.0, steps=0), 0.1)
    merged = merge_rows(first, rest)
    assert (merged["train_loss"], merged["train_accuracy"], merged["steps"]) == (0.5, 0.75, 2)
    old = {k: v for k, v in first.items() if k not in ("batches", "loss_sum")}  # a row of an older run
    assert merge_rows(old, rest)["train_loss"] == 0.5


@pytest.mark.parametrize("value", [[1.0] * 10, {"3": 2.0}, 5])
def test_class_weights_given_as_numbers_from_python_are_a_usage_error(fake_mnist_root, tmp_path, value):
    # mnistlab.train(class_weights=[...]) raised a TypeError from pathlib, before any run folder.
    with pytest.raises(UsageError, match="path of a JSON file"):
        mnistlab.train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=0.1), class_weights=value)
    assert not (tmp_path / "runs").exists()


def test_lr_find_refuses_an_unknown_rule_before_the_test(tmp_path, monkeypatch):
    # mnistlab.lr_find(rule="max") ran the whole range test, then said the rule was bad.
    from mnistlab.training import lr_finder

    monkeypatch.setattr(lr_finder, "seed_everything", lambda *a: pytest.fail("the range test started"))
    with pytest.raises(UsageError, match="bad rule 'max'"):
        mnistlab.lr_find(model="logistic", rule="max", plot=None, data_dir=str(tmp_path))


@pytest.mark.parametrize("start, end", [(1e-7, math.inf), (1e-7, 1e308), (1e-320, 10.0)])
def test_lr_find_refuses_an_infinite_range_before_the_test(tmp_path, monkeypatch, start, end):
    # --end-lr inf (or a ratio over float's range) made every rate after the first inf: "the loss exploded
    # after 2 steps ... lower --start-lr", which was not the cause.
    from mnistlab.training import lr_finder

    monkeypatch.setattr(lr_finder, "seed_everything", lambda *a: pytest.fail("the range test started"))
    with pytest.raises(UsageError, match="finite"):
        mnistlab.lr_find(model="logistic", start_lr=start, end_lr=end, plot=None, data_dir=str(tmp_path))


def test_evaluate_says_six_views_for_a_colour_run(tmp_path, capsys):
    # Colour images get a sixth view (the mirror), but evaluate printed "(5 views)" for every run.
    from mnistlab.tta import view_count

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls in ("a", "b"):
            (tmp_path / "colour" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(
                    tmp_path / "colour" / split / cls / f"{i}.png")
    run = mnistlab.train(dataset=f"folder:{tmp_path / 'colour'}", model="logistic", epochs=1, progress="quiet",
                         plots=False, out=str(tmp_path / "runs"))
    code, out, _ = cli(capsys, "evaluate", str(run.path), "--tta", "--no-plots")
    assert code == 0 and "test-time augmentation (6 views)" in out
    assert mnistlab.evaluate(run.path, tta=True, plots=False)["tta_views"] == view_count(3) == 6


# ----------------------------------------------------------------------------- rotation and scaling (--rotate, --zoom)

def _bar_images(n: int) -> torch.Tensor:
    """n copies of a centred vertical bar, 2 px wide and 16 px long: its angle and length are easy to measure."""
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 6:22, 13:15] = 255
    return images


def _angle_and_length(image: torch.Tensor) -> tuple[float, float]:
    """The bar's tilt from vertical in degrees and its length, from the second moments of its pixels."""
    w = image.double().squeeze()
    ys, xs = torch.meshgrid(torch.arange(28.0, dtype=torch.float64), torch.arange(28.0, dtype=torch.float64),
                            indexing="ij")
    m = w.sum()
    cy, cx = (w * ys).sum() / m, (w * xs).sum() / m
    cov = torch.tensor([[(w * (ys - cy) ** 2).sum(), (w * (ys - cy) * (xs - cx)).sum()],
                        [(w * (ys - cy) * (xs - cx)).sum(), (w * (xs - cx) ** 2).sum()]]) / m
    values, vectors = torch.linalg.eigh(cov)
    dy, dx = vectors[:, 1]  # the long axis
    angle = math.degrees(math.atan2(float(dx), float(dy)))
    angle = (angle + 90) % 180 - 90
    return angle, math.sqrt(12 * float(values[1]))  # a uniform segment of length L has variance L^2/12


def test_warp_turns_an_image_about_its_centre_and_leaves_it_alone_at_zero():
    from mnistlab.data.loader import warp_images

    bar = _bar_images(1).float()
    assert torch.allclose(warp_images(bar, torch.zeros(1), torch.ones(1)), bar, atol=1e-3)
    turned = warp_images(bar, torch.tensor([math.pi / 2]), torch.ones(1))
    rows = (turned[0, 0] > 128).nonzero()[:, 0].unique().tolist()
    assert rows == [13, 14]  # the vertical bar lies across the middle rows now
    assert abs(_angle_and_length(warp_images(bar, torch.tensor([math.radians(20)]), torch.ones(1)))[0]) == \
        pytest.approx(20, abs=1.5)
    assert _angle_and_length(warp_images(bar, torch.zeros(1), torch.tensor([1.25])))[1] == \
        pytest.approx(1.25 * _angle_and_length(bar)[1], rel=0.05)


def test_rotate_and_zoom_spread_the_training_images_over_their_ranges():
    from mnistlab.data import BatchIterator
    from mnistlab.data.augment import Augment

    images, labels = _bar_images(400), torch.zeros(400, dtype=torch.long)

    def measured(kind: Augment) -> tuple[list[float], list[float]]:
        batches = BatchIterator(images, labels, batch_size=100, mean=0.0, std=1.0, shuffle=True, augment=kind)
        x = torch.cat([b for b, _ in batches]) * 255
        pairs = [_angle_and_length(img) for img in x]
        return [a for a, _ in pairs], [length for _, length in pairs]

    angles, lengths = measured(Augment(0, rotate=20))
    assert max(angles) > 15 and min(angles) < -15 and max(map(abs, angles)) < 21.5
    angles, lengths = measured(Augment(0, zoom=0.2))
    base = _angle_and_length(images[0])[1]
    assert max(lengths) > 1.15 * base and min(lengths) < 0.85 * base and max(map(abs, angles)) < 1
    angles, _ = measured(Augment(0))
    assert max(map(abs, angles)) < 1e-6  # shifts alone never turn an image


def test_warps_are_drawn_after_the_shifts_so_runs_without_them_see_the_same_batches():
    from mnistlab.data import BatchIterator
    from mnistlab.data.augment import Augment

    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (300, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (300,), generator=g)

    def epoch(kind, batch_size=64, e=2):
        it = BatchIterator(images, labels, batch_size=batch_size, mean=0.1, std=0.3, shuffle=True, seed=5, augment=kind)
        it.set_epoch(e)
        return torch.cat([x for x, _ in it]), torch.cat([y for _, y in it])

    plain, same = epoch(Augment(2)), epoch(Augment(2, rotate=0.0, zoom=0.0))
    assert torch.equal(plain[0], same[0]) and torch.equal(plain[1], same[1])
    warped, labels_w = epoch(Augment(2, rotate=10, zoom=0.1))
    assert torch.equal(labels_w, plain[1]) and not torch.allclose(warped, plain[0])
    again, _ = epoch(Augment(2, rotate=10, zoom=0.1), batch_size=37)  # a pure function of (seed, epoch)
    torch.testing.assert_close(again, warped)
    assert not torch.allclose(epoch(Augment(2, rotate=10, zoom=0.1), e=3)[0], warped)


@pytest.mark.parametrize("kind", [dict(max_shift=2, rotate=10, zoom=0.1), dict(max_shift=2, flip=True, rotate=10),
                                  dict(max_shift=1, flip=True)])
def test_a_streamed_dataset_is_augmented_with_the_draws_of_resident_images(kind):
    """StreamBatches (a Dataset too large for memory, in mnistlab.fit) once ignored --augment, rotate and zoom."""
    from mnistlab.data import BatchIterator
    from mnistlab.data.augment import Augment
    from mnistlab.data.given import StreamBatches, StreamedImages

    g = torch.Generator().manual_seed(4)
    channels = 3 if kind.get("flip") else 1
    images = torch.randint(0, 256, (90, channels, 12, 12), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (90,), generator=g)
    items = [(images[i], int(labels[i])) for i in range(90)]
    common = dict(batch_size=32, mean=0.2, std=0.3, seed=7)
    resident = BatchIterator(images, labels, shuffle=True, augment=Augment(**kind), **common)
    streamed = StreamBatches(StreamedImages(items, range(90), (channels, 12, 12)), labels, device="cpu",
                             augment=Augment(**kind), **common)
    plain = StreamBatches(StreamedImages(items, range(90), (channels, 12, 12)), labels, device="cpu", **common)
    for epoch in (0, 3):
        resident.set_epoch(epoch), streamed.set_epoch(epoch), plain.set_epoch(epoch)
        a, b, c = list(resident), list(streamed), list(plain)
        assert len(a) == len(b) == 3
        for (xa, ya), (xb, yb), (xc, _) in zip(a, b, c):
            assert torch.equal(ya, yb) and not torch.allclose(xb, xc)
            torch.testing.assert_close(xb, xa)


def test_rotate_and_zoom_are_recorded_checked_and_resume_exactly(fake_mnist_root, tmp_path, capsys):
    out = str(tmp_path / "runs")
    common = ["train", "--model", "logistic", "--data-dir", str(fake_mnist_root), "--out", out, "--quiet", "--no-plots"]
    code, _, err = cli(capsys, *common, "--epochs", "2", "--augment", "--rotate", "12", "--zoom", "0.15",
                       "--name", "warp")
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "runs" / "warp" / "config.yaml").read_text())
    assert (config["augment"], config["rotate"], config["zoom"]) == (True, 12.0, 0.15)
    straight = read_metrics_csv(tmp_path / "runs" / "warp" / "metrics.csv")
    code, _, err = cli(capsys, *common, "--epochs", "1", "--augment", "--rotate", "12", "--zoom", "0.15",
                       "--name", "half")
    code, _, err = cli(capsys, "train", "--resume", str(tmp_path / "runs" / "half"), "--epochs", "2", "--quiet")
    assert code == 0, err
    resumed = read_metrics_csv(tmp_path / "runs" / "half" / "metrics.csv")
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in straight]
    for bad, message in ((["--rotate", "10"], "pass --augment too"), (["--augment", "--zoom", "1"], "bad zoom 1.0: a number from 0 to below 1"),
                         (["--augment", "--zoom", "-0.1"], "bad zoom -0.1: a number from 0 to below 1"),
                         (["--augment", "--zoom", "nan"], "bad zoom nan"),
                         (["--augment", "--rotate", "-5"], "rotate"), (["--augment", "--rotate", "x"], "--rotate")):
        code, _, err = cli(capsys, *common, *bad)
        assert code == 2 and message in err and "Traceback" not in err, (bad, err)


# ----------------------------------------------------------------------------- the best epoch by accuracy (--monitor)

def test_monitor_valid_accuracy_picks_the_most_accurate_epoch_where_the_loss_picks_another():
    from mnistlab.training.callbacks import EarlyStop

    rows = [(0.30, 0.950), (0.20, 0.970), (0.25, 0.980), (0.28, 0.980), (0.35, 0.975)]  # (valid loss, accuracy)

    def best_epochs(monitor: str, patience: int = 0) -> tuple[int, list[int], str | None]:
        early, state, improved = EarlyStop(patience, monitor), FitState(), []
        trainer = types.SimpleNamespace(budget=types.SimpleNamespace(steps_per_epoch=10))
        for epoch, (loss, acc) in enumerate(rows, 1):
            state.epoch, state.row = epoch, {"valid_loss": loss, "valid_accuracy": acc, "steps": 10}
            early.on_validation_end(trainer, state)
            improved += [epoch] if state.improved else []
            if state.stop_reason is not None:
                break
        return state.best_epoch, improved, state.stop_reason

    assert best_epochs("valid_loss")[:2] == (2, [1, 2])
    assert best_epochs("valid_accuracy")[:2] == (3, [1, 2, 3])  # a tie (epoch 4) keeps the first
    best, _, reason = best_epochs("valid_accuracy", patience=2)
    assert best == 3 and reason == "early stopping: valid accuracy did not improve for 2 epochs (best 98.00% at epoch 3)"


def test_monitor_valid_accuracy_makes_best_pt_and_the_summary_the_most_accurate_epoch(fake_mnist_root, tmp_path):
    from mnistlab.training.engine import train

    run = train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=6, lr=0.5, label_smoothing=0.6,
                    monitor="valid_accuracy", name="acc"))
    rows = read_metrics_csv(run.path / "metrics.csv")
    accs = [r["valid_accuracy"] for r in rows]
    best = accs.index(max(accs)) + 1
    assert run.summary["best_epoch"] == best and load_checkpoint(run.checkpoint_path("best"))["epoch"] == best
    assert run.summary["best_valid_loss"] == pytest.approx(rows[best - 1]["valid_loss"])
    assert run.summary["best_valid_accuracy"] == max(accs) and run.summary["checkpoint"] == "best"
    with pytest.raises(UsageError, match="bad monitor 'accuracy'"):
        train(cfg(fake_mnist_root, tmp_path, model="logistic", monitor="accuracy"))


def test_without_a_validation_split_both_monitors_record_the_best_epochs_train_loss(fake_mnist_root, tmp_path):
    from mnistlab.training.engine import train

    for monitor in ("valid_loss", "valid_accuracy"):
        run = train(cfg(fake_mnist_root, tmp_path, model="logistic", epochs=2, valid_fraction=0.0, monitor=monitor,
                        name=monitor))
        rows = read_metrics_csv(run.path / "metrics.csv")
        best = rows[run.summary["best_epoch"] - 1]
        assert run.summary["best_valid_loss"] == pytest.approx(best["train_loss"]), monitor


def test_a_best_run_from_before_rotate_zoom_and_monitor_resumes_as_it_trained(fake_mnist_root, tmp_path, capsys):
    """best's recipe gained rotate, zoom and monitor; a run folder written without them must not pick them up."""
    out = str(tmp_path / "runs")
    code, _, err = cli(capsys, "train", "--model", "best", "--set", "width=4", "--data-dir", str(fake_mnist_root),
                       "--out", out, "--epochs", "1", "--batch-size", "200", "--scheduler", "none", "--quiet", "--no-plots",
                       "--name", "old")
    assert code == 0, err
    path = tmp_path / "runs" / "old" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    assert (config["rotate"], config["zoom"], config["monitor"]) == (10.0, 0.1, "valid_accuracy")
    for key in ("rotate", "zoom", "monitor"):
        del config[key]
    path.write_text(yaml.safe_dump(config))
    code, _, err = cli(capsys, "train", "--resume", str(tmp_path / "runs" / "old"), "--epochs", "2", "--quiet")
    assert code == 0, err
    resumed = yaml.safe_load(path.read_text())
    assert (resumed["rotate"], resumed["zoom"], resumed["monitor"]) == (0.0, 0.0, "valid_loss")


def test_every_reader_of_an_old_config_takes_the_absent_fields_as_it_trained(fake_mnist_root, tmp_path, capsys):
    """A config.yaml without rotate/zoom/monitor: its resume takes `--rotate 0`, a sweep sees other settings than
    best's recipe now, and compare names how it deviates from that recipe."""
    from mnistlab.compare import key_options
    from mnistlab.config import resolve_config
    from mnistlab.runs import load_run
    from mnistlab.sweep import config_changes

    out = str(tmp_path / "runs")
    code, _, err = cli(capsys, "train", "--model", "best", "--set", "width=4", "--data-dir", str(fake_mnist_root),
                       "--out", out, "--epochs", "1", "--batch-size", "200", "--scheduler", "none", "--quiet",
                       "--no-plots", "--name", "old")
    assert code == 0, err
    run_dir = tmp_path / "runs" / "old"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    for key in ("rotate", "zoom", "monitor"):
        del config[key]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    fields = {k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__}
    now = resolve_config(TrainConfig.from_dict(fields)).to_dict()  # the same command today: best's recipe now
    changes = config_changes(run_dir, now)
    assert {"rotate 0 -> 10", "zoom 0 -> 0.1", "monitor valid_loss -> valid_accuracy"} <= set(changes), changes
    options = key_options(load_run(run_dir).config).split()
    assert {"rotate=0", "zoom=0", "monitor=valid_loss"} <= set(options), options
    code, _, err = cli(capsys, "train", "--resume", str(run_dir), "--epochs", "2", "--rotate", "0",
                       "--monitor", "valid_loss", "--quiet")
    assert code == 0, err
    code, _, err = cli(capsys, "train", "--resume", str(run_dir), "--epochs", "3", "--augment", "--rotate", "10")
    assert code == 2 and "--rotate cannot change" in err, err


def test_no_augment_switches_off_the_recipes_rotations_but_refuses_the_users(fake_mnist_root, tmp_path):
    from mnistlab.config import resolve_config

    off = resolve_config(TrainConfig(model="best", augment=False))
    assert (off.augment, off.rotate, off.zoom) == (False, 0.0, 0.0)
    on = resolve_config(TrainConfig(model="best"))
    assert (on.augment, on.rotate, on.zoom, on.monitor) == (True, 10.0, 0.1, "valid_accuracy")
    with pytest.raises(UsageError, match="pass --augment too"):
        resolve_config(TrainConfig(model="best", augment=False, rotate=5.0))


def test_monitor_for_a_text_run_and_a_module_object(tmp_path):
    text = train_text("builtin:sentiment", epochs=3, monitor="valid_accuracy", out=str(tmp_path / "runs"),
                      progress="quiet", plots=False)
    accs = [r["valid_accuracy"] for r in read_metrics_csv(text.path / "metrics.csv")]
    assert text.summary["best_epoch"] == accs.index(max(accs)) + 1 and text.config["monitor"] == "valid_accuracy"
    rng = np.random.default_rng(1)
    labels = np.arange(90) % 3
    images = rng.integers(0, 40, (90, 8, 8)).astype(np.uint8)
    images[np.arange(90), labels * 2 + 1, 2] = 250
    run = mnistlab.fit(FlatLinear(64, 3), data=(images, labels), epochs=3, monitor="valid_accuracy",
                       out=str(tmp_path / "runs"), progress="quiet", plots=False, optimizer="sgd", lr=0.5)
    accs = [r["valid_accuracy"] for r in read_metrics_csv(run.path / "metrics.csv")]
    assert run.summary["best_epoch"] == accs.index(max(accs)) + 1
