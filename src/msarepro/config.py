"""params.yaml -> frozen dataclasses. The one place that reads configuration; the ground floor (it imports no
other part of msarepro but `metrics`, for the metric names a setting may name).

params.yaml layout (one typed section each; an unknown key anywhere is an error that lists the known ones):
    model, dataset, seed       the single experiment of the `train` stage (`dvc exp run -S model=sfttr`)
    data:       DataConfig      root, synth_seed, synth_scale, verify_hashes
    sweep:      SweepConfig     methods, datasets, seeds (the grid Snakemake fans out)
    pipeline:   PipelineConfig  datasets (what download -> check prepare), pretrain_seed
    evaluate:   EvaluateConfig  ci_level, bootstrap_resamples, bootstrap_seed
    regression: RegressionConfig  the smoke run of `msarepro check-regression`
    pretrain:   PretrainConfig  AE-MT's autoencoder pretraining, with `presets:` per dataset preset
    methods:    <name>: {<field>: value, ..., presets: {<dataset preset>: {<field>: value}}}
    variants:   <name>: VariantConfig   a named method with settings over its block (a paper's ablation row)
    ablations:  AblationsConfig  the ablation grid (variants x datasets x seeds), run by the sweep stage

A method's fields are its `Config` dataclass (optimisation fields from `MethodConfig` plus its own); a preset
named after a dataset (`synth-mosi`, `mosi`, ...) overrides them for that dataset (`with_preset`). The method
blocks need the method registry, which sits above this module: `msarepro.methods.load_params` validates them
and is the loader every command uses; `msarepro.methods.method_config` resolves one.
Overrides on the command line use DVC's syntax, `-S methods.mult.lr=1e-3`, with the value read as YAML.
Nothing mutates a config after it is built; every run stores its resolved config beside its metrics.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and says what is accepted."""


def _choice(where: str, key: str, value, ok) -> None:
    if value not in ok:
        raise ConfigError(f"{where}.{key}: {value!r}; expected one of {', '.join(ok)}")


@functools.lru_cache(maxsize=None)
def metric_names() -> tuple[str, ...]:
    """Every metric name `msarepro.metrics` computes, over all metric families (asked of the code, not listed)."""
    import numpy as np

    from . import metrics

    y = np.linspace(-1.0, 1.0, 8)
    names = set(metrics.compute("mosi", y, y)) | set(metrics.compute("sims", y, y))
    for avg in ("weighted", "macro"):
        names |= set(metrics.compute("cls", np.arange(8) % 2, np.arange(8) % 2, avg))
    return tuple(sorted(names))


