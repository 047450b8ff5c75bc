"""The method registry, and the part of configuration that needs it. Every other list of method names (CLI
choices, sweep validation, tests) derives from `METHODS`. A method is one module in this package whose class is
decorated with `@register("name")`; modules are discovered automatically, so adding a method needs no edit here.

    load_params(path, overrides)       params.yaml -> Params, the whole file validated (every command's loader)
    validate_params(params)            the `methods:` blocks (and every preset) against each method's Config
    method_config(params, model, preset)  the resolved, typed Config of one method for a dataset preset
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ..config import ConfigError, MethodConfig, Params, build, build_with_presets, load, with_preset
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


def method_config(params: Params, model: str, preset: str = "") -> MethodConfig:
    """The resolved, typed config of `model` for a dataset preset: its params block, the preset's values over it."""
    return build(get_method(model).Config, with_preset(params.methods.get(model), preset), f"methods.{model}")


def validate_params(params: Params) -> Params:
    """Check what config.py cannot without the registry: `model`, `sweep.methods` and every `methods.<name>`
    block, each preset merged over its block, against the method's Config. -> params (unchanged)."""
    registered = all_methods()
    for name, block in params.methods.items():
        if name not in registered:
            raise ConfigError(f"methods.{name}: not a registered method; registered: {', '.join(sorted(registered))}")
        build_with_presets(registered[name].Config, block, f"methods.{name}")
    for key, names in (("model", [params.model]), ("sweep.methods", params.sweep.methods)):
        for m in names:
            if m not in registered:
                raise ConfigError(f"{key}: unknown method {m!r}; registered methods: {', '.join(sorted(registered))}")
    return params


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """params.yaml with DVC-style overrides (`methods.mult.lr=1e-3`) -> Params; every section validated."""
    return validate_params(load(path, overrides))
