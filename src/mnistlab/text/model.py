"""Recurrent text classifier (RNN/LSTM/GRU) over packed, padded batches of token indices."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mnistlab.errors import MnistlabError, UsageError
from mnistlab.models.layers import Dropout
from mnistlab.text.tokenizer import tokenize
from mnistlab.text.vocab import PAD_INDEX, Vocab
from mnistlab.training.checkpoint import eval_state_dict, load_model_state

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class TextClassifier(nn.Module):
    """Embedding -> recurrent encoder (packed) -> final hidden state(s) -> linear classifier.

    forward takes `(ids, lengths)`: ids [B, T] padded with 0, lengths [B] the true lengths.
    Packing means the recurrence stops at each sentence's own last token, so the padding
    never reaches the classifier and a sentence scores the same alone or in any batch.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        *,
        cell: str = "lstm",
        embed_dim: int = 64,
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise UsageError(f"bad text model {cell!r}: choose {', '.join(CELLS)}")
        for name, value in (("embed-dim", embed_dim), ("hidden", hidden), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"bad {name} {value!r}: expected a whole number >= 1")
        if not 0.0 <= dropout < 1.0:
            raise UsageError(f"bad dropout {dropout!r}: must be in [0, 1)")
        self.cell = cell
        self.hidden = hidden
        self.layers = layers
        self.directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_INDEX)
        self.rnn = CELLS[cell](
            embed_dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,  # PyTorch applies it only between stacked layers
        )
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(hidden * self.directions, num_classes)

    def encode(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """[B, hidden * directions]: the last layer's final hidden state h_n (both directions if bidirectional)."""
        ids, lengths = x
        emb = self.embedding(ids)
        # Lengths must be a CPU int64 tensor for packing, whatever the device of ids.
        packed = pack_padded_sequence(emb, lengths.detach().to("cpu", torch.int64), batch_first=True,
                                      enforce_sorted=False)
        _, h_n = self.rnn(packed)
        if isinstance(h_n, tuple):  # LSTM returns (h_n, c_n)
            h_n = h_n[0]
        # h_n: [layers * directions, B, hidden], already back in the batch's own order.
        # The last `directions` rows are the top layer: forward ends at the true last token,
        # backward at the first token.
        last = h_n[-self.directions:]
        return last.transpose(0, 1).reshape(ids.shape[0], -1)

    def embed_mean(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """[B, embed_dim]: the mean word embedding of each sentence, padding excluded."""
        ids, lengths = x
        emb = self.embedding(ids)
        mask = (ids != PAD_INDEX).unsqueeze(-1).to(emb.dtype)
        return (emb * mask).sum(1) / lengths.to(emb.device, emb.dtype).clamp(min=1).unsqueeze(-1)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(ids [B, T], lengths [B]) -> logits [B, num_classes]."""
        return self.classifier(self.dropout(self.encode(x)))


def pad_batch(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad index lists to the longest one in the batch (not a global max): (ids [B, T], lengths [B])."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ids = torch.full((len(seqs), int(lengths.max()) if len(seqs) else 0), PAD_INDEX, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return ids, lengths


class TextBatches:
    """Batches of ((ids, lengths), labels) for `train_one_epoch`, reshuffled per epoch from (seed, epoch)."""

    def __init__(
        self, seqs: Sequence[Sequence[int]], labels: Sequence[int], *, batch_size: int, shuffle: bool = False,
        seed: int = 0, drop_last: bool = False, device: torch.device | str = "cpu",
    ) -> None:
        self.seqs, self.labels = list(seqs), torch.as_tensor(list(labels), dtype=torch.long)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.device = torch.device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Each epoch gets its own order, reproducible (a resumed or rerun run sees the same batches)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.seqs)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]:
        n = len(self.seqs)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            ids, lengths = pad_batch([self.seqs[i] for i in idx])
            # lengths stay on the CPU: pack_padded_sequence needs them there anyway.
            yield (ids.to(self.device), lengths), self.labels[idx].to(self.device)


def encode_texts(texts: Sequence[str], vocab: Vocab, max_len: int) -> list[list[int]]:
    """Tokenize and index texts exactly as training did (empty -> [<unk>], cut to max_len)."""
    return [vocab.encode(tokenize(t), max_len) for t in texts]


@torch.no_grad()
def text_logits(
    model: TextClassifier, seqs: Sequence[Sequence[int]], *, device: torch.device | str = "cpu", batch_size: int = 512
) -> torch.Tensor:
    """Float32 logits [N, K] on the CPU, in eval mode (dropout off)."""
    was_training = model.training
    model.eval()
    outs = [model(x).float().cpu() for x, _ in TextBatches(seqs, [0] * len(seqs), batch_size=batch_size, device=device)]
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0, model.classifier.out_features)


def model_from_checkpoint(ckpt: dict, source: str) -> TextClassifier:
    """The TextClassifier a text checkpoint describes, with its weights, in eval mode."""
    try:
        model = TextClassifier(**ckpt["model"]["options"])
        load_model_state(model, eval_state_dict(ckpt), source)  # the average of a run trained with --ema
    except (KeyError, TypeError) as exc:
        raise MnistlabError(f"checkpoint {source} is not a complete text checkpoint (lacks {exc})") from None
    return model.eval()
