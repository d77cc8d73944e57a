"""Seeded train/validation splits."""

from __future__ import annotations

import torch

from mnistlab.errors import UsageError


def split_indices(
    labels: torch.Tensor, valid_fraction: float, seed: int, stratify: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices 0..N-1 into (train_idx, valid_idx), both sorted int64 tensors.

    The two are disjoint and together cover every index. The split depends only on
    (labels, valid_fraction, seed, stratify): a CPU torch.Generator seeded with `seed`,
    so it is the same on every machine and can be recreated from a run's config.

    Args:
        labels: int labels [N] (only their count matters unless `stratify`).
        valid_fraction: share held out for validation, 0 <= f < 1; 0 gives an empty valid set.
        seed: the split's seed.
        stratify: hold out round(f * n_c) of each class c, so both sides keep the class proportions.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise UsageError(f"valid fraction {valid_fraction:g} is out of range: choose 0 <= F < 1 (e.g. 0.1)")
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    n = len(labels)
    empty = torch.zeros(0, dtype=torch.long)
    if n == 0 or valid_fraction == 0.0:
        return torch.arange(n, dtype=torch.long), empty
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    if not stratify:
        n_valid = int(round(n * valid_fraction))
        valid, train = perm[:n_valid], perm[n_valid:]
    else:
        labels = labels.long()
        if int(labels.min()) < 0:
            raise UsageError("stratified split needs labels >= 0")
        # Group the shuffled indices by class (stable sort keeps the random order inside a class),
        # then take the first round(f * n_c) of each group: vectorised, no per-class loop.
        shuffled_labels = labels[perm]
        order = torch.sort(shuffled_labels, stable=True).indices
        grouped, grouped_labels = perm[order], shuffled_labels[order]
        counts = torch.bincount(grouped_labels)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n) - starts[grouped_labels]
        take = torch.round(counts.double() * valid_fraction).long()
        is_valid = rank < take[grouped_labels]
        valid, train = grouped[is_valid], grouped[~is_valid]
    return torch.sort(train).values, torch.sort(valid).values
