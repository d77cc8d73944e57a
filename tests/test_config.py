"""Config layering (defaults < recipe < file < flags), validation and YAML round trip."""

import dataclasses

import pytest
import yaml

from mnistlab.cli import build_parser
from mnistlab.cli.common import config_from_args
from mnistlab.config import TrainConfig, load_config_file, resolve_config
from mnistlab.errors import UsageError
from mnistlab.models import get_model_info


def parse(argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_recipe_fills_unset_fields_and_flags_win():
    recipe = get_model_info("dnn").recipe
    cfg = resolve_config(TrainConfig(model="dnn"))
    assert cfg.optimizer == recipe["optimizer"] == "adam"
    assert cfg.batch_size == recipe["batch_size"] == 32
    assert cfg.patience == 3
    cfg = resolve_config(parse(["--model", "dnn", "--batch-size", "64", "--lr", "0.01"]))
    assert (cfg.batch_size, cfg.lr, cfg.optimizer) == (64, 0.01, "adam")


def test_config_file_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: dnn\nepochs: 3\nbatch-size: 16\nset:\n  hidden_dims: [784, 128, 128, 128]\n")
    cfg = resolve_config(parse(["--config", str(f), "--epochs", "5", "--set", "batchnorm=false"]))
    assert cfg.model == "dnn" and cfg.epochs == 5 and cfg.batch_size == 16
    assert cfg.model_options == {"hidden_dims": (784, 128, 128, 128), "batchnorm": False}


def test_round_trip_through_yaml(tmp_path):
    cfg = resolve_config(TrainConfig(model="cnn-bn", epochs=2, model_options={"dropout": 0.3}))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**cfg.to_dict(), "package_version": "x"}))
    again = resolve_config(TrainConfig.from_dict(load_config_file(path)))
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--optimizer", "sgdd"], "optimizer"),
        (["--scheduler", "linear"], "scheduler"),
        (["--lr", "-1"], "lr"),
        (["--valid-fraction", "1.5"], "valid-fraction"),
        (["--batch-size", "0"], "batch-size"),
        (["--init", "he"], "init"),
        (["--model", "dnnn"], "did you mean"),
        (["--model", "dnn", "--set", "hidden=3"], "no option"),
        (["--set", "novalue"], "key=value"),
    ],
)
def test_bad_values_are_usage_errors(argv, words):
    with pytest.raises(UsageError) as err:
        resolve_config(parse(argv))
    assert words.lower() in str(err.value).lower()


def test_unknown_key_in_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epoch: 3\n")
    with pytest.raises(UsageError, match="Did you mean: epochs"):
        load_config_file(f)


def test_yaml_is_loaded_safely(tmp_path):
    f = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    f.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config_file(f)
    assert not marker.exists()


def test_config_values_are_typed_by_their_field(tmp_path):
    # YAML 1.1 reads 1e-3 as a string, and "false" in quotes stays one (a true value in Python).
    f = tmp_path / "c.yaml"
    f.write_text('model: logistic\nlr: 1e-3\nweight_decay: 5E-4\nstratify: "false"\naugment: "yes"\n'
                 'batch_size: "32"\nepochs: 2.0\nclip_grad: none\nbetas: "0.8, 0.9"\n')
    cfg = resolve_config(parse(["--config", str(f)]))
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.clip_grad) == (0.001, 0.0005, 32, 2.0, 0.0)  # clip_grad none: clipping off
    assert cfg.stratify is False and cfg.augment is True and cfg.betas == (0.8, 0.9)
    assert isinstance(cfg.batch_size, int) and isinstance(cfg.lr, float)


@pytest.mark.parametrize(
    "line, words",
    [("lr: fast", "bad lr 'fast'"), ("stratify: maybe", "true or false"), ("batch_size: 1.5", "whole number"),
     ("betas: [0.9]", "2 numbers"), ("seed: null", "bad seed None"), ("dataset: 5", "expected a string")],
)
def test_value_that_cannot_be_converted_names_field_and_file(tmp_path, line, words):
    f = tmp_path / "c.yaml"
    f.write_text(line + "\n")
    with pytest.raises(UsageError) as err:
        load_config_file(f)
    assert words in str(err.value) and str(f) in str(err.value)


def test_grid_values_are_typed_like_config_values():
    from mnistlab.sweep import parse_grid, plan_sweep

    runs = plan_sweep({"model": "logistic"}, parse_grid(["lr=1e-3,1e-2", "stratify=false,true"]))
    assert [(r.config["lr"], r.config["stratify"]) for r in runs] == [
        (0.001, False), (0.001, True), (0.01, False), (0.01, True)]
    with pytest.raises(UsageError, match="bad lr 'x' in --grid lr: expected a number"):
        plan_sweep({"model": "logistic"}, parse_grid(["lr=x,1"]))
