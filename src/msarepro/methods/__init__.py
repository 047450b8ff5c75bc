"""The method registry, and the part of configuration that needs it. Every other list of method names (CLI
choices, sweep validation, tests) derives from `METHODS`. A method is one module in this package whose class is
decorated with `@register("name")`; modules are discovered automatically, so adding a method needs no edit here.

    load_params(path, overrides)       params.yaml -> Params, the whole file validated (every command's loader)
    validate_params(params)            the `methods:` and `variants:` blocks (and every preset) against each
                                       method's Config
    method_of(params, name)            the registered method behind a method or variant name
    method_config(params, name, preset)  the resolved, typed Config of a method or variant for a dataset preset
    pretrain_settings(params, name, preset)  its pretraining config and the key naming that pretraining's output

A name a user gives (`--model`, `model`, `sweep.methods`) is a registered method or a variant (`variants:` in
params.yaml: a method with settings over its block, e.g. a paper's ablation row); runs are named by it.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import dataclasses
import hashlib
import json

from ..config import (ConfigError, MethodConfig, Params, PretrainConfig, build, build_with_presets, load,
                      to_jsonable, with_preset)
from .base import Method

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def deco(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice ({METHODS[name].__module__}, {cls.__module__})")
        cls.name = name
        METHODS[name] = cls
        return cls
    return deco


def get_method(name: str) -> type[Method]:
    _discover()
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


_discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    # Every module of the package is imported; what registers itself is a method, the building blocks (base,
    # blocks, text_encoder, modality_encoder) register nothing. No list of names to keep in step.
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def all_methods() -> dict[str, type[Method]]:
    _discover()
    return dict(METHODS)


def paper_aliases() -> dict[str, str]:
    """A method as the papers' tables write it -> its registered name: the name itself, the name with "-" for "_"
    (self-mm), and each class's `paper_names` (bert_mag). One spelling names one method (else ValueError)."""
    out: dict[str, str] = {}
    for name, cls in sorted(all_methods().items()):
        for alias in dict.fromkeys((name, name.replace("_", "-"), *cls.paper_names)):
            if out.get(alias, name) != name:
                raise ValueError(f"paper name {alias!r} claimed by methods {out[alias]!r} and {name!r}")
            out[alias] = name
    return out


def pretraining_methods() -> tuple[str, ...]:
    """Registered methods whose runs consume the `pretrain` stage's output (`uses_pretraining` on the class)."""
    return tuple(sorted(n for n, cls in all_methods().items() if cls.uses_pretraining))


def build_method(name: str, cfg, manifest) -> Method:
    """The method `name` built for `manifest`'s dataset; its `check` runs first, so that every precondition on the
    dataset is refused (one ConfigError) before any weights load."""
    cls = get_method(name)
    cls.check(cfg, manifest)
    try:
        return cls(cfg, manifest)
    except (AssertionError, ValueError) as e:  # e.g. torch: a width its head count does not divide
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"methods.{name}: the model cannot be built with these settings on dataset "
                          f"{manifest.name!r} ({e}); change the sizes or head counts in methods.{name} (or in its "
                          f"preset methods.{name}.presets.{manifest.preset or manifest.name})") from e


def method_of(params: Params, name: str) -> str:
    """The registered method behind `name` (a method or a variant of params.yaml)."""
    if name in params.variants:
        return params.variants[name].method
    registered = all_methods()
    if name not in registered:
        raise ConfigError(f"unknown method or variant {name!r}; registered methods: {', '.join(sorted(registered))}"
                          + (f"; variants (params.yaml `variants:`): {', '.join(sorted(params.variants))}"
                             if params.variants else ""))
    return name


def _variant(params: Params, name: str):
    v = params.variants.get(name)
    if v is not None and v.refused:
        raise ConfigError(f"variant {name!r} cannot run: {v.refused}")
    return v


def _raw_config(params: Params, name: str, preset: str) -> tuple[type[Method], dict]:
    """-> (the method class, its settings for `preset`: block, block preset, then the variant's over them)."""
    method = method_of(params, name)
    values = with_preset(params.methods.get(method), preset)
    v = _variant(params, name)
    if v is not None:
        values = {**values, **with_preset(v.settings, preset)}
    return get_method(method), values


def pretrain_settings(params: Params, name: str, preset: str = "") -> tuple[PretrainConfig, str]:
    """The pretraining of a method or variant for a dataset preset -> (its PretrainConfig: the `pretrain:`
    section, its preset, the variant's `pretrain` over them; the key of its output). The key is 12 hex chars of
    SHA-256 over that config and the Config fields pretraining reads (`Method.pretraining_settings`), so variants
    that pretrain alike share encoders and the others get their own (pretrain/<dataset>/<key>/)."""
    cls, values = _raw_config(params, name, preset)
    base = params.pretrain.resolve(preset)
    v = _variant(params, name)
    where = f"variants.{name}.pretrain" if v is not None and v.pretrain else "pretrain"
    cfg = build(PretrainConfig, {**to_jsonable(base), **(v.pretrain if v is not None else {})}, where)
    settings = cls.pretraining_settings(build(cls.Config, values, f"methods.{cls.name}"))
    blob = json.dumps({"pretrain": to_jsonable(cfg), "method": settings}, sort_keys=True).encode()
    return cfg, hashlib.sha256(blob).hexdigest()[:12]


