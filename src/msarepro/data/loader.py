"""Batches for the training loop: a split's arrays as tensors, sliced by index.

A batch is a dict of tensors (B = batch size; masks are True on real positions):
    trimodal:    text (B, Lt, Dt), text_mask (B, Lt), audio (B, La, Da), audio_mask, vision (B, Lv, Dv),
                 vision_mask, [text_ids (B, Li), text_ids_mask (B, Li)]
    image_text:  image (B, C, H, W) float in [0, 1], text_ids (B, Li), text_ids_mask (B, Li)
                 [, clip_ids (B, Lc), clip_ids_mask (B, Lc)]  (ids put in by data/tokens.provide_tokens)
    always:      y (B,) float (regression) or long (classification), index (B,) row numbers in the split
    optional:    y_T, y_A, y_V (B,) unimodal labels
Every array with a `<name>_lengths` companion is a sequence: it is cut to the longest true length in the batch
and gets `<name>_mask`.

A lazily loaded split (format.load_dataset(lazy=True)) reads each batch's rows from its files (sorted by row for
the reads, returned in the batch's order): the same tensors, same dtype and values, as from memory.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .format import CanonicalDataset, Split
from .stfile import LazyArray


class SplitTensors:
    def __init__(self, split: Split, task: str, label_columns: list[str], seq_names: tuple[str, ...] | None = None):
        """seq_names: the arrays treated as sequences; None: every array with a `<name>_lengths` companion.
        Arrays of a lazily loaded split (stfile.LazyArray) stay in their file (`self.lazy`) and are read a batch
        at a time; the others, the labels included, are tensors in `self.tensors`."""
        self.name = split.name
        self.ids = split.labels["id"].astype(str).tolist()
        self.tensors: dict[str, torch.Tensor] = {}
        self.lazy: dict[str, LazyArray] = {}
        self.keys: list[str] = list(split.arrays)  # batch order: the split's arrays, then the labels
        for k, a in split.arrays.items():
            if isinstance(a, LazyArray):
                self.lazy[k] = a
            else:
                self.tensors[k] = torch.from_numpy(np.ascontiguousarray(a))
        if seq_names is None:
            seq_names = tuple(k for k in self.keys if f"{k}_lengths" in split.arrays)
        self.seq_names = tuple(n for n in seq_names if n in split.arrays)
        if split.name != "unlabeled":
            dtype = torch.long if task == "classification" else torch.float32
            self.tensors["y"] = torch.tensor(split.labels["M"].to_numpy(), dtype=dtype)
            for c in label_columns[1:]:
                self.tensors[f"y_{c}"] = torch.tensor(split.labels[c].to_numpy(), dtype=torch.float32)
            self.keys += ["y"] + [f"y_{c}" for c in label_columns[1:]]

    def __len__(self) -> int:
        return len(self.ids)

    def _rows(self, k: str, idx: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Array k at rows idx (cut to `length` frames): a fresh tensor, from memory or read from the file."""
        if k in self.lazy:
            return torch.from_numpy(self.lazy[k].rows(idx.numpy(), length))
        t = self.tensors[k]
        return t[idx] if length is None else t[idx, :length]

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {"index": idx}
        for k in self.keys:
            if k.endswith("_lengths"):
                continue
            if k == "image":
                out[k] = self._rows(k, idx).float() / 255.0
            elif k in self.seq_names:
                lens = self.tensors[f"{k}_lengths"][idx]
                L = int(lens.max())
                out[k] = self._rows(k, idx, L)
                out[f"{k}_mask"] = torch.arange(L)[None, :] < lens[:, None]
            else:
                out[k] = self._rows(k, idx)
        return out

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - (n % batch_size) if drop_last and n >= batch_size else n
        for s in range(0, stop, batch_size):
            yield self.batch(order[s:s + batch_size])


def to_tensors(ds: CanonicalDataset) -> dict[str, SplitTensors]:
    m = ds.manifest
    return {name: SplitTensors(s, m.task, m.label_columns) for name, s in ds.splits.items()}


def to_device(batch: dict[str, torch.Tensor], device: torch.device, pin: bool = False) -> dict[str, torch.Tensor]:
    """The batch on `device`. pin (CUDA only, `runtime.pin_memory`): each tensor is first copied to page-locked
    host memory, so that its copy to the GPU is truly asynchronous (from pageable memory non_blocking=True is a
    synchronous copy); the values are the same either way."""
    if pin:
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
