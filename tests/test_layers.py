"""mnistlab.models.layers.Dropout: the same layer as nn.Dropout, with a cheaper CPU mask."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mnistlab.models import create_model
from mnistlab.models.layers import Dropout, cpu_dropout_mask


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_mask_drops_a_fraction_p_and_scales_the_rest(p: float) -> None:
    torch.manual_seed(0)
    n = 400_000
    mask = cpu_dropout_mask(torch.Size([n]), p, torch.float32, torch.device("cpu"))
    dropped = (mask == 0).float().mean().item()
    # Binomial(n, p): 5 standard deviations, plus p's rounding to 1/65536.
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n) + 1 / 65536
    assert torch.allclose(mask[mask != 0], torch.full_like(mask[mask != 0], 1 / (1 - p)))


def test_every_lane_of_a_random_word_is_used_evenly() -> None:
    # Each 64-bit draw serves 4 consecutive elements; a biased lane would show as a position
    # (index mod 4) dropped more or less often than p.
    torch.manual_seed(1)
    mask = cpu_dropout_mask(torch.Size([4 * 100_000]), 0.5, torch.float32, torch.device("cpu"))
    per_lane = (mask.view(-1, 4) == 0).float().mean(0)
    assert torch.all((per_lane - 0.5).abs() < 5 * math.sqrt(0.25 / 100_000)), per_lane


def test_output_is_unbiased_and_drops_whole_elements() -> None:
    torch.manual_seed(2)
    x = torch.rand(512, 300) + 1.0
    y = Dropout(0.3).train()(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.7)
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.01


def test_gradient_is_the_mask() -> None:
    torch.manual_seed(3)
    x = torch.randn(64, 37, requires_grad=True)  # 2368 elements: not a multiple of 4 lanes per row
    layer = Dropout(0.25).train()
    y = layer(x)
    g = torch.randn_like(y)
    y.backward(g)
    mask = (y.detach() / x.detach())
    assert torch.allclose(x.grad, g * mask, atol=1e-6)
    assert torch.all(torch.isclose(mask, torch.tensor(0.0)) | torch.isclose(mask, torch.tensor(1 / 0.75)))


def test_seeded_and_resumable_like_torch_dropout() -> None:
    x = torch.ones(32, 129)
    torch.manual_seed(7)
    a = Dropout(0.2).train()(x)
    state = torch.get_rng_state()
    b = Dropout(0.2).train()(x)
    torch.set_rng_state(state)
    c = Dropout(0.2).train()(x)
    torch.manual_seed(7)
    assert torch.equal(Dropout(0.2).train()(x), a)
    assert torch.equal(b, c)
    assert not torch.equal(a, b)


def test_eval_mode_and_edge_probabilities_are_torch_dropout() -> None:
    x = torch.randn(16, 8)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_keeps_bf16_inputs_in_bf16() -> None:
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    y = Dropout(0.2).train()(x)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape


def test_same_module_interface_as_nn_dropout() -> None:
    layer = Dropout(0.3)
    assert isinstance(layer, nn.Dropout)
    assert repr(layer) == repr(nn.Dropout(0.3))
    assert layer.state_dict() == {}


def test_zoo_models_use_it() -> None:
    for name, options in [("dnn", {}), ("cnn-bn", {}), ("best", {})]:
        model = create_model(name, **options)
        drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        assert drops and all(isinstance(m, Dropout) for m in drops), name


# Probabilities up to 1, through the ones the 16-bit lanes cannot represent closely enough (p under
# 2**-8, or over about 0.92, where rounding p to 1/65536 would move the mean by more than 0.01%):
# those fall back to torch's draw.
P_GRID = [0.0, 1e-6, 2**-17, 1e-3, 2**-8, 0.1, 0.5, 0.9, 0.92, 0.93, 0.99, 1 - 2**-8, 0.999, 0.9999, 0.99999,
          0.999995, 1 - 2**-17, 1 - 1e-7, 1.0]


@pytest.mark.parametrize("p", P_GRID)
@pytest.mark.parametrize("how", ["layer", "mask"])
def test_mean_is_kept_for_every_p_up_to_1(p: float, how: str) -> None:
    torch.manual_seed(4)
    n = 1 << 22
    if how == "layer":
        y = Dropout(p).train()(torch.ones(n))
    else:
        y = cpu_dropout_mask(torch.Size([n]), p, torch.float32, torch.device("cpu"))
    kept = y[y != 0]
    if p == 1.0:
        assert kept.numel() == 0
        return
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p))), (p, kept[:3])
    # Binomial counts: 5 standard deviations, plus p's rounding to 1/65536 on the lanes' path,
    # which keeps the mean within 0.01% of 1.
    assert abs(kept.numel() / n - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n) + 2**-17
    assert abs(y.mean().item() - 1) <= 5 * math.sqrt(p / ((1 - p) * n)) + 1e-4


def test_the_lanes_stand_in_for_p_only_where_they_represent_it() -> None:
    from mnistlab.models.layers import lanes_represent

    assert [p for p in P_GRID if lanes_represent(p)] == [2**-8, 0.1, 0.5, 0.9, 0.92]
    # Every p the zoo's models use stays on the fast path (their results do not change).
    assert all(lanes_represent(p) for p in (0.2, 0.25, 0.3, 0.5))
