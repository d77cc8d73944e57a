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
