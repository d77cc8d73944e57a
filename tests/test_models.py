"""Tests for the model zoo: shapes, gradients, parameter counts, options, init and summaries."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from mnistlab.config import field_names
from mnistlab.errors import UsageError
from mnistlab.models import (
    INIT_METHODS,
    count_parameters,
    create_model,
    get_model_info,
    init_weights,
    list_models,
    parse_set_flags,
    register_model,
    registry,
    summarize,
)

ALL_MODELS = list_models()
RECURRENT = ["rnn", "lstm", "gru"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_every_expected_model_is_registered() -> None:
    expected = {"logistic", "mlp", "dnn", "cnn-strided", "cnn-basic", "cnn-bn", "rnn", "lstm", "gru", "fast", "best"}
    assert expected <= set(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward(name: str) -> None:
    model = create_model(name)
    model.train()
    x = torch.randn(4, 1, 28, 28)
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient reached {pname}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient in {pname}"
    total = sum(float(p.grad.abs().sum()) for p in model.parameters())
    assert total > 0


@pytest.mark.parametrize("name", ALL_MODELS)
def test_channels_last_and_bf16_autocast(name: str) -> None:
    # 3x32x32 so that channels_last really changes the memory layout (with C=1 it is a no-op).
    options = {"hidden_dims": (3 * 32 * 32, 64)} if name == "dnn" else {}
    model = create_model(name, in_channels=3, image_size=32, **options).eval()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x.contiguous())
        out = model(x)
        assert out.shape == (2, 10)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.shape == (2, 10)
    assert torch.isfinite(low.float()).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_registry_entry(name: str) -> None:
    info = get_model_info(name)
    assert info.description and "\n" not in info.description
    assert set(info.recipe) <= set(field_names()), f"{name}: recipe keys must be TrainConfig fields"
    for key, default in info.options.items():
        assert isinstance(default, (bool, int, float, str, tuple)), f"{name}.{key}: unparseable default type"


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("logistic", {}, 7_850),
        ("mlp", {}, 15_910),
        ("dnn", {}, 569_226),
        ("dnn", {"hidden_dims": (784, 128, 128, 128)}, 135_562),
        ("dnn", {"hidden_dims": (784, 128, 128, 128), "batchnorm": False}, 134_794),
        ("cnn-strided", {}, 3_930),
        ("cnn-basic", {}, 123_222),
        ("fast", {}, 212_682),  # conv 416 + conv 4,640 + Linear 205,056 + Linear 2,570
    ],
)
def test_parameter_counts(name: str, options: dict, expected: int) -> None:
    assert count_parameters(create_model(name, **options)) == expected


def test_best_size_is_in_range() -> None:
    assert count_parameters(create_model("best")) == 288_170  # width 32: 32-64-128 channels
    assert count_parameters(create_model("best", width=64)) == 1_147_722


def test_cnn_basic_flatten_size() -> None:
    model = create_model("cnn-basic")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears[0].in_features == 576


def test_cnn_bn_builds_for_mnist_and_cifar_shapes() -> None:
    for channels, size in ((1, 28), (3, 32)):
        model = create_model("cnn-bn", in_channels=channels, image_size=size)
        assert model(torch.randn(4, channels, size, size)).shape == (4, 10)
    model = create_model("cnn-bn", in_channels=3, image_size=32, num_classes=100)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name", RECURRENT)
def test_bidirectional_doubles_classifier_input(name: str) -> None:
    uni = create_model(name, hidden_size=32)
    bi = create_model(name, hidden_size=32, bidirectional=True)
    assert uni.classifier.in_features == 32
    assert bi.classifier.in_features == 64
    assert bi(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_bidirectional_uses_both_final_states() -> None:
    model = create_model("gru", hidden_size=8, bidirectional=True).eval()
    x = torch.randn(2, 1, 28, 28)
    out, _ = model.rnn(x.squeeze(1))
    expected = model.classifier(torch.cat([out[:, -1, :8], out[:, 0, 8:]], dim=1))
    torch.testing.assert_close(model(x), expected)


# --- init -----------------------------------------------------------------------------------


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@pytest.mark.parametrize("name", ["dnn", "cnn-bn", "lstm"])
def test_zeros_init_zeroes_everything_and_warns(name: str) -> None:
    model = create_model(name)
    with pytest.warns(UserWarning, match="symmetry"):
        init_weights(model, "zeros")
    for layer in _weighted_layers(model):
        assert not layer.weight.any()
        assert layer.bias is None or not layer.bias.any()
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            assert all(not p.any() for p in module.parameters())


def _big_linear_std(method: str) -> float:
    layer = nn.Linear(1000, 1000)
    init_weights(layer, method)
    assert not layer.bias.any()
    return float(layer.weight.detach().std())


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("kaiming", math.sqrt(2 / 1000)),
        ("xavier", math.sqrt(2 / (1000 + 1000))),
        ("gaussian", 0.01),
    ],
)
def test_init_std(method: str, expected: float) -> None:
    std = _big_linear_std(method)
    assert abs(std - expected) / expected < 0.05


def test_kaiming_uses_fan_in_on_non_square_layer() -> None:
    layer = nn.Linear(2000, 500)
    init_weights(layer, "kaiming")
    expected = math.sqrt(2 / 2000)
    assert abs(float(layer.weight.detach().std()) - expected) / expected < 0.05


def test_init_applies_to_recurrent_weights() -> None:
    model = create_model("lstm")
    init_weights(model, "gaussian")
    weight = model.rnn.weight_hh_l0
    assert abs(float(weight.detach().std()) - 0.01) / 0.01 < 0.05
    assert not model.rnn.bias_ih_l0.any()


def test_default_init_leaves_pytorch_init() -> None:
    model = create_model("cnn-basic")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        init_weights(model, "default")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("method", INIT_METHODS)
def test_every_init_method_keeps_models_usable(method: str) -> None:
    model = create_model("cnn-bn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init_weights(model, method)
    assert torch.isfinite(model(torch.randn(2, 1, 28, 28))).all()


def test_unknown_init_method() -> None:
    with pytest.raises(UsageError, match="kaiming"):
        init_weights(nn.Linear(2, 2), "he")


# --- options --------------------------------------------------------------------------------


def test_set_flags_build_the_requested_dnn() -> None:
    options = parse_set_flags(["hidden_dims=784,128,128,128", "batchnorm=false"])
    model = create_model("dnn", **options)
    assert count_parameters(model) == 134_794
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    options = parse_set_flags(["hidden_dims=784-128-128-128", "dropout_ratio=0.1", "activation=gelu"])
    model = create_model("dnn", **options)
    assert count_parameters(model) == 135_562
    assert any(isinstance(m, nn.GELU) for m in model.modules())


def test_set_flags_for_recurrent_and_cnn_options() -> None:
    model = create_model("lstm", **parse_set_flags(["hidden-size=16", "num_layers=1", "bidirectional=yes"]))
    assert model.classifier.in_features == 32
    model = create_model("cnn-bn", **parse_set_flags(["channels=8,16", "hidden=32", "dropout=0"]))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


DROPOUT_OPTIONS = [("dnn", "dropout"), ("dnn", "dropout_ratio"), ("cnn-bn", "dropout"), ("best", "dropout")]


def _dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout) or isinstance(m, nn.RNNBase) and m.dropout > 0]


@pytest.mark.parametrize(("name", "option"), DROPOUT_OPTIONS)
def test_dropout_none_reaches_the_builder_and_means_no_dropout(name: str, option: str) -> None:
    from mnistlab.config import TrainConfig, resolve_config

    assert _dropouts(create_model(name)), "the default build has dropout"
    # The way `train --set dropout=none` goes: resolved config (config.yaml: null), then the builder.
    cfg = resolve_config(TrainConfig(model=name, model_options={option: "none"}))
    assert cfg.model_options[option] is None
    assert not _dropouts(create_model(name, **cfg.model_options))


@pytest.mark.parametrize(("name", "option"), [*DROPOUT_OPTIONS, ("lstm", "dropout")])
def test_checkpoint_written_when_none_meant_the_default_still_loads(name: str, option: str) -> None:
    """Before None reached the builders, `--set dropout=none` trained the default net and the
    checkpoint recorded every option with the None: it loads, and evaluates the same."""
    from mnistlab.training.checkpoint import build_model_from_checkpoint

    trained = create_model(name).eval()  # what the old code built for option=None
    ckpt = {"model": {"name": name, "options": {**get_model_info(name).options, option: None}},
            "data": {"classes": list("0123456789"), "in_channels": 1, "image_size": 28},
            "state_dict": trained.state_dict()}
    loaded = build_model_from_checkpoint(ckpt, "old.pt")
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded(x), trained(x))


def test_none_where_it_is_no_value_is_refused_not_replaced_by_the_default() -> None:
    with pytest.raises(UsageError, match="option 'batchnorm' of model 'dnn' cannot be none"):
        create_model("dnn", **parse_set_flags(["batchnorm=none"]))
    # A checkpoint recording batchnorm=None was trained with the default (BatchNorm on): it still builds so.
    with pytest.warns(UserWarning, match="batchnorm=None built with the default True"):
        model = create_model("dnn", batchnorm=None)
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())


def test_unknown_model_suggests_a_name() -> None:
    with pytest.raises(UsageError, match="lstm"):
        create_model("lstn")


def test_unknown_option() -> None:
    with pytest.raises(UsageError, match="hidden_size"):
        create_model("mlp", hiden_size=10)


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("dnn", "batchnorm=maybe"),
        ("mlp", "hidden_size=abc"),
        ("mlp", "hidden_size=1.5"),
        ("dnn", "dropout_ratio=high"),
        ("dnn", "hidden_dims=a,b"),
    ],
)
def test_bad_option_values(name: str, flag: str) -> None:
    with pytest.raises(UsageError):
        create_model(name, **parse_set_flags([flag]))


def test_bad_activation() -> None:
    with pytest.raises(UsageError, match="sigmoid"):
        create_model("mlp", activation="swishy")


def test_dnn_first_hidden_dim_must_match_input() -> None:
    with pytest.raises(UsageError, match="784"):
        create_model("dnn", hidden_dims=(100, 50))
    with pytest.raises(UsageError, match="3072"):
        create_model("dnn", in_channels=3, image_size=32)


def test_registering_a_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="twice"):
        register_model("mlp", description="again")(lambda **_: nn.Identity())


def test_adding_a_model_is_one_decorated_function() -> None:
    try:

        @register_model("tiny-test-net", description="a test model", recipe={"lr": 0.5})
        def tiny(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 4) -> nn.Module:
            return nn.Sequential(
                nn.Flatten(), nn.Linear(in_channels * image_size**2, width), nn.Linear(width, num_classes)
            )

        assert "tiny-test-net" in list_models()
        model = create_model("tiny-test-net", **parse_set_flags(["width=7"]))
        assert model[1].out_features == 7
        assert get_model_info("tiny-test-net").recipe == {"lr": 0.5}
    finally:
        registry._REGISTRY.pop("tiny-test-net", None)
    assert "tiny-test-net" not in list_models()


def test_list_models_glob() -> None:
    assert list_models("cnn-*") == ["cnn-strided", "cnn-basic", "cnn-bn"]


# --- summary --------------------------------------------------------------------------------


def test_summarize_mentions_parameter_count() -> None:
    model = create_model("dnn")
    model.train()
    text = summarize(model, (1, 28, 28))
    assert "569,226" in text
    assert "Linear" in text and "BatchNorm1d" in text
    assert model.training, "summarize must leave the model's mode alone"
    assert "Units." not in text
