"""What every long-running step shares at run time: seeding, device choice, RNG state capture/restore, and the
one progress bar. Imports only the standard library at module level (torch, numpy and tqdm when called), so
that data/ can use the progress bar without loading torch.
"""
from __future__ import annotations

import os
import random


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels (bit-identical CPU results)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(name: str | None = None):
    """`name` (cpu, cuda, cuda:1 ...), else $MSAREPRO_DEVICE, else auto: CUDA when available, otherwise CPU."""
    import torch

    name = name or os.environ.get("MSAREPRO_DEVICE", "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def rng_state() -> dict:
    """Every global RNG's state (Python, NumPy, torch CPU, torch CUDA), e.g. for a checkpoint."""
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured."""
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def progress_enabled(enabled: bool = True) -> bool:
    """Progress bars are shown unless switched off here or with MSAREPRO_PROGRESS=0."""
    return enabled and os.environ.get("MSAREPRO_PROGRESS", "1") != "0"


def progress(iterable=None, desc: str | None = None, unit: str = "item", total: int | None = None,
             enabled: bool = True, **tqdm_kwargs):
    """A transient tqdm bar over `iterable` (or, with iterable=None, a manual one to `update()`).

    When bars are off (`enabled=False` or MSAREPRO_PROGRESS=0) returns `iterable` itself: None for a manual bar,
    so callers test `bar is not None` (manual) or `hasattr(bar, "set_postfix")` before decorating it.
    """
    if not progress_enabled(enabled):
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, **tqdm_kwargs)