@dataclass(frozen=True)
class MethodConfig:
    """Optimisation settings every method has; a method's own Config subclasses this."""
    batch_size: int = 32
    max_epochs: int = 30
    patience: int = 8  # early stopping: epochs without validation improvement
    select_metric: str = "loss"  # validation quantity for model selection: "loss" or a metric name
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: str = "none"  # none | cosine | linear (both with warm-up) | plateau (ReduceLROnPlateau)
    warmup_ratio: float = 0.0
    grad_clip: float = 0.0  # max grad norm; 0 = off
    task_loss: str = "auto"  # auto (mse / ce by task) | mse | l1 | ce
    # LNLN's training on incomplete inputs (robustness/training.py): per epoch and modality, a clip's missing rate
    # ~ U(0, train_missing_rate), 0 for a random half of the clips; 0 = complete inputs (LNLN: 1.0)
    train_missing_rate: float = 0.0

    OPTIMIZERS = ("adam", "adamw")
    SCHEDULERS = ("none", "cosine", "linear", "plateau")
    TASK_LOSSES = ("auto", "mse", "l1", "ce")

    def validate(self, where: str) -> None:
        _choice(where, "optimizer", self.optimizer, self.OPTIMIZERS)
        _choice(where, "scheduler", self.scheduler, self.SCHEDULERS)
        _choice(where, "task_loss", self.task_loss, self.TASK_LOSSES)
        _choice(where, "select_metric", self.select_metric, ("loss",) + metric_names())
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 0:
            raise ConfigError(f"{where}: batch_size and max_epochs must be >= 1 and patience >= 0 (got "
                              f"{self.batch_size}, {self.max_epochs}, {self.patience})")
        if not 0.0 <= self.train_missing_rate <= 1.0:
            raise ConfigError(f"{where}.train_missing_rate: {self.train_missing_rate}; expected a rate in [0, 1] "
                              "(0 = off; LNLN: 1.0)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"{where}.warmup_ratio: {self.warmup_ratio}; expected a fraction in [0, 1)")


@dataclass(frozen=True)
class DataConfig:
    root: str = "data"
    synth_seed: int = 0
    synth_scale: float = 1.0
    verify_hashes: bool = True


@dataclass(frozen=True)
class SweepConfig:
    methods: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (1111, 1112, 1113)


@dataclass(frozen=True)
class PipelineConfig:
    datasets: tuple[str, ...] = ()  # what the download -> check stages prepare (one DVC stage each)
    pretrain_seed: int = 1111  # the seed of AE-MT's encoder pretraining


@dataclass(frozen=True)
class EvaluateConfig:
    ci_level: float = 0.95
    bootstrap_resamples: int = 10000
    bootstrap_seed: int = 0

    def validate(self, where: str) -> None:
        if not 0.0 < self.ci_level < 1.0:
            raise ConfigError(f"{where}.ci_level: {self.ci_level}; expected a level in (0, 1), e.g. 0.95")
        if self.bootstrap_resamples < 1:
            raise ConfigError(f"{where}.bootstrap_resamples: {self.bootstrap_resamples}; expected >= 1")


@dataclass(frozen=True)
class RegressionConfig:
    expected: str = "ci/expected_metrics.json"
    datasets: tuple[str, ...] = ("synth-mosi", "synth-mvsa")
    seeds: tuple[int, ...] = (1111,)
    scale: float = 0.15
    max_epochs: int = 2
    pretrain_epochs: int = 2
    tolerance: dict[str, float] = dataclasses.field(default_factory=lambda: {"default": 0.02})  # metric -> abs.

    def validate(self, where: str) -> None:
        known = ("default",) + metric_names()
        for k in self.tolerance:
            _choice(f"{where}.tolerance", k, k, known)
        if self.max_epochs < 1 or self.pretrain_epochs < 1 or self.scale <= 0:
            raise ConfigError(f"{where}: max_epochs and pretrain_epochs must be >= 1 and scale > 0")

    def recorded(self) -> dict:
        """The settings an expected-metrics file is recorded with (JSON types)."""
        return {k: to_jsonable(getattr(self, k)) for k in ("datasets", "seeds", "scale", "max_epochs",
                                                             "pretrain_epochs")}


@dataclass(frozen=True)
class RobustnessConfig:
    """The `robustness` stage (msarepro.robustness, docs/robustness.md): the sweep's runs re-scored on TEST under
    perturbations. Empty methods / datasets / seeds mean the sweep's (`sweep:`); perturbations: kind names
    (random_drop, remove, noise, shift, token_drop, patch_mask) or single ones ('noise@10', 'remove@TA'), empty
    = every kind of a dataset's family; rates: the drop kinds' missing rates (LNLN: 0.0 ... 0.9)."""
    enabled: bool = True
    methods: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    perturbations: tuple[str, ...] = ()
    rates: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(10))
    eval_seed: int = 1111  # LNLN's evaluation seed: the same drops for every method, seed and checkpoint

    def validate(self, where: str) -> None:
        if not self.rates or any(not 0.0 <= r <= 1.0 for r in self.rates):
            raise ConfigError(f"{where}.rates: {list(self.rates)}; expected missing rates in [0, 1]")


@dataclass(frozen=True)
class PretrainConfig:
    """AE-MT's autoencoder pretraining (msarepro.pretrain); the encoder architecture is methods.aemt's."""
    epochs: int = 500  # Table 2
    batch_size: int = 64
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max grad norm; 0 = off
    plateau_patience: int = 10  # ReduceLROnPlateau on the held-out L_ae (factor 0.5); 0 = constant lr
    patience: int = 0  # stop after this many epochs without held-out improvement; 0 = run every epoch
    decoder_layers: int = 3  # Table 2
    consistency_weight: float = 0.4  # lambda_1, eq. 10 (Table 2); 0 = w/o MCD (Table 5)
    tamper_p: float = 0.5  # p^tamper, eq. 6 (not printed)
    heldout: float = 0.1  # fraction of the pool held out
    pool: str = "train"  # the clips pretrained on: unlabeled (the split) | train (labels ignored) | both (Section 4.1)

    POOLS = ("unlabeled", "train", "both")

    def validate(self, where: str) -> None:
        _choice(where, "pool", self.pool, self.POOLS)
        if not 0.0 <= self.tamper_p <= 1.0:
            raise ConfigError(f"{where}.tamper_p: {self.tamper_p}; expected a probability in [0, 1]")
        if not 0.0 < self.heldout < 1.0:
            raise ConfigError(f"{where}.heldout: {self.heldout}; expected a fraction in (0, 1)")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"{where}: epochs must be >= 1 and batch_size >= 2 (tampering swaps within a batch)")


