"""The base class every method derives from, and the hooks the one training loop calls.

A method is an nn.Module with:
    Config                 a frozen dataclass subclassing config.MethodConfig (its params.yaml block)
    families               dataset families it handles ("trimodal", "image_text")
    uses_pretraining       True if its runs load the `pretrain` stage's output (the pipeline pretrains for them)
    sweep_priority         Snakemake's priority for its jobs (higher starts first): the long runs start
                           first, so that no slot idles while one long job finishes at the end of a sweep
    paper_names            how the papers' result tables write it besides its name (MAG-BERT: mag-bert,
                           bert_mag), so that their rows join its runs (methods.paper_aliases)
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
    epoch_artifacts(epoch) optional, arrays the method keeps per epoch (Self-MM's generated labels); the loop writes
                           them after each epoch to the run's epochs/method_NNN.npz
    fit_heads(setting, width, heads)  a head count for a width fixed by the data (a feature size): the configured
                           one when it divides the width, else the largest divisor below it, recorded in
                           `adapted` (config.json "adapted"), so that presets build on any feature sizes

Before anything is built, three class-level hooks say what the method needs from a dataset:
    token_requests(cfg, manifest)  the token ids it reads (batch key, tokenizer, length); the loop provides them
    check(cfg, manifest)           every precondition on the dataset (family, arrays, tokens, task, ...), all
                                   problems in ONE ConfigError, before any tokenizer or weights load
                                   (`methods.build_method` and the training loop call it first)
    required_modalities(cfg, manifest)  the manifest modalities the model reads (part of `check`)
    pretraining_settings(cfg)      (methods that pretrain) the Config fields pretraining depends on; with the
                                   `pretrain:` settings they key the pretrained output (methods.pretrain_settings)
and one on the built model:
    frozen_modules()       sub-modules whose weights come from outside and never change (a frozen BERT, CLIP):
                           left out of checkpoint.pt / best.pt, which keep only their SHA-256 fingerprint
    cached(name, batch, compute)  a frozen sub-computation (fixed weights, eval mode, each row depending only
                           on its own sample) computed once per clip and split, then read back (see `cached`)
"""
from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig


# The config field that chooses the tokenizer behind each token request's batch key (named in check's message).
TOKEN_SETTING = {"text_ids": "text_encoder", "clip_ids": "clip_model"}


