"""Datasets: the registry, the canonical on-disk format, embedded generators, batching."""
from .format import CanonicalDataset, DatasetError, Manifest, load_dataset, write_dataset
from .ensure import ensure_dataset
from .registry import DATASETS, DatasetInfo, dataset_dir

__all__ = ["CanonicalDataset", "DatasetError", "Manifest", "load_dataset", "write_dataset",
           "DATASETS", "DatasetInfo", "dataset_dir", "ensure_dataset"]