@dataclass(frozen=True)
class PretrainSection:
    """`pretrain:` resolved: the section's own values, and each preset's values merged over them."""
    default: PretrainConfig = PretrainConfig()
    presets: dict[str, PretrainConfig] = dataclasses.field(default_factory=dict)

    def resolve(self, preset: str = "") -> PretrainConfig:
        return self.presets.get(preset, self.default)


@dataclass(frozen=True)
class RuntimeConfig:
    """How runs execute, not what they compute (`runtime:` in params.yaml). On CPU every default leaves results bit
    for bit as they were. `precision`, `tf32` and `compile` can change a run's numbers (they enter its fingerprint
    and config.json); `pin_memory` and `load` cannot (same results, other speed or memory)."""
    precision: str = "fp32"  # fp32 | bf16: autocast to bfloat16 where the device supports it
    tf32: bool = True  # CUDA only: TF32 matmuls and convolutions (no effect on CPU)
    compile: bool = False  # torch.compile the model's forward
    pin_memory: bool = True  # CUDA only: page-locked host batches, non-blocking copies
    load: str = "auto"  # auto | memory | lazy: read split files whole, or per batch (lazy); auto: lazy above
    lazy_above_gb: float = 2.0  # split files together larger than this (GiB) load lazily under load: auto

    PRECISIONS = ("fp32", "bf16")
    LOADS = ("auto", "memory", "lazy")

    def validate(self, where: str) -> None:
        _choice(where, "precision", self.precision, self.PRECISIONS)
        _choice(where, "load", self.load, self.LOADS)
        if self.lazy_above_gb < 0:
            raise ConfigError(f"{where}.lazy_above_gb: {self.lazy_above_gb}; expected a size in GiB >= 0")

    def numerics(self) -> dict:
        """The settings that can change a run's numbers (a run's fingerprint holds them)."""
        return {"precision": self.precision, "tf32": self.tf32, "compile": self.compile}


@dataclass(frozen=True)
class VariantConfig:
    """A named variant of a method: the method's settings with `settings` over them (after the dataset preset; a
    `presets:` inside `settings` applies per preset too) and, for a method that pretrains, `pretrain` over the
    `pretrain:` section. `rows` are the paper rows it reproduces ("Table 4: w/o AHL"; `paper` defaults to the
    method's own paper); a non-empty `refused` says why such a row cannot be reproduced here (it never runs)."""
    method: str
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    pretrain: dict[str, Any] = dataclasses.field(default_factory=dict)
    paper: str = ""
    rows: tuple[str, ...] = ()
    refused: str = ""

    def validate(self, where: str) -> None:
        for r in self.rows:
            table, sep, label = r.partition(":")
            if not sep or not label.strip() or not table.strip().startswith(("Table ", "Figure ")):
                raise ConfigError(f"{where}.rows: {r!r}; expected '<Table N | Figure N>: <row label>'")

    def row_refs(self) -> list[tuple[str, str, str]]:
        """-> [(paper, table id, row label)] of the rows this variant reproduces."""
        paper = self.paper or self.method
        return [(paper, *(x.strip() for x in r.split(":", 1))) for r in self.rows]


@dataclass(frozen=True)
class AblationsConfig:
    """The ablation grid: every variant on every dataset whose family its method handles, for every seed. The
    full models of the variants run on the same datasets and seeds (for the paired tests)."""
    variants: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (1111,)


@dataclass(frozen=True)
class Params:
    model: str
    dataset: str
    seed: int
    data: DataConfig
    sweep: SweepConfig
    pipeline: PipelineConfig
    evaluate: EvaluateConfig
    regression: RegressionConfig
    pretrain: PretrainSection
    methods: dict[str, dict[str, Any]]  # raw per-method blocks; msarepro.methods validates and resolves them
    variants: dict[str, VariantConfig] = dataclasses.field(default_factory=dict)
    ablations: AblationsConfig = AblationsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    robustness: RobustnessConfig = RobustnessConfig()


def with_preset(block: dict | None, preset: str = "") -> dict:
    """A section with presets -> its values for `preset`: the block's own keys, then the preset's over them."""
    block = dict(block or {})
    presets = block.pop("presets", None) or {}
    return {**block, **(presets.get(preset) or {})}


