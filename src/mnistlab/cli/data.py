"""`mnistlab data info|download|show`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from mnistlab.cli.common import add_data_flags, add_shape_flags

if TYPE_CHECKING:
    from mnistlab.data import DatasetSpec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download, inspect and look at datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))

    q = dsub.add_parser("info", help="split sizes, class histogram, file location and integrity")
    add_data_flags(q, dataset_default="mnist")
    add_shape_flags(q)
    q.add_argument("--valid-fraction", type=float, default=0.2, help="the train/valid split to show (default 0.2)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(handler=run_info)

    q = dsub.add_parser("download", help="download a dataset (mirrors tried in order, sha256 verified where the catalog has it)")
    add_data_flags(q, dataset_default="mnist")
    q.set_defaults(handler=run_download)

    q = dsub.add_parser("show", help="save a labelled grid of samples as a PNG")
    add_data_flags(q, dataset_default="mnist")
    add_shape_flags(q)
    q.add_argument("--split", choices=["train", "test"], default="train")
    q.add_argument("--n", type=int, default=32, help="number of images (1-400)")
    q.add_argument("--seed", type=int, default=0, help="which random images")
    q.add_argument("--out", required=True, metavar="FILE.png")
    q.set_defaults(handler=run_show)
    p.set_defaults(handler=lambda args: p.print_help() or 2)


def run_info(args: argparse.Namespace) -> int:
    import torch

    from mnistlab.class_weights import imbalance, imbalance_advice
    from mnistlab.data import DATASETS, load_dataset, resolve_data_root, split_indices, verify_dataset
    from mnistlab.data.catalog import is_archive_dataset
    from mnistlab.data.sources import data_options

    data_dir = getattr(args, "data_dir", None)
    data = load_dataset(args.dataset, data_dir, seed=args.seed, **data_options(args))
    print(f"dataset   {data.name}")
    print(f"location  {data.location}")
    if args.dataset in DATASETS:
        checks = verify_dataset(args.dataset, resolve_data_root(data_dir))
        print(f"integrity {_integrity(DATASETS[args.dataset], checks)}")
    elif is_archive_dataset(args.dataset):
        print(f"integrity {_archive_integrity(verify_dataset(args.dataset, resolve_data_root(data_dir)))}")
    train_idx, valid_idx = split_indices(data.train_labels, args.valid_fraction, args.seed)
    print(
        f"images    {data.in_channels}x{data.image_size}x{data.image_size} uint8, {data.num_classes} classes, "
        f"mean {', '.join(f'{m:.4f}' for m in data.mean)} std {', '.join(f'{s:.4f}' for s in data.std)}"
        + (f" ({data.note})" if data.note else "")
    )
    print(f"memory    {_memory_line(data)}")
    print(
        f"splits    train {len(train_idx)} + valid {len(valid_idx)} (of {len(data.train_labels)}, "
        f"valid fraction {args.valid_fraction:g}, seed {args.seed}), test {len(data.test_labels)}"
    )
    k = data.num_classes
    train_hist = torch.bincount(data.train_labels, minlength=k).tolist()
    test_hist = torch.bincount(data.test_labels, minlength=k).tolist()
    width = max(5, max(len(c) for c in data.classes))
    print(f"\n{'class':<{width}} {'train':>7} {'test':>7}")
    for name, a, b in zip(data.classes, train_hist, test_hist):
        print(f"{name:<{width}} {a:>7} {b:>7}")
    warning = imbalance(train_hist, list(data.classes))
    if warning:
        sys.stdout.flush()
        print(f"warning: {warning}; {imbalance_advice(train_hist)}",
              file=sys.stderr)
    return 0


_UNCHECKED = "no checksum in the catalog: shape and format checked only"


def _memory_line(data: object) -> str:
    """How much memory each split's uint8 images take, against the budget (mnistlab.data.memory)."""
    from mnistlab.data.memory import format_bytes, memory_budget

    train, test = data.train_images, data.test_images  # type: ignore[attr-defined]
    sizes = [int(x.numel()) for x in (train, test)]
    return (f"train {format_bytes(sizes[0])} + test {format_bytes(sizes[1])} = {format_bytes(sum(sizes))} "
            f"(uint8; budget {format_bytes(memory_budget())}, MNISTLAB_MEMORY_BUDGET)")


def _archive_integrity(checks: dict[str, str]) -> str:
    """The integrity line of an archive dataset (cifar10, cifar100)."""
    if set(checks.values()) == {"ok"}:
        return "all files verify (sha256 recorded when extracted from the archive with the official md5)"
    if set(checks.values()) <= {"ok", "unverified"}:
        return ("files have the right sizes; no SHA256SUMS (extracted by hand?): put the archive in the folder "
                "and run `mnistlab data download` to check its md5")
    return "; ".join(f"{name.rsplit('/', 1)[-1]}: {status}" for name, status in checks.items() if status != "ok")


def _integrity(spec: DatasetSpec, checks: dict[str, str]) -> str:
    """The `integrity` line: what was checked, never a sha256 check for a file the catalog has none for."""
    if all(v == "ok" for v in checks.values()):
        if spec.has_checksums:
            return "all files verify (sha256)"
        if all(sha is None for _, sha in spec.files.values()):
            return f"all files pass; {_UNCHECKED}"

    def one(key: str, status: str) -> str:
        if status != "ok":
            return status
        return "ok (sha256)" if spec.files[key][1] is not None else f"ok ({_UNCHECKED})"

    return "; ".join(f"{k}: {one(k, v)}" for k, v in checks.items())


def run_download(args: argparse.Namespace) -> int:
    from mnistlab.data import download_dataset, get_dataset_spec, resolve_data_root

    from mnistlab.data.catalog import is_archive_dataset

    folder = download_dataset(args.dataset, resolve_data_root(getattr(args, "data_dir", None)))
    if is_archive_dataset(args.dataset):
        checked = "archive md5 verified, sha256 of its files recorded in SHA256SUMS"
    else:
        checked = "sha256 verified" if get_dataset_spec(args.dataset).has_checksums else _UNCHECKED
    print(f"{args.dataset} is ready in {folder} ({checked})")
    return 0


def run_show(args: argparse.Namespace) -> int:
    import torch

    from mnistlab.data import load_dataset
    from mnistlab.data.sources import data_options
    from mnistlab.errors import UsageError
    from mnistlab.plots import save_image_grid

    if not 1 <= args.n <= 400:
        raise UsageError(f"--n {args.n}: choose 1 to 400 images")
    data = load_dataset(args.dataset, getattr(args, "data_dir", None), seed=args.seed, **data_options(args))
    images = data.train_images if args.split == "train" else data.test_images
    labels = data.train_labels if args.split == "train" else data.test_labels
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(images), generator=gen)[: args.n]
    titles = [data.classes[int(labels[i])] for i in idx]
    save_image_grid(images[idx], titles, args.out, title=f"{data.name} {args.split}: {len(idx)} samples")
    print(f"wrote {args.out}")
    return 0
