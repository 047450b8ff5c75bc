"""The method registry. Every other list of method names (CLI choices, sweep validation, tests) derives from
`METHODS`. A method is one module in this package whose class is decorated with `@register("name")`;
modules are discovered automatically, so adding a method needs no edit here.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import Method

METHODS: dict[str, type[Method]] = {}
_NOT_METHODS = {"base", "blocks", "modality_encoder", "text_encoder"}


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
        from ..config import ConfigError
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


_discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in _NOT_METHODS and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def all_methods() -> dict[str, type[Method]]:
    _discover()
    return dict(METHODS)


def pretraining_methods() -> tuple[str, ...]:
    """Registered methods whose runs consume the `pretrain` stage's output (`uses_pretraining` on the class)."""
    return tuple(sorted(n for n, cls in all_methods().items() if cls.uses_pretraining))


def build_method(name: str, cfg, manifest) -> Method:
    cls = get_method(name)
    if manifest.family not in cls.families:
        from ..config import ConfigError
        raise ConfigError(f"method {name!r} handles {'/'.join(cls.families)} datasets; dataset "
                          f"{manifest.name!r} is {manifest.family}")
    return cls(cfg, manifest)