def build_with_presets(cls: type, block: dict | None, where: str) -> tuple[Any, dict[str, Any]]:
    """Build `cls` from a section and from each of its presets merged over it (every preset checked) ->
    (the section's own, {preset: merged})."""
    block = block or {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping, got {block!r}")
    presets = block.get("presets") or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"{where}.presets: expected a mapping of dataset preset -> settings, got {presets!r}")
    for p, values in presets.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{where}.presets.{p}: expected a mapping of settings, got {values!r}")
    own = build(cls, with_preset(block), where)
    return own, {p: build(cls, with_preset(block, p), f"{where}.presets.{p}") for p in presets}


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] and X | None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        return {k: _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)  # YAML reads 1e-3 (no dot) as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def build(cls: type, values: dict[str, Any], where: str):
    """Instantiate dataclass `cls` from a mapping, rejecting unknown keys and ill-typed values, then run the
    `validate(where)` that each class of its hierarchy defines, base first (a method's Config checks its own
    fields; MethodConfig checks the optimisation fields every method has)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
                          f"known keys under {where}: {', '.join(sorted(names))}")
    kw = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in values.items()}
    try:
        obj = cls(**kw)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    for klass in reversed(cls.__mro__):
        check = klass.__dict__.get("validate")
        if check is not None:
            check(obj, where)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"malformed override {text!r}: expected KEY=VALUE, e.g. -S methods.mult.lr=1e-3")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"malformed override {text!r}: the key must be dotted names, e.g. methods.mult.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"malformed override {text!r}: value is not valid YAML ({e})") from None
    return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of params with DVC-style overrides applied. Keys outside `methods` must exist already;
    under `methods.<name>` and `variants.<name>.settings|pretrain` new keys are allowed (checked against the
    method's Config / PretrainConfig)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, p in enumerate(parts[:-1]):
            free = (parts[0] == "methods" and i >= 1) or (parts[0] == "variants" and i >= 2)
            if p not in node or node[p] is None:
                if not free:
                    raise ConfigError(f"override {text!r}: no key {'.'.join(parts[:i + 1])!r} in params.yaml")
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[:i + 1])!r} is not a section")
        if parts[-1] not in node and not ((parts[0] == "methods" and len(parts) >= 3)
                                          or (parts[0] == "variants" and len(parts) >= 4)):
            known = ", ".join(sorted(node)) if isinstance(node, dict) else ""
            raise ConfigError(f"override {text!r}: no key {'.'.join(parts)!r} in params.yaml (known: {known})")
        node[parts[-1]] = value
    return out


def load_raw(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found. Run from the repository root or pass --params.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return raw


SECTIONS = {"data": DataConfig, "sweep": SweepConfig, "pipeline": PipelineConfig, "evaluate": EvaluateConfig,
            "regression": RegressionConfig, "ablations": AblationsConfig,
            "runtime": RuntimeConfig, "robustness": RobustnessConfig}
TOP_LEVEL = ("model", "dataset", "seed", *SECTIONS, "pretrain", "methods", "variants")
VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def from_dict(raw: dict) -> Params:
    """Validate every section of params.yaml except the method blocks' contents (the methods layer checks those:
    `msarepro.methods.validate_params`, through `msarepro.methods.load_params`)."""
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"params.yaml: unknown top-level key(s) {', '.join(map(str, unknown))}; "
                          f"known: {', '.join(TOP_LEVEL)}")
    for k in ("model", "dataset", "seed"):
        if k not in raw:
            raise ConfigError(f"params.yaml: missing top-level key {k!r}")
    methods = raw.get("methods") or {}
    if not isinstance(methods, dict):
        raise ConfigError("methods: expected a mapping of method name -> settings")
    for name, block in methods.items():
        if block is not None and not isinstance(block, dict):
            raise ConfigError(f"methods.{name}: expected a mapping of settings, got {block!r}")
    default, presets = build_with_presets(PretrainConfig, raw.get("pretrain"), "pretrain")
    sections = {k: build(cls, raw.get(k), k) for k, cls in SECTIONS.items()}
    variants = raw.get("variants") or {}
    if not isinstance(variants, dict):
        raise ConfigError("variants: expected a mapping of variant name -> {method, settings, ...}")
    for name in variants:
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
            raise ConfigError(f"variants.{name}: a variant name is lowercase letters, digits, '-' and '_' "
                              "(it names run directories and Snakemake jobs)")
    return Params(
        model=_coerce(str, raw["model"], "model"),
        dataset=_coerce(str, raw["dataset"], "dataset"),
        seed=_coerce(int, raw["seed"], "seed"),
        pretrain=PretrainSection(default, presets),
        methods={k: dict(v or {}) for k, v in methods.items()},
        variants={k: build(VariantConfig, v, f"variants.{k}") for k, v in variants.items()},
        **sections,
    )


def load(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """params.yaml (with overrides) -> Params, method blocks unchecked: commands use msarepro.methods.load_params."""
    return from_dict(apply_overrides(load_raw(path), overrides or []))


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj
