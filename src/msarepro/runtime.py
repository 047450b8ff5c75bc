"""What every long-running step shares at run time: seeding, device choice, RNG state capture/restore, the
`runtime:` settings applied to a device (precision, TF32, torch.compile) and the one progress bar. Imports only
the standard library at module level (torch, numpy and tqdm when called), so that data/ can use the progress bar
without loading torch.

`runtime:` (config.RuntimeConfig) on a device (docs/architecture.md, "Running on GPUs"):
    precision  fp32: nothing changes. bf16: forward and losses under torch.autocast(bfloat16) on the run's
               device (CPU too, when asked: slower there, but testable); a CUDA device without native bfloat16
               (compute capability < 8.0) is refused with a ConfigError rather than emulated slowly
    tf32       CUDA only: float32 matmuls and convolutions in TF32 ("tf32") or full IEEE float32 ("ieee")
    compile    torch.compile the model's forward (the module itself is kept, so state_dict keys stay as they are)
    pin_memory CUDA only: page-locked host batches, copied with non_blocking=True (data.loader.to_device)
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


def configure(runtime, device) -> None:
    """Check `runtime` (config.RuntimeConfig) against `device` and set the process-wide flags it asks for: TF32 on
    CUDA (both ways, explicitly, so that a process holds the setting of the run it trains). Raises ConfigError when
    bf16 is asked of a CUDA device without native bfloat16."""
    import torch

    from .config import ConfigError

    if device.type != "cuda":
        return
    if runtime.precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name(device)
        raise ConfigError(f"runtime.precision: bf16, but {name} has no native bfloat16 (compute capability 8.0 "
                          "or later); set runtime.precision: fp32 in params.yaml (or -S runtime.precision=fp32)")
    mode = "tf32" if runtime.tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cudnn.rnn.fp32_precision = mode


def autocast(runtime, device):
    """The context for forward passes and losses: bfloat16 autocast on `device` under precision bf16, else none."""
    import contextlib

    import torch

    if runtime.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compiled(model, runtime):
    """`model` with its forward compiled (torch.compile) under runtime.compile, else `model` unchanged. The module
    is compiled in place (nn.Module.compile), so it is the same object: its state_dict keys, checkpoints and
    hooks are those of the eager model."""
    if runtime.compile:
        model.compile()
    return model


def pin(runtime, device) -> bool:
    """Whether batches are pinned before their copy to `device` (pin_memory on a CUDA device)."""
    return bool(runtime.pin_memory) and device.type == "cuda"


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
