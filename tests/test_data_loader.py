"""Train/valid splits, BatchIterator and the DataLoader view."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from mnistlab.data import BatchIterator, as_torch_dataset, split_indices
from mnistlab.data.loader import shift_images
from mnistlab.errors import UsageError

# ---------------------------------------------------------------- split_indices


def _labels(n: int = 1000, k: int = 10, seed: int = 0) -> torch.Tensor:
    # Unbalanced classes so that stratification has something to preserve.
    weights = torch.arange(1, k + 1, dtype=torch.float)
    return torch.multinomial(weights, n, replacement=True, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stratify", [False, True])
def test_split_is_disjoint_covering_and_deterministic(stratify: bool) -> None:
    labels = _labels()
    train, valid = split_indices(labels, 0.2, seed=5, stratify=stratify)
    assert train.dtype == valid.dtype == torch.int64
    assert len(set(train.tolist()) & set(valid.tolist())) == 0
    assert sorted(train.tolist() + valid.tolist()) == list(range(len(labels)))
    assert abs(len(valid) - 200) <= 10
    train2, valid2 = split_indices(labels, 0.2, seed=5, stratify=stratify)
    assert torch.equal(train, train2) and torch.equal(valid, valid2)
    _, valid3 = split_indices(labels, 0.2, seed=6, stratify=stratify)
    assert not torch.equal(valid, valid3)


def test_stratified_split_keeps_class_proportions() -> None:
    labels = _labels(2000)
    _, valid = split_indices(labels, 0.25, seed=0, stratify=True)
    counts = torch.bincount(labels, minlength=10)
    valid_counts = torch.bincount(labels[valid], minlength=10)
    expected = torch.round(counts.double() * 0.25).long()
    assert torch.equal(valid_counts, expected)


def test_plain_split_size_and_zero_fraction() -> None:
    labels = _labels(101)
    train, valid = split_indices(labels, 0.1, seed=0)
    assert len(valid) == 10 and len(train) == 91
    train, valid = split_indices(labels, 0.0, seed=0)
    assert len(valid) == 0 and torch.equal(train, torch.arange(101))


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(UsageError, match="valid fraction"):
        split_indices(_labels(10), fraction, seed=0)


# ---------------------------------------------------------------- BatchIterator


def _data(n: int = 103, c: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose first pixel encodes the sample index (n <= 256), so batches can be traced back."""
    images = torch.zeros(n, c, 28, 28, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    images[:, :, 10:18, 10:18] = 200
    return images, torch.arange(n) % 10


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_sample_exactly_once_per_epoch(shuffle: bool) -> None:
    images, labels = _data()
    it = BatchIterator(images, labels, batch_size=10, mean=0.0, std=1.0, shuffle=shuffle, seed=3)
    assert len(it) == 11
    for _ in range(2):
        batches = list(it)
        assert len(batches) == 11 and [len(b[0]) for b in batches] == [10] * 10 + [3]
        seen = _seen_from(batches)
        assert sorted(seen) == list(range(103))
        # The label travels with its image.
        assert torch.equal(torch.cat([y for _, y in batches]), labels[torch.tensor(seen)])


def _seen_from(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    # mean 0, std 1: x = pixel / 255.
    return torch.cat([torch.round(x[:, 0, 0, 0] * 255) for x, _ in batches]).long().tolist()


def test_drop_last_covers_all_but_the_partial_batch() -> None:
    images, labels = _data()
    it = BatchIterator(images, labels, batch_size=10, mean=0.0, std=1.0, shuffle=True, seed=1, drop_last=True)
    assert len(it) == 10
    batches = list(it)
    assert len(batches) == 10 and all(len(x) == 10 for x, _ in batches)
    seen = _seen_from(batches)
    assert len(set(seen)) == 100 and set(seen) <= set(range(103))


def test_epoch_orders_are_a_function_of_seed_and_epoch() -> None:
    images, labels = _data()

    def order(seed: int, epoch: int | None = None, it: BatchIterator | None = None) -> list[int]:
        it = it or BatchIterator(images, labels, batch_size=16, mean=0.0, std=1.0, shuffle=True, seed=seed)
        if epoch is not None:
            it.set_epoch(epoch)
        return _seen_from(list(it))

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 3) != order(1, 3)
    # Without set_epoch, an internal counter walks through epochs 0, 1, 2 ...
    it = BatchIterator(images, labels, batch_size=16, mean=0.0, std=1.0, shuffle=True, seed=7)
    assert [order(7, it=it) for _ in range(3)] == [order(7, e) for e in range(3)]
    # ... and set_epoch(e) makes a resumed iterator reproduce epoch e exactly.
    fresh = BatchIterator(images, labels, batch_size=16, mean=0.0, std=1.0, shuffle=True, seed=7)
    fresh.set_epoch(2)
    assert _seen_from(list(fresh)) == order(7, 2)


def test_normalisation_values() -> None:
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    it = BatchIterator(images, torch.zeros(3, dtype=torch.long), batch_size=3, mean=0.1307, std=0.3081)
    x, y = next(iter(it))
    assert x.dtype == torch.float32 and x.shape == (3, 1, 2, 2) and y.dtype == torch.int64
    expected = (torch.tensor([0.0, 51.0, 255.0]) / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x[:, 0, 0, 0], expected, rtol=1e-6, atol=1e-6)
    # The resident uint8 data is untouched by the in-place normalisation.
    assert torch.equal(it.images, images)


def test_per_channel_normalisation_and_dtype() -> None:
    images = torch.full((4, 3, 5, 5), 255, dtype=torch.uint8)
    it = BatchIterator(images, torch.zeros(4, dtype=torch.long), batch_size=2, mean=(0.0, 0.5, 1.0),
                       std=(1.0, 0.5, 0.25), dtype=torch.float64)
    x, _ = next(iter(it))
    assert x.dtype == torch.float64
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))


