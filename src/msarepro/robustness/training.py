"""Training with LNLN's random drops (`train_missing_rate`, a setting every method has; docs/robustness.md).

LNLN (Zhang et al., NeurIPS 2024) trains on incomplete inputs: at every epoch, for each modality separately, each
training clip gets a missing rate drawn uniformly, and half of the clips (a random half per modality) get rate 0;
the clip's positions of that modality are then dropped at its rate as at test time (perturb.random_drop: token ids
to [UNK] with the first and last real token kept, frames and feature vectors to zero). `train_missing_rate` is the
top of the uniform draw: 1.0 is LNLN's U(0, 1); 0 (the default) trains on complete inputs and draws nothing, so
runs without it are bit for bit as before.

Randomness. The rates of an epoch are drawn for the whole training split at once, and the masks of each batch from
one generator per modality, all seeded from (run seed, epoch, modality) and not from torch's global generator:
a run resumed at epoch e draws the drops an uninterrupted run draws there, and the model's own draws (dropout,
shuffling) do not move. Shapes: rates (N,) per modality over the training split; a batch's (B,) by its `index`.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

import torch

from .perturb import FAMILY_MODALITIES, SpecialIds, random_drop

STREAM = "train-missing"


def _seed(seed: int, epoch: int, modality: str, what: str) -> int:
    digest = hashlib.sha256(f"{STREAM}|{seed}|{epoch}|{modality}|{what}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def lnln_rates(n: int, max_rate: float, generator: torch.Generator) -> torch.Tensor:
    """(n,) per-clip missing rates: U(0, max_rate), then 0 for a random half (floor(n / 2) clips), as LNLN."""
    rates = torch.rand(n, generator=generator) * max_rate
    complete = torch.randperm(n, generator=generator)[: n // 2]
    rates[complete] = 0.0
    return rates


class TrainingDrops:
    """Drops for one run's training batches. `start_epoch(e)` before the epoch's batches, then `apply(batch)`
    (a CPU batch with `index`, the rows in the training split) -> a new batch."""

    def __init__(self, max_rate: float, family: str, n_train: int, seed: int, special: Mapping[str, SpecialIds],
                 keys: Iterable[str] | None = None):
        self.max_rate, self.n, self.seed, self.special = max_rate, n_train, seed, dict(special)
        self.modalities = tuple(m for m in FAMILY_MODALITIES[family] if m != "image")  # images: not sequences
        self.keys = None if keys is None else frozenset(keys)
        self.rates: dict[str, torch.Tensor] = {}
        self.generators: dict[str, torch.Generator] = {}

    def start_epoch(self, epoch: int) -> None:
        for m in self.modalities:
            self.rates[m] = lnln_rates(self.n, self.max_rate,
                                       torch.Generator().manual_seed(_seed(self.seed, epoch, m, "rates")))
            self.generators[m] = torch.Generator().manual_seed(_seed(self.seed, epoch, m, "masks"))

    def apply(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        idx = batch["index"]
        for m in self.modalities:
            batch = random_drop(batch, self.rates[m][idx], (m,), special=self.special,
                                generators={m: self.generators[m]}, keys=self.keys)
        return batch
