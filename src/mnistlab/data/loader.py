"""Batches straight from uint8 tensors kept on the training device.

MNIST fits in memory many times over, so instead of a DataLoader with per-sample Python
calls, BatchIterator keeps the whole uint8 set on the device and makes each batch with one
gather and one fused convert-and-normalise. `as_torch_dataset` is the standard map-style
view for code that wants a torch DataLoader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from mnistlab.data.augment import DIGIT_SHIFT, Augment

MAX_SHIFT = DIGIT_SHIFT  # pixels, for augment=True


def _per_channel(value: float | Sequence[float], channels: int, what: str) -> list[float]:
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{what} has {len(values)} values for {channels} channels")
    return values


def normalisation(
    mean: float | Sequence[float], std: float | Sequence[float], channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) [1, C, 1, 1] float64 such that x_uint8 * scale + shift == (x/255 - mean) / std.

    A zero std (e.g. an all-black channel) is treated as 1 so the result stays finite.
    """
    means = _per_channel(mean, channels, "mean")
    stds = [s if s > 0 else 1.0 for s in _per_channel(std, channels, "std")]
    scale = torch.tensor([1.0 / (255.0 * s) for s in stds], dtype=torch.float64).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(means, stds)], dtype=torch.float64).view(1, -1, 1, 1)
    return scale, shift


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch: a pure function of (seed, epoch), so resuming needs no saved state."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def _shift_offsets(shape: tuple[int, ...], max_shift: int, device: torch.device, flip: bool = False) -> torch.Tensor:
    """Flat offsets [C*H*W] of an unshifted crop inside one zero-padded image [C, H+2m, W+2m]
    (with `flip`, of its mirror image: output column c reads column W-1-c)."""
    c, h, w = shape
    hp, wp = h + 2 * max_shift, w + 2 * max_shift
    ch = torch.arange(c, device=device).view(c, 1, 1) * (hp * wp)
    rows = torch.arange(h, device=device).view(1, h, 1) * wp
    cols = torch.arange(w, device=device).view(1, 1, w)
    if flip:
        cols = (w - 1) - cols
    return (ch + rows + cols).reshape(-1)


