"""The placement message: what a person must do to provide a real dataset whose files cannot be (or were not)
downloaded: each file, where to get it, where to put it in the raw folder, and the hash it must have."""
from __future__ import annotations

from pathlib import Path

from .fetch import hf_endpoint, hf_file_url


class PlacementRequired(FileNotFoundError):
    """A file must be placed by hand; the message is the placement message."""


def raw_dir_for(out: str | Path, name: str) -> Path:
    """Default raw folder of a dataset: data/raw/NAME beside data/NAME (outside the stage's output, so DVC
    does not delete downloads when it re-runs the stage)."""
    return Path(out).parent / "raw" / name


def _where(f, endpoint: str | None = None) -> list[str]:
    ways = []
    if f.hf_repo:
        if f.hf_parts:
            ways.append(f"the parts {f.hf_parts} of the Hugging Face dataset {f.hf_repo} "
                        f"({hf_endpoint(endpoint)}/datasets/{f.hf_repo}), concatenated in name order")
        else:
            ways.append(hf_file_url(f.hf_repo, f.hf_path, endpoint))
    if f.url:
        ways.append(f.url)
    if f.manual:
        ways.append(f.manual)
    return ways


def placement_message(info, dir: str | Path, raw: str | Path | None = None, missing: list | None = None, reason: str = "", endpoint: str | None = None) -> str:
    """What a person must do to provide a real dataset: each file, where to get it, where to put it, its hash."""
    out = Path(dir)
    raw = Path(raw) if raw is not None else raw_dir_for(out, info.name)
    files = list(missing if missing is not None else info.extra.get("files", ()))
    lines = [f"dataset {info.name!r} is not present at {out}" + (f" ({reason})" if reason else "") + "."]
    if info.source == "media":
        return "\n".join(lines + [f"It is made by the features stage: msarepro data download {info.name} "
                                   f"--out {out}   (or `dvc repro`)"])
    if info.source == "manual":
        lines.append("Its files are only distributed by hand (Google Drive / Baidu / the authors' site); "
                     "place them as follows:")
    else:
        lines.append("Download them (or let `msarepro data download` do it where a network is available) "
                     "and place them as follows:")
    for i, f in enumerate(files, 1):
        what = "folder" if f.kind == "dir" else "file"
        lines.append(f"  {i}. {what} {f.filename}" + ("  (optional)" if f.optional else ""))
        for j, w in enumerate(_where(f, endpoint)):
            lines.append(f"     {'from:   ' if j == 0 else 'or:     '}{w}")
        lines.append(f"     put at: {raw / f.filename}")
        if f.kind == "dir":
            lines.append("     SHA-256: a folder is not hashed; its file count is recorded in the manifest")
        elif f.sha256:
            lines.append(f"     SHA-256: {f.sha256}" + (f"  ({f.size} bytes)" if f.size else ""))
        else:
            lines.append("     SHA-256: none published; the hash of the file you place is recorded in "
                         f"{out / 'manifest.json'}")
    lines.append(f"Then run: msarepro data download {info.name} --out {out}   (or `dvc repro`)")
    return "\n".join(lines)
