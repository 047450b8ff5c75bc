"""A registered real dataset from its sources: obtain every file in the raw folder (already placed and verified,
or downloaded from the Hugging Face mirror / a plain URL), stop with the placement message when a file must be
placed by hand, then import the verified files with the importer the registry names, atomically.

Files in the raw folder: `<file>` (verified), `<file>.part` (an interrupted download, resumed next time; never
read as data), `.<file>.sha256.json` (its hash stamp, see data/stamps.py). A hand-placed file whose hash does
not match is left for the user and named in the error.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from .fetch import DownloadError, Fetcher, fetch_parts, hf_file_url, offline, verify
from .placement import PlacementRequired, placement_message
from .registry import DatasetInfo, RemoteFile


def obtain(f: RemoteFile, raw: Path, fetcher: Fetcher, endpoint: str | None = None) -> tuple[Path, str | None]:
    """-> (path, SHA-256 or None for a folder) of one source file in the raw folder, downloading it if it is
    absent and a network source exists. Raises PlacementRequired when it must be placed by hand."""
    dest = raw / f.filename
    if f.kind == "dir":
        if dest.is_dir() and any(dest.iterdir()):
            return dest, None
        raise PlacementRequired(f.filename)
    if dest.exists():
        return dest, verify(dest, f.sha256, f.size, what=(
            "; the file in the raw folder is not the published one: replace it (or delete it to download again)"))
    if (f.hf_repo or f.url) and not offline():
        if f.hf_parts:
            return dest, fetch_parts(f.hf_repo, f.hf_parts, dest, f.sha256, fetcher, endpoint)
        url = hf_file_url(f.hf_repo, f.hf_path, endpoint) if f.hf_repo else f.url
        return dest, fetcher.fetch(url, dest, f.sha256, f.size)
    raise PlacementRequired(f.filename)


def acquire(info: DatasetInfo, out: Path, raw: Path, fetcher: Fetcher | None = None, endpoint: str | None = None,
            **import_kw) -> str:
    """Obtain every file of a registered real dataset in `raw` and import them into `out` (nothing to do when
    `out` holds an import of the same verified files); -> a one-line summary. Raises PlacementRequired with the
    placement message when a file must be placed by hand."""
    out, raw = Path(out), Path(raw)
    fetcher = fetcher or Fetcher()
    got: dict[str, Path] = {}
    hashes: dict[str, str | None] = {}
    missing: list[RemoteFile] = []
    absent_optional: list[RemoteFile] = []
    errors: list[str] = []
    for f in info.extra["files"]:
        try:
            got[f.filename], hashes[f.filename] = obtain(f, raw, fetcher, endpoint)
        except PlacementRequired:
            (absent_optional if f.optional else missing).append(f)
        except DownloadError as e:
            if f.manual:
                errors.append(str(e))
                missing.append(f)
            else:
                raise
    if missing:  # the optional files not placed either are listed too (marked optional)
        msg = placement_message(info, out, raw, missing + absent_optional, endpoint=endpoint)
        if errors:
            msg = "\n".join(errors) + "\n" + msg
        raise PlacementRequired(msg)
    sources = {k: v for k, v in hashes.items() if v is not None}
    if up_to_date(out, sources):
        return f"{out} is up to date (same verified sources)"
    m = import_registered(info, got, out, sources, **import_kw)
    return f"imported {info.name} into {out}: {m.splits}"


@contextlib.contextmanager
def staged_dir(out: Path):
    """Yield a sibling staging folder; on success it replaces `out` whole, so an interrupted import leaves either
    the previous dataset or none, never a half-written one."""
    out = Path(out)
    stage = out.with_name(f".{out.name}.importing")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        yield stage
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def import_registered(info: DatasetInfo, files: dict[str, Path], out: Path, sources: dict[str, str], **kw):
    """Import a registered real dataset from its verified raw files with the importer its entry names."""
    with staged_dir(out) as stage:
        m = _import(info, files, stage, sources, **kw)
    return m


def _import(info: DatasetInfo, files: dict[str, Path], out: Path, sources: dict[str, str], **kw):
    prov = {"sources": sources, "registry": info.name}
    kind = info.extra["importer"]
    if kind == "mmsa":  # one labelled pickle, and the unlabeled part where the release has one and it was placed
        from .mmsa import import_mmsa
        role = {f.filename: f.split for f in info.extra["files"]}
        (path,) = [p for k, p in files.items() if role.get(k) != "unlabeled"]
        unlabeled = next((p for k, p in files.items() if role.get(k) == "unlabeled"), None)
        preset = info.extra.get("preset") or info.name  # an aligned release: its unaligned original's preset
        return import_mmsa(path, out, name=info.name, family=info.metric_family, preset=preset,
                           provenance={**prov, **({"aligned": True} if info.extra.get("aligned") else {})},
                           unlabeled=unlabeled, **kw)
    from . import imagetext
    if kind == "mvsa":
        archive = next(p for k, p in files.items() if k.endswith(".zip"))
        splits = {s: files.get(f"{s}.json") for s in ("train", "dev", "test")}
        return imagetext.import_mvsa(archive, out, name=info.name, multiple=info.name == "mvsa-multiple",
                                     clmlf_splits=splits if all(splits.values()) else None, provenance=prov, **kw)
    if kind == "hfm":
        return imagetext.import_hfm(files["text/train.txt"].parents[1], out, name=info.name, provenance=prov, **kw)
    if kind == "table":
        table = next(p for k, p in files.items() if p.is_file())
        images = next(p for k, p in files.items() if p.is_dir())
        return imagetext.import_table(table, images, out, name=info.name, class_names=info.extra["class_names"],
                                      f1_average=info.extra["f1_average"], provenance=prov, **kw)
    raise ValueError(f"dataset {info.name!r}: unknown importer {kind!r}")


def up_to_date(out: Path, sources: dict[str, str]) -> bool:
    try:
        man = json.loads((out / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return man.get("provenance", {}).get("sources") == sources and all((out / k).exists() for k in man.get("files", {}))