def _gather_shifted(
    padded_flat: torch.Tensor, sample_idx: torch.Tensor, shifts: torch.Tensor, base: torch.Tensor,
    shape: tuple[int, ...], max_shift: int, flips: torch.Tensor | None = None, flipped: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crops of padded images, sample i moved by shifts[i] = (dy, dx): one index_select for the batch.

    The flat index of output pixel (ch, r, c) of sample i is
    i*C*Hp*Wp + ch*Hp*Wp + (r - dy + m)*Wp + (c - dx + m): a per-sample scalar plus `base`.
    Where flips[i] is 1 the sample is also mirrored left-right: `flipped` offsets replace `base`.
    """
    c, h, w = shape
    hp, wp = h + 2 * max_shift, w + 2 * max_shift
    start = sample_idx * (c * hp * wp) + (max_shift - shifts[:, 0]) * wp + (max_shift - shifts[:, 1])
    offsets = base.view(1, -1)
    if flips is not None and flipped is not None:
        offsets = torch.where(flips.view(-1, 1).bool(), flipped.view(1, -1), offsets)
    flat = (start.view(-1, 1) + offsets).view(-1)
    return padded_flat.index_select(0, flat).view(-1, c, h, w)


def warp_images(images: torch.Tensor, angles: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Each float image [B, C, H, W] turned by angles[i] radians and scaled by scales[i] about its centre.

    One bilinear resample for the batch (affine_grid + grid_sample), zero fill outside the image:
    pixel 0 is the background of uint8 data, so this runs before normalisation.
    """
    cos, sin = torch.cos(angles) / scales, torch.sin(angles) / scales
    zero = torch.zeros_like(cos)
    # grid_sample reads output pixel p from input point theta @ p: the inverse of the wanted warp.
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def shift_images(images: torch.Tensor, shifts: torch.Tensor, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """Translate each image [B, C, H, W] by its (dy, dx) in `shifts` [B, 2] (|d| <= max_shift), zero fill.

    Positive dy moves the content down, positive dx to the right. Batched, no per-image loop.
    """
    shape = tuple(images.shape[1:])
    padded = F.pad(images, (max_shift,) * 4).reshape(-1)
    base = _shift_offsets(shape, max_shift, images.device)
    idx = torch.arange(len(images), device=images.device)
    return _gather_shifted(padded, idx, shifts.to(images.device), base, shape, max_shift)


Draws = tuple["torch.Tensor | None", "torch.Tensor | None", "torch.Tensor | None"]


def augment_draws(kind: Augment, n: int, gen: torch.Generator | None, device: torch.device) -> Draws:
    """(shifts [n, 2], flips [n] or None, warps [n, 2] or None) of one epoch's `n` samples, in index order.

    Drawn from the epoch's generator after its permutation, so the draw of sample i in epoch e does not
    depend on batch size, sharding, or whether the images are resident or streamed (StreamBatches).
    """
    shifts = torch.randint(-kind.max_shift, kind.max_shift + 1, (n, 2), generator=gen).to(device)
    flips = warps = None
    if kind.flip:  # drawn after the shifts, so digits' shifts are what they always were
        flips = torch.randint(0, 2, (n,), generator=gen).to(device)
    if kind.warps:  # drawn last, for the same reason: (angle in radians, scale) per sample
        u = torch.rand((n, 2), generator=gen, dtype=torch.float64) * 2 - 1
        angles, scales = u[:, 0] * math.radians(kind.rotate), 1 + u[:, 1] * kind.zoom
        warps = torch.stack([angles, scales], 1).to(device, torch.float32)
    return shifts, flips, warps


def warp_batch(x: torch.Tensor, warps: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The batch of samples `idx` resampled by their warp draws, in float32 (bf16 would blur the digits' edges)."""
    w = warps.index_select(0, idx)
    return warp_images(x.float(), w[:, 0], w[:, 1])


def augment_batch(x: torch.Tensor, idx: torch.Tensor, kind: Augment, draws: Draws) -> torch.Tensor:
    """A batch of uint8 images [B, C, H, W] (samples `idx`) shifted, flipped and warped by their draws: what
    BatchIterator's one gather from its padded resident copy gives, for images read batch by batch."""
    shifts, flips, warps = draws
    x = shift_images(x, shifts.index_select(0, idx), kind.max_shift)
    if flips is not None:  # shifted, then mirrored: the gather's order
        x = torch.where(flips.index_select(0, idx).view(-1, 1, 1, 1).bool(), x.flip(-1), x)
    return x if warps is None else warp_batch(x, warps, idx)


class BatchIterator:
    """Yields (x, y) batches from uint8 images resident on `device`.

    x is float `dtype`, normalised [(x/255 - mean)/std], shape [B, C, H, W]; y is int64 [B].
    Each sample of this rank's shard appears exactly once per epoch (minus the last partial
    batch with drop_last).

    Shuffling: the order of epoch e is a pure function of (seed, e) (see `epoch_generator`),
    so a resumed run that calls set_epoch(e) sees exactly the batches it would have seen.
    Without set_epoch, each iteration uses an internal epoch counter (0, 1, 2, ...).

    Sharding for DistributedDataParallel: rank r of world_size takes perm[r::world_size] of
    the same epoch permutation. Without drop_last the shards may differ by one sample (and
    then by one batch, which DDP does not tolerate); with drop_last the permutation is cut
    to a multiple of world_size first, so every rank has the same number of batches.

    augment=True: each image is shifted by up to 2 pixels in x and y (zero fill), with the
    shifts drawn from the same per-epoch generator. augment=Augment(m, flip=True) (what
    `--augment` picks for colour data, mnistlab.data.augment): random crops of the image
    zero-padded by m pixels, and half the images mirrored left-right, drawn after the shifts.
    Augment(..., rotate=DEG, zoom=F) also turns and scales each image (`warp_images`), with its
    angle and scale drawn after those, per sample in index order like the shifts.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        augment: bool | Augment | None = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} for world_size {world_size}")
        self.device = torch.device(device)
        # Moved once: per batch there is no host-to-device copy.
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, dtype=torch.long)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.dtype = dtype
        self.channels_last = channels_last
        kind = Augment(MAX_SHIFT) if augment is True else (augment or None)
        self.augment = kind is not None
        self._m = kind.max_shift if kind is not None else 0
        self._kind = kind
        self.rank, self.world_size = int(rank), int(world_size)
        scale, shift = normalisation(mean, std, images.shape[1])
        self._scale = scale.to(self.device, dtype)
        self._shift = shift.to(self.device, dtype)
        self._epoch = 0
        if self.augment:
            # Padded once here, so that each batch is a single gather that picks the samples and
            # shifts them at the same time (advanced indexing and per-batch padding are far slower).
            self._shape = tuple(self.images.shape[1:])
            self._padded = F.pad(self.images, (self._m,) * 4).reshape(-1)
            self._base = _shift_offsets(self._shape, self._m, self.device)
            self._flipped = _shift_offsets(self._shape, self._m, self.device, flip=True) if kind.flip else None

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch before drop_last removes a partial batch."""
        n = len(self.images)
        if self.drop_last:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        """Number of batches per epoch on this rank."""
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch` (its order depends only on seed and epoch)."""
        self._epoch = int(epoch)

    def _order(self, gen: torch.Generator | None) -> torch.Tensor | None:
        """This rank's sample indices for the epoch, or None for the identity (plain slices, no gather)."""
        n = len(self.images)
        if not self.shuffle and self.world_size == 1:
            return None
        perm = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if self.drop_last:
            perm = perm[: n - n % self.world_size]
        return perm[self.rank :: self.world_size].to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Decided eagerly (not inside the generator) so that set_epoch/counter semantics do not
        # depend on when the first batch is requested.
        epoch = self._epoch
        self._epoch += 1
        gen = epoch_generator(self.seed, epoch) if (self.shuffle or self.augment) else None
        order = self._order(gen)
        shifts = flips = warps = None
        if self._kind is not None:
            shifts, flips, warps = augment_draws(self._kind, len(self.images), gen, self.device)
        return self._batches(order, shifts, flips, warps)

    def _augmented(self, idx: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        """Samples `idx`, shifted (and flipped) by their draws, picked from the padded copy in one gather."""
        return _gather_shifted(self._padded, idx, shifts.index_select(0, idx), self._base, self._shape, self._m,
                               None if flips is None else flips.index_select(0, idx), self._flipped)

    def _batches(
        self, order: torch.Tensor | None, shifts: torch.Tensor | None, flips: torch.Tensor | None = None,
        warps: torch.Tensor | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = self.batch_size
        n = len(self.images)
        for i in range(len(self)):
            lo, hi = i * bs, min((i + 1) * bs, n)
            idx = torch.arange(lo, hi, device=self.device) if order is None else order[lo:hi]
            if order is None:
                y = self.labels[lo:hi]
                x = self.images[lo:hi] if shifts is None else self._augmented(idx, shifts, flips)
            else:
                # index_select, not images[idx]: the same gather with far less per-call overhead.
                y = self.labels.index_select(0, idx)
                x = self.images.index_select(0, idx) if shifts is None else self._augmented(idx, shifts, flips)
            if warps is not None:
                x = warp_batch(x, warps, idx)
            # to() copies, so the in-place ops never touch the resident uint8 set.
            x = x.to(self.dtype).mul_(self._scale).add_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


class NormalizedImageDataset(torch.utils.data.Dataset):
    """Map-style view of uint8 images: item i is (float32 [C, H, W] normalised, int label).

    Module-level and holding only tensors, so it pickles for DataLoader worker processes.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images.cpu()
        self.labels = labels.cpu().long()
        scale, shift = normalisation(mean, std, images.shape[1])
        self.scale, self.shift = scale[0].float(), shift[0].float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # Same arithmetic as BatchIterator, so both give bit-identical samples.
        x = self.images[index].to(torch.float32).mul_(self.scale).add_(self.shift)
        return x, int(self.labels[index])


def as_torch_dataset(
    images: torch.Tensor, labels: torch.Tensor, mean: float | Sequence[float], std: float | Sequence[float]
) -> torch.utils.data.Dataset:
    """A standard map-style Dataset over uint8 images [N, C, H, W]; works with DataLoader(num_workers=N)."""
    return NormalizedImageDataset(images, labels, mean, std)
