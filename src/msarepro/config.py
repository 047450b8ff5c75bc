"""params.yaml -> frozen dataclasses. The one place that reads configuration.

params.yaml layout:
    model, dataset, seed       the single experiment of the `train` stage (`dvc exp run -S model=sfttr`)
    data:    root, synth_seed, synth_scale, verify_hashes
    sweep:   methods, datasets, seeds (the grid Snakemake fans out)
    methods: <name>: {<field>: value, ..., presets: {<dataset preset>: {<field>: value}}}

A method's fields are its `Config` dataclass (optimisation fields from `MethodConfig` plus its own); a preset
named after a dataset (`synth-mosi`, `mosi`, ...) overrides them for that dataset. Overrides on the command line
use DVC's syntax, `-S train.key=value`, with the value read as YAML. Errors name the offending key.
Nothing mutates a config after it is built; every run stores its resolved config beside its metrics.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and says what is accepted."""


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
class Params:
    model: str
    dataset: str
    seed: int
    data: DataConfig
    sweep: SweepConfig
    methods: dict[str, dict[str, Any]]  # raw per-method blocks, validated against each method's Config
    extra: dict[str, Any]  # other top-level sections (evaluate, report, ...) owned by their modules

    def method_config(self, model: str, preset: str = "") -> MethodConfig:
        """The resolved, typed config of `model` for a dataset preset (block, then preset overrides)."""
        from .methods import get_method

        cls = get_method(model)
        block = dict(self.methods.get(model, {}))
        presets = block.pop("presets", {}) or {}
        merged = {**block, **(presets.get(preset) or {})}
        return build(cls.Config, merged, f"methods.{model}")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "types.UnionType":
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
        return dict(value)
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
    """Instantiate dataclass `cls` from a mapping, rejecting unknown keys and ill-typed values."""
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
    check = getattr(obj, "validate", None)
    if check is not None:
        check(where)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"malformed override {text!r}: expected KEY=VALUE, e.g. -S train.max_epochs=5")
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
    under `methods.<name>` new keys are allowed and are checked against that method's Config."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, p in enumerate(parts[:-1]):
            free = parts[0] == "methods" and i >= 1
            if p not in node or node[p] is None:
                if not free:
                    raise ConfigError(f"override {text!r}: no key {'.'.join(parts[:i + 1])!r} in params.yaml")
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[:i + 1])!r} is not a section")
        if parts[-1] not in node and not (parts[0] == "methods" and len(parts) >= 3):
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


TOP_LEVEL = {"model", "dataset", "seed", "data", "sweep", "methods"}


def from_dict(raw: dict) -> Params:
    from .methods import all_methods, get_method

    registered = all_methods()

    for k in ("model", "dataset", "seed"):
        if k not in raw:
            raise ConfigError(f"params.yaml: missing top-level key {k!r}")
    methods = raw.get("methods") or {}
    if not isinstance(methods, dict):
        raise ConfigError("methods: expected a mapping of method name -> settings")
    for name, block in methods.items():
        if name not in registered:
            raise ConfigError(f"methods.{name}: not a registered method; registered: {', '.join(sorted(registered))}")
        block = dict(block or {})
        presets = block.pop("presets", {}) or {}
        cls = get_method(name)
        build(cls.Config, block, f"methods.{name}")
        for pname, pblock in presets.items():
            build(cls.Config, {**block, **(pblock or {})}, f"methods.{name}.presets.{pname}")
    params = Params(
        model=_coerce(str, raw["model"], "model"),
        dataset=_coerce(str, raw["dataset"], "dataset"),
        seed=_coerce(int, raw["seed"], "seed"),
        data=build(DataConfig, raw.get("data"), "data"),
        sweep=build(SweepConfig, raw.get("sweep"), "sweep"),
        methods={k: dict(v or {}) for k, v in methods.items()},
        extra={k: v for k, v in raw.items() if k not in TOP_LEVEL},
    )
    get_method(params.model)
    for m in params.sweep.methods:
        get_method(m)
    return params


def load(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    return from_dict(apply_overrides(load_raw(path), overrides or []))


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj
