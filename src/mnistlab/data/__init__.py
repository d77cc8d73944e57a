"""The data layer: dataset catalog, IDX files, downloads, loading, splits and batching.

Public API:
    DatasetSpec, DATASETS, get_dataset_spec, resolve_data_root   (catalog)
    read_idx, write_idx                                          (IDX files)
    download_dataset, verify_dataset                             (downloads and integrity)
    ImageData, load_dataset, DataWarning                         (loading by name)
    split_indices                                                (train/valid splits)
    BatchIterator, as_torch_dataset                              (batches)
"""

from __future__ import annotations

from mnistlab.data.catalog import DATASETS, DatasetSpec, get_dataset_spec, resolve_data_root
from mnistlab.data.download import download_dataset, verify_dataset
from mnistlab.data.idx import read_idx, write_idx
from mnistlab.data.loader import BatchIterator, as_torch_dataset
from mnistlab.data.sources import DataWarning, ImageData, load_dataset
from mnistlab.data.split import split_indices

__all__ = [
    "DATASETS",
    "BatchIterator",
    "DataWarning",
    "DatasetSpec",
    "ImageData",
    "as_torch_dataset",
    "download_dataset",
    "get_dataset_spec",
    "load_dataset",
    "read_idx",
    "resolve_data_root",
    "split_indices",
    "verify_dataset",
    "write_idx",
]
