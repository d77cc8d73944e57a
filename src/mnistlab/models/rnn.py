"""Recurrent models that read an image row by row: vanilla RNN, LSTM and GRU."""

from __future__ import annotations

import torch
from torch import nn

from mnistlab.errors import UsageError
from mnistlab.models.registry import register_model

_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RowSequenceClassifier(nn.Module):
    """Reads a [B, C, H, W] image as H time steps of C*W features and classifies the final state."""

    channels_last = False  # a recurrent net gains nothing from channels_last memory

    def __init__(
        self,
        cell: str,
        *,
        in_channels: int,
        image_size: int,
        num_classes: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float | None,
    ) -> None:
        super().__init__()
        dropout = 0.0 if dropout is None else dropout  # None (`--set dropout=none`): no dropout
        if hidden_size < 1 or num_layers < 1:
            raise UsageError(f"{cell} needs hidden_size >= 1 and num_layers >= 1, got {hidden_size}, {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise UsageError(f"{cell} dropout must be in [0, 1), got {dropout}")
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.rnn = _CELLS[cell](
            input_size=in_channels * image_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            # PyTorch only applies (and warns about) dropout between stacked layers.
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] images -> [B, num_classes] logits."""
        b, c, h, w = x.shape
        # [B, C, H, W] -> [B, H, C, W] -> [B, H, C*W]; reshape copies if the input is channels_last.
        seq = x.permute(0, 2, 1, 3).reshape(b, h, c * w)
        out, _ = self.rnn(seq)  # [B, H, D*hidden]
        if self.bidirectional:
            # The forward direction ends at the last step, the backward one at the first step.
            last = torch.cat([out[:, -1, : self.hidden_size], out[:, 0, self.hidden_size :]], dim=1)
        else:
            last = out[:, -1]  # [B, hidden]
        return self.classifier(last)


_RNN_RECIPE = {
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": 128,
    "epochs": 10,
    "clip_grad": 1.0,
    "channels_last": False,
}
_GATED_RECIPE = {
    "optimizer": "adam",
    "lr": 2e-3,
    "batch_size": 128,
    "epochs": 8,
    "scheduler": "cosine",
    "clip_grad": 1.0,
    "channels_last": False,
}


@register_model("rnn", description="Vanilla tanh RNN reading the image row by row (28 steps of 28 pixels)",
                recipe=_RNN_RECIPE)
def rnn(
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    hidden_size: int = 128,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float | None = 0.0,
) -> nn.Module:
    """A vanilla (tanh) RNN over image rows, classified from its final hidden state."""
    return RowSequenceClassifier(
        "rnn", in_channels=in_channels, image_size=image_size, num_classes=num_classes,
        hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
    )


@register_model("lstm", description="2-layer LSTM (hidden 128) reading the image row by row",
                recipe=_GATED_RECIPE)
def lstm(
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    hidden_size: int = 128,
    num_layers: int = 2,
    bidirectional: bool = False,
    dropout: float | None = 0.0,
) -> nn.Module:
    """An LSTM over image rows, classified from its final hidden state."""
    return RowSequenceClassifier(
        "lstm", in_channels=in_channels, image_size=image_size, num_classes=num_classes,
        hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
    )


@register_model("gru", description="GRU (hidden 128) reading the image row by row", recipe=dict(_GATED_RECIPE))
def gru(
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    hidden_size: int = 128,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float | None = 0.0,
) -> nn.Module:
    """A GRU over image rows, classified from its final hidden state."""
    return RowSequenceClassifier(
        "gru", in_channels=in_channels, image_size=image_size, num_classes=num_classes,
        hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
    )
