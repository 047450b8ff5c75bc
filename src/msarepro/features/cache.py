"""Per-item feature cache: one .npy file per (extractor configuration, item), written atomically.

An interrupted extraction resumes where it stopped: items already in the cache are not recomputed. The folder
name carries a hash of the extractor's configuration (model, sample rate, ...), so changing it never reuses
stale features.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..io import atomic_path


class ItemCache:
    def __init__(self, root: str | Path | None, extractor: str, config: dict):
        key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.dir = Path(root) / f"{extractor}-{key}" if root is not None else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "config.json").write_text(json.dumps(config, sort_keys=True, indent=1, default=str))

    def _path(self, item: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in item)
        return self.dir / f"{safe}.npy"

    def get(self, item: str) -> np.ndarray | None:
        if self.dir is None:
            return None
        p = self._path(item)
        return np.load(p, allow_pickle=False) if p.exists() else None

    def put(self, item: str, value: np.ndarray) -> None:
        if self.dir is None:
            return
        with atomic_path(self._path(item)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, value, allow_pickle=False)

    def missing(self, items: list[str]) -> list[str]:
        return list(items) if self.dir is None else [i for i in items if not self._path(i).exists()]