def test_channels_last_memory_format() -> None:
    images, labels = _data(40, c=3)
    it = BatchIterator(images, labels, batch_size=8, mean=0.5, std=0.5, channels_last=True, shuffle=True)
    plain = BatchIterator(images, labels, batch_size=8, mean=0.5, std=0.5, shuffle=True)
    for (x, _), (p, _) in zip(it, plain):
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert not x.is_contiguous()
        assert torch.equal(x, p)


@pytest.mark.parametrize("drop_last", [False, True])
def test_sharding_is_disjoint_and_complete(drop_last: bool) -> None:
    images, labels = _data(103)
    shards = [
        BatchIterator(images, labels, batch_size=8, mean=0.0, std=1.0, shuffle=True, seed=4, drop_last=drop_last,
                      rank=r, world_size=2)
        for r in range(2)
    ]
    for epoch in range(2):
        seen = []
        for shard in shards:
            shard.set_epoch(epoch)
            seen.append(_seen_from(list(shard)))
        assert not set(seen[0]) & set(seen[1])
        if drop_last:
            assert len(shards[0]) == len(shards[1]) == 51 // 8
            assert len(seen[0]) == len(seen[1]) == 48
        else:
            assert sorted(seen[0] + seen[1]) == list(range(103))
            assert (len(seen[0]), len(seen[1])) == (52, 51)
    # Both ranks cut the same permutation: together they are the single-process order, interleaved.
    single = BatchIterator(images, labels, batch_size=103, mean=0.0, std=1.0, shuffle=True, seed=4)
    single.set_epoch(0)
    full = _seen_from(list(single))
    for r, shard in enumerate(shards):
        shard.set_epoch(0)
        expected = full[: 102 if drop_last else 103][r::2]
        got = _seen_from(list(shard))
        assert got == expected[: len(got)]


def test_augment_shifts_each_image_by_at_most_two_pixels() -> None:
    images = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    images[:, 0, 13, 13] = 255  # one bright pixel in the middle
    it = BatchIterator(images, torch.zeros(64, dtype=torch.long), batch_size=16, mean=0.0, std=1.0,
                       shuffle=True, seed=0, augment=True)
    positions = []
    for x, _ in it:
        assert x.shape == (16, 1, 28, 28)
        assert torch.all((x * 255).round().sum(dim=(1, 2, 3)) == 255)  # nothing lost, nothing added
        flat = x.view(len(x), -1).argmax(1)
        positions += list(zip((flat // 28).tolist(), (flat % 28).tolist()))
    assert all(11 <= r <= 15 and 11 <= c <= 15 for r, c in positions)
    assert len(set(positions)) > 10  # really random
    # Reproducible per (seed, epoch).
    it.set_epoch(0)
    again = torch.cat([x for x, _ in it])
    it.set_epoch(0)
    assert torch.equal(again, torch.cat([x for x, _ in it]))


def test_shift_images_directions() -> None:
    img = torch.zeros(2, 1, 6, 6, dtype=torch.uint8)
    img[:, 0, 2, 2] = 9
    out = shift_images(img, torch.tensor([[1, 0], [0, -2]]))
    assert out[0, 0, 3, 2] == 9 and out[1, 0, 2, 0] == 9 and out.sum() == 18


def test_empty_and_single_batch_lengths() -> None:
    images, labels = _data(5)
    assert len(BatchIterator(images, labels, batch_size=10, mean=0, std=1)) == 1
    assert len(BatchIterator(images, labels, batch_size=10, mean=0, std=1, drop_last=True)) == 0
    assert list(BatchIterator(images[:0], labels[:0], batch_size=4, mean=0, std=1)) == []


# ---------------------------------------------------------------- DataLoader view


def test_torch_dataset_matches_batch_iterator_with_workers() -> None:
    images, labels = _data(50)
    ds = as_torch_dataset(images, labels, 0.1307, 0.3081)
    assert len(ds) == 50
    x0, y0 = ds[0]
    assert x0.shape == (1, 28, 28) and x0.dtype == torch.float32 and isinstance(y0, int)
    loader = DataLoader(ds, batch_size=7, shuffle=False, num_workers=2)
    xs, ys = zip(*loader)
    ref = list(BatchIterator(images, labels, batch_size=7, mean=0.1307, std=0.3081))
    assert torch.equal(torch.cat(xs), torch.cat([x for x, _ in ref]))
    assert torch.equal(torch.cat(ys), labels)