class Method(nn.Module):
    name: str = ""
    Config: type[MethodConfig] = MethodConfig
    families: tuple[str, ...] = ("trimodal",)
    uses_pretraining: bool = False  # True: runs load the `pretrain` stage's output (methods.pretraining_methods())
    sweep_priority: int = 0  # Snakemake job priority; AE-MT and MulT, the longest runs, start first
    # How the papers' tables write the method besides its name (reports/paper_results/*.csv `method`: mag-bert,
    # bert_mag); the name with "-" for "_" is always one (methods.paper_aliases)
    paper_names: tuple[str, ...] = ()

    def __init__(self, cfg: MethodConfig, manifest):
        super().__init__()
        self._epoch_counters: dict[str, float] = {}
        self._split = None  # the split the next batches come from (`use_split`): the key of `cached`
        self._cache: dict[tuple[str, str], tuple[torch.Tensor, ...] | torch.Tensor] = {}
        self.cfg = cfg
        self.manifest = manifest
        self.task = manifest.task
        self.out_dim = manifest.num_classes if manifest.task == "classification" else 1
        self.adapted: dict[str, dict[str, int]] = {}  # settings changed to fit the data (`fit_heads`); config.json

    def fit_heads(self, setting: str, width: int, heads: int) -> int:
        """The head count `setting` (= `heads`) resolves to on a `width`-wide input (blocks.fitting_heads): itself
        when it divides `width`, else the largest divisor below it, said on stderr and recorded in `adapted` (the
        training loop writes it to config.json under "adapted"), so that e.g. an embedded-data preset's 2 audio
        heads become 1 on MOSI's 5-d audio instead of stopping the run."""
        from .blocks import fitting_heads
        used = fitting_heads(width, heads)
        if used != heads:
            self.adapted[setting] = {"configured": heads, "used": used, "width": width}
            print(f"methods.{self.name}.{setting}: {heads} heads do not divide the {width}-d input of dataset "
                  f"{self.manifest.name!r}; using {used} (the largest divisor below {heads})", file=sys.stderr)
        return used

    # -- what the method needs from a dataset (class level: nothing is built, nothing loads) ---------------------
    @classmethod
    def pretraining_settings(cls, cfg: MethodConfig) -> dict:
        """The part of the Config its pretraining depends on (AE-MT: the encoder architecture); {} = none."""
        return {}

    @classmethod
    def text_source(cls, cfg: MethodConfig, manifest) -> str:
        """What the model's text encoder reads: the config's `text_encoder` (see methods/text_encoder.py), or
        "features" (precomputed token features) for a method without one."""
        return getattr(cfg, "text_encoder", "features")

    @classmethod
    def token_requests(cls, cfg: MethodConfig, manifest) -> list:
        """The token ids the model reads, as `data.tokens.TokenRequest`s: by default `text_ids` in the tokenizer of
        the text encoder (`text_source`); none when the method reads precomputed text features."""
        source = cls.text_source(cfg, manifest)
        if source == "features":
            return []
        from ..data.tokens import TokenRequest, tokenizer_for_encoder
        return [TokenRequest("text_ids", tokenizer_for_encoder(source))]

    @classmethod
    def required_modalities(cls, cfg: MethodConfig, manifest) -> tuple[str, ...]:
        """Modalities of the manifest the model reads, token ids aside (those are `token_requests`). Default:
        trimodal audio and vision, and the text features unless a text encoder reads token ids; image-text the
        image."""
        if manifest.family == "image_text":
            return ("image",)
        text = ("text",) if cls.text_source(cfg, manifest) == "features" else ()
        return (*text, "audio", "vision")

    @classmethod
    def problems(cls, cfg: MethodConfig, manifest) -> list[str]:
        """Every reason this method, so configured, cannot run on the dataset `manifest` describes (empty: it can).
        Subclasses with preconditions of their own extend the list (`super().problems(...)` first) so that `check`
        reports them all together."""
        where = f"methods.{cls.name}"
        preset = f"{where}.presets.{manifest.preset or manifest.name}"
        if manifest.family not in cls.families:  # nothing else applies to another family's data
            return [f"it handles {'/'.join(cls.families)} datasets, and {manifest.name!r} is {manifest.family}"]
        out = []
        fits = {"regression": ("auto", "mse", "l1"), "classification": ("auto", "ce")}[manifest.task]
        if cfg.task_loss not in fits:
            out.append(f"{where}.task_loss: {cfg.task_loss!r} does not fit dataset {manifest.name!r} "
                       f"({manifest.task}); use one of {', '.join(fits)} (in the preset {preset} for this dataset)")
        missing = [m for m in cls.required_modalities(cfg, manifest) if m not in manifest.modalities]
        if missing:
            out.append(f"the model reads {', '.join(missing)}, which the dataset does not carry (it has "
                       f"{', '.join(sorted(manifest.modalities))})")
        source = cls.text_source(cfg, manifest)
        if (source != "features" and "text_ids" not in manifest.modalities
                and not getattr(manifest, "raw_text", False)):
            fix = (f"(only precomputed text features); set it to features, for this dataset in {preset}"
                   if manifest.family == "trimodal" else "(nor raw text); re-import the dataset with its text")
            out.append(f"{where}.text_encoder: {source!r} reads token ids, but dataset {manifest.name!r} has none {fix}")
            return out
        requests = cls.token_requests(cfg, manifest)
        if requests:
            from ..data.tokens import check_request
            for req in requests:
                problem = check_request(manifest, req, f"{where}.{TOKEN_SETTING.get(req.key, req.key)}")
                if problem:
                    out.append(problem)
        return out

    @classmethod
    def check(cls, cfg: MethodConfig, manifest) -> None:
        """Every precondition on the dataset, before any tokenizer or weights load: ONE ConfigError
        "methods.<name> cannot run on dataset <ds>: <problem>; <problem>" listing all of `problems`."""
        found = cls.problems(cfg, manifest)
        if found:
            raise ConfigError(f"methods.{cls.name} cannot run on dataset {manifest.name!r}: " + "; ".join(found))

    def frozen_modules(self) -> list[nn.Module]:
        """Sub-modules whose weights come from outside and never change in training (a frozen CLIP, a frozen
        BERT): checkpoints leave their tensors out and store their fingerprint. Default: whatever the building
        blocks declare frozen (a `TextEncoder` with finetune=False). Momentum encoders and queues change during
        training: they are not frozen and stay in the checkpoint."""
        found: dict[int, nn.Module] = {}
        for sub in self.modules():
            if sub is not self and not isinstance(sub, Method) and hasattr(sub, "frozen_modules"):
                for m in sub.frozen_modules():
                    found.setdefault(id(m), m)
        return list(found.values())

    # -- training -------------------------------------------------------------------------------------------
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

    def epoch_artifacts(self, epoch: int) -> dict[str, Any]:
        """Named numpy arrays to keep with the run for this epoch, read after its training steps; the training loop
        writes them (when there are any) to epochs/method_NNN.npz, NNN the epoch. Default: none."""
        return {}

    def pop_epoch_counters(self) -> dict[str, float]:
        """The counters since the last call, and reset them (the training loop calls this once per epoch)."""
        counters, self._epoch_counters = self._epoch_counters, {}
        return counters

    # -- frozen sub-computations, once per clip ----------------------------------------------------------------
    frozen_cache: bool = True  # False: `cached` always computes (the tests compare both)

    def use_split(self, split) -> None:
        """The training loop says which split (a data.loader.SplitTensors) the next batches come from, before each
        training epoch and each prediction pass; None: unknown (then `cached` computes every time)."""
        self._split = split

    @torch.compiler.disable  # bookkeeping in Python: run eagerly under runtime.compile (a graph break)
    def cached(self, name: str, batch: dict[str, torch.Tensor], compute, chunk: int = 256):
        """compute(batch) -> a tensor (B, ...) or a tuple of them: a sub-computation whose row b depends only on
        sample b and that does not change while the cache lives (frozen weights, eval mode: no dropout, no RNG
        draws). With the cache on and the split known (`use_split`), the first call runs `compute` over the
        whole split in order, `chunk` clips at a time, and keeps the rows (on the batch's device); every call
        returns the rows of batch["index"], with no host synchronisation. The method clears the cache
        (`clear_cached`) whenever those weights may change (a new training stage; loading weights does it).
        The values equal those computed per batch wherever the sub-computation is batch-invariant (a row's result
        independent of its batch-mates and of the batch's padding): so on CPU here (tests/test_runtime.py); on a
        GPU another batch shape may select another kernel, a difference at float rounding level."""
        split = self._split
        if not self.frozen_cache or split is None or "index" not in batch:
            return compute(batch)
        key = (name, split.name)
        if key not in self._cache:
            dev = batch["index"].device
            parts = [compute({k: v.to(dev) for k, v in b.items()}) for b in split.batches(chunk, shuffle=False)]
            if isinstance(parts[0], torch.Tensor):
                self._cache[key] = torch.cat(parts)
            else:
                self._cache[key] = tuple(torch.cat(p) for p in zip(*parts))
        stored, idx = self._cache[key], batch["index"]
        return stored[idx] if isinstance(stored, torch.Tensor) else tuple(t[idx] for t in stored)

    def clear_cached(self) -> None:
        """Forget every row `cached` kept (their weights are about to change)."""
        self._cache = {}

    def on_train_start(self) -> dict[str, Any]:
        """Called once by the training loop after the model is built, before the optimizer: load external inputs
        (e.g. pretrained weights). Returns their provenance (path, SHA-256), stored in the run's config.json."""
        return {}

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Shape the final output: (B, 1) -> (B,) for regression, (B, C) logits unchanged."""
        return h.squeeze(-1) if self.task == "regression" else h
