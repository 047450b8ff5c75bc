"""The base class every method derives from, and the hooks the one training loop calls.

A method is an nn.Module with:
    Config                 a frozen dataclass subclassing config.MethodConfig (its params.yaml block)
    families               dataset families it handles ("trimodal", "image_text")
    uses_pretraining       True if its runs load the `pretrain` stage's output (the pipeline pretrains for them)
    forward(batch) -> dict  at least "pred": (B,) for regression, (B, C) logits for classification
    losses(out, batch, epoch) -> dict of weighted loss terms; the loop minimises their sum
    param_groups()         optional per-group learning rates (e.g. a text encoder at a smaller lr)
    on_epoch_start(epoch, train_split)  optional, e.g. refreshing a retrieval bank
    on_train_start()       optional, once before training: load external inputs (pretrained weights)
    stage_starts()         optional, the first epoch of each training stage (default: one stage from epoch 0);
                           the loop builds a fresh optimizer and schedule at each start
    enter_stage(stage)     optional, called before a stage's optimizer is built (and on resume inside it), so
                           that param_groups() can return that stage's trainable parameters
    count(name, n)         record a per-epoch counter; the loop writes each as history.csv column train_<name>
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig


class Method(nn.Module):
    name: str = ""
    Config: type[MethodConfig] = MethodConfig
    families: tuple[str, ...] = ("trimodal",)
    uses_pretraining: bool = False  # True: runs load the `pretrain` stage's output (methods.pretraining_methods())

    def __init__(self, cfg: MethodConfig, manifest):
        super().__init__()
        self._epoch_counters: dict[str, float] = {}
        self.cfg = cfg
        self.manifest = manifest
        self.task = manifest.task
        self.out_dim = manifest.num_classes if manifest.task == "classification" else 1
        fits = {"regression": ("auto", "mse", "l1"), "classification": ("auto", "ce")}[self.task]
        if cfg.task_loss not in fits:
            raise ConfigError(f"methods.{self.name}.task_loss: {cfg.task_loss!r} does not fit dataset "
                              f"{manifest.name!r} ({self.task}); use one of {', '.join(fits)} (in a preset "
                              f"methods.{self.name}.presets.{manifest.preset or manifest.name} for this dataset)")

    def task_loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kind = self.cfg.task_loss
        if kind == "auto":
            kind = "ce" if self.task == "classification" else "mse"
        if kind == "ce":
            return F.cross_entropy(pred, y)
        if kind == "mse":
            return F.mse_loss(pred, y)
        if kind == "l1":
            return F.l1_loss(pred, y)
        raise ConfigError(f"methods.{self.name}.task_loss: {kind!r}; expected one of "
                          f"{', '.join(MethodConfig.TASK_LOSSES)}")

    def losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        return {"task": self.task_loss(out["pred"], batch["y"])}

    def param_groups(self) -> list[dict[str, Any]] | None:
        return None

    def on_epoch_start(self, epoch: int, train_split) -> None:
        pass

    def stage_starts(self) -> tuple[int, ...]:
        """The first epoch of each training stage, ascending, starting at 0. At each start the training loop builds
        a fresh optimizer (no moment estimates carried over) and a fresh schedule whose horizon (warm-up, decay) is
        that stage's epochs, over the parameters `param_groups()` returns after `enter_stage`."""
        return (0,)

    def enter_stage(self, stage: int) -> None:
        """Called with the stage's index in `stage_starts()` before its optimizer is built, and on resume."""

    def count(self, name: str, n: float) -> None:
        """Add n to this epoch's counter `name` (e.g. pairs a loss wanted and could not form); the training loop
        writes the epoch's total to history.csv as column `train_<name>`."""
        self._epoch_counters[name] = self._epoch_counters.get(name, 0) + n

    def pop_epoch_counters(self) -> dict[str, float]:
        """The counters since the last call, and reset them (the training loop calls this once per epoch)."""
        counters, self._epoch_counters = self._epoch_counters, {}
        return counters

    def on_train_start(self) -> dict[str, Any]:
        """Called once by the training loop after the model is built, before the optimizer: load external inputs
        (e.g. pretrained weights). Returns their provenance (path, SHA-256), stored in the run's config.json."""
        return {}

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Shape the final output: (B, 1) -> (B,) for regression, (B, C) logits unchanged."""
        return h.squeeze(-1) if self.task == "regression" else h
