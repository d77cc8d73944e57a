"""A run's data recreated: its dataset, checked against the classes its model knows, and its splits as
the run made them (the seed and valid fraction of its config).

`mnistlab evaluate` and `mnistlab predict --dataset` both score splits recreated here.
"""

from __future__ import annotations

from typing import Any

import torch

from mnistlab.errors import MnistlabError, UsageError


def split_images(data: Any, config: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of `split` (train/valid/test), recreated exactly as the run split them."""
    from mnistlab.data import split_indices

    if split == "test":
        return data.test_images, data.test_labels
    train_idx, valid_idx = split_indices(
        data.train_labels, float(config.get("valid_fraction") or 0.0), int(config.get("seed", 0)),
        bool(config.get("stratify", False)),
    )
    idx = valid_idx if split == "valid" else train_idx
    if split == "valid" and len(idx) == 0:
        raise UsageError("this run has no validation split (valid_fraction was 0); use --split test")
    return data.train_images[idx], data.train_labels[idx]


def run_dataset(config: dict[str, Any], classes: list[str], data_dir: str | None = None,
                name: str | None = None, shape: dict[str, Any] | None = None) -> Any:
    """A run's dataset (or dataset `name` instead), checked to have the classes the model was trained on.

    Args:
        config: the run's config (its dataset, data_dir and seed: the seed of a folder: or csv:
            dataset's held-out test split; channels, image_size and labels).
        classes: the checkpoint's class names.
        data_dir: where the dataset lives, if not where the run found it.
        shape: the checkpoint's "data" (in_channels, image_size): a folder: dataset is read in the
            shape the run trained on, whatever --channels auto would decide now.
    """
    from mnistlab.data import load_dataset
    from mnistlab.data.sources import data_options

    name = name or config["dataset"]
    if name == "tensors" or str(name).startswith("dataset:"):
        raise MnistlabError(
            f"this run was trained on data passed to mnistlab.fit ({name}), which no run folder holds: "
            "evaluate its model on your data in Python (mnistlab.load_model(run, ...))"
        )
    options = data_options({**config, "dataset": name}, shape)
    data = load_dataset(name, data_dir or config.get("data_dir"), seed=int(config.get("seed", 0)), **options)
    if list(data.classes) != list(classes):
        raise MnistlabError(
            f"the dataset {name!r} found now has classes {list(data.classes)[:5]}..., "
            f"but the run was trained on {list(classes)[:5]}...; pass the right dataset or --data-dir"
        )
    return data