def method_config(params: Params, model: str, preset: str = "") -> MethodConfig:
    """The resolved, typed config of a method or variant for a dataset preset: the method's params block, the
    preset's values over it, then the variant's settings. For a method that pretrains, `{settings}` in its
    `pretrained` path becomes the key of its pretraining settings (pretrain_settings)."""
    cls, values = _raw_config(params, model, preset)
    where = f"variants.{model}.settings" if model in params.variants else f"methods.{model}"
    if model in params.variants and preset in (params.variants[model].settings.get("presets") or {}):
        where += f".presets.{preset}"
    cfg = build(cls.Config, values, where)
    if cls.uses_pretraining and "{settings}" in (getattr(cfg, "pretrained", "") or ""):
        key = pretrain_settings(params, model, preset)[1]
        cfg = dataclasses.replace(cfg, pretrained=cfg.pretrained.replace("{settings}", key))
    return cfg


def _check_keys(name: str, v, cls: type[Method]) -> None:
    """A variant's setting names (its presets' too) are fields of its method's Config / of PretrainConfig."""
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    blocks = {"": v.settings, **{f".presets.{p}": b or {} for p, b in (v.settings.get("presets") or {}).items()}}
    for where, block in blocks.items():
        unknown = sorted(set(block) - fields - {"presets"})
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(f'variants.{name}.settings{where}.{k}' for k in unknown)}; "
                              f"known keys of methods.{cls.name}: {', '.join(sorted(fields))}")
    unknown = sorted(set(v.pretrain) - {f.name for f in dataclasses.fields(PretrainConfig)})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'variants.{name}.pretrain.{k}' for k in unknown)}; known: "
                          f"{', '.join(f.name for f in dataclasses.fields(PretrainConfig))}")


def validate_params(params: Params) -> Params:
    """Check what config.py cannot without the registry: `model`, `sweep.methods`, every `methods.<name>` block
    and every variant against the method's Config: the setting names of all, and the whole resolved config (each
    preset merged over the block, the variant's settings over that) of `model` (the grid's variants are built by
    `sweep.validate`; so a change to a method's block that one variant cannot take blocks only the runs of that
    variant); `ablations.variants`. -> params (unchanged)."""
    registered = all_methods()
    for name, block in params.methods.items():
        if name not in registered:
            raise ConfigError(f"methods.{name}: not a registered method; registered: {', '.join(sorted(registered))}")
        build_with_presets(registered[name].Config, block, f"methods.{name}")
    used = {params.model}  # the grid's variants are built by sweep.validate, which only the sweep needs
    for name, v in params.variants.items():
        if name in registered:
            raise ConfigError(f"variants.{name}: a registered method has this name; name the variant otherwise")
        if v.method not in registered:
            raise ConfigError(f"variants.{name}.method: {v.method!r} is not a registered method; registered: "
                              f"{', '.join(sorted(registered))}")
        if v.pretrain and not registered[v.method].uses_pretraining:
            raise ConfigError(f"variants.{name}.pretrain: {v.method} does not pretrain; remove the key")
        if v.refused:
            continue  # documented, never built (its settings may be what the method refuses)
        _check_keys(name, v, registered[v.method])
        if name not in used:
            continue  # built when it runs: a change to the method's block must not block unrelated runs
        block = params.methods.get(v.method) or {}
        presets = set((block.get("presets") or {})) | set((v.settings.get("presets") or {}))
        for preset in ["", *sorted(presets)]:
            method_config(params, name, preset)
            if registered[v.method].uses_pretraining:
                pretrain_settings(params, name, preset)
    sweepable = lambda n: n in registered or (n in params.variants and not params.variants[n].refused)  # noqa: E731
    for key, names in (("model", [params.model]), ("sweep.methods", params.sweep.methods)):
        for m in names:
            if not sweepable(m):
                if m not in params.variants:
                    raise ConfigError(f"{key}: unknown method {m!r}; registered methods: "
                                      f"{', '.join(sorted(registered))}"
                                      + (f"; variants: {', '.join(sorted(params.variants))}" if params.variants else ""))
                raise ConfigError(f"{key}: variant {m!r} cannot run: {params.variants[m].refused}")
    for m in params.ablations.variants:
        if m not in params.variants:
            raise ConfigError(f"ablations.variants: {m!r} is not a variant (params.yaml `variants:`); known: "
                              f"{', '.join(sorted(params.variants)) or 'none'}")
        if params.variants[m].refused:
            raise ConfigError(f"ablations.variants: {m!r} cannot run: {params.variants[m].refused}")
    return params


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """params.yaml with DVC-style overrides (`methods.mult.lr=1e-3`) -> Params; every section validated."""
    return validate_params(load(path, overrides))
