"""Hash stamps: `.<file>.sha256.json` beside a verified file records its SHA-256 with the size and mtime it was
computed for, so that a second run does not re-hash an unchanged file. The one place stamps are read and written.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..io import sha256_file, write_json


def stamp_path(path: Path) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.sha256.json"


def write_stamp(path: Path, digest: str) -> None:
    """Record `digest` as the SHA-256 of `path` as it is now (size, mtime)."""
    st = Path(path).stat()
    write_json(stamp_path(path), {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


def read_stamp(path: Path) -> str | None:
    """The stamped SHA-256 of `path` if its size and mtime are unchanged since it was stamped, else None."""
    st = Path(path).stat()
    try:
        s = json.loads(stamp_path(path).read_text())
        if s["size"] == st.st_size and s["mtime_ns"] == st.st_mtime_ns:
            return s["sha256"]
    except (FileNotFoundError, ValueError, KeyError):
        pass
    return None


def file_sha256(path: Path) -> str:
    """SHA-256 of `path`, reusing its stamp when size and mtime are unchanged; stamps a freshly computed hash."""
    digest = read_stamp(path)
    if digest is None:
        digest = sha256_file(path)
        write_stamp(path, digest)
    return digest
