"""The vocabulary: token <-> index, built from the training split only, saved as vocab.json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from mnistlab.errors import MnistlabError, UsageError

PAD, UNK = "<pad>", "<unk>"
PAD_INDEX, UNK_INDEX = 0, 1


class Vocab:
    """Token-to-index map with `<pad>` = 0 and `<unk>` = 1.

    Order is by descending frequency, ties broken alphabetically, so the same training
    texts always give the same indices (no dependence on dict or set order).
    """

    def __init__(self, itos: Sequence[str]) -> None:
        if list(itos[:2]) != [PAD, UNK]:
            raise MnistlabError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {list(itos[:2])}")
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(
        cls, token_lists: Iterable[Sequence[str]], *, min_freq: int = 1, max_size: int | None = None
    ) -> "Vocab":
        """Count tokens and keep those seen at least `min_freq` times, at most `max_size` entries in all.

        Args:
            token_lists: tokenized texts (the training split only: valid/test words must
                stay unknown, or the held-out scores would be optimistic).
            min_freq: drop rarer tokens (they map to `<unk>`).
            max_size: total size including `<pad>` and `<unk>`; None for no limit.
        """
        if min_freq < 1:
            raise UsageError(f"bad min-freq {min_freq!r}: must be >= 1")
        if max_size is not None and max_size < 2:
            raise UsageError(f"bad vocab-size {max_size!r}: must be >= 2 (room for <pad> and <unk>)")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in (PAD, UNK)),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - 2]
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str], max_len: int | None = None) -> list[int]:
        """Indices of `tokens` (unknown -> 1), cut to `max_len`; an empty list becomes [<unk>].

        An empty sequence cannot be packed (length 0), and "no known words" is what <unk> means.
        """
        ids = [self.stoi.get(t, UNK_INDEX) for t in tokens]
        if max_len is not None:
            ids = ids[:max_len]
        return ids or [UNK_INDEX]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Tokens of `ids` (for inspection)."""
        return [self.itos[i] for i in ids]

    def save(self, path: str | Path) -> None:
        """Write vocab.json atomically: {"itos": [...]} (index = position)."""
        from mnistlab.runs import write_json

        write_json(Path(path), {"itos": self.itos})

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        """Read a vocab.json written by `save`."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            return cls(data["itos"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MnistlabError(f"cannot read vocabulary {p}: {exc}") from None
