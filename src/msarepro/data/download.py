"""The download stage: fetch a dataset's files, verify them (SHA-256) before use, place them atomically, import.

Commands the DVC stages call (exact arguments):

    msarepro data download NAME --out data/NAME [--raw DIR] [--retries N] [--params params.yaml] [-S KEY=VALUE]
        NAME an embedded dataset (synth-mosi, synth-sims, synth-mvsa): generate it in --out with params.yaml's
             data.synth_seed and data.synth_scale.
        NAME synth-media: the embedded raw-media default (sentences, WAV audio, OpenFace CSVs) is written to the
             raw folder (default data/raw/synth-media) and pushed through the real extractors (MiniLM text,
             librosa audio, OpenFace vision; per-item cache in the raw folder) into a trimodal dataset in --out.
        NAME raw-media: only write the embedded raw media, in --out (for `msarepro data extract`).
        NAME a real dataset (mosi, mosei, sims, simsv2, mvsa-single, mvsa-multiple, hfm, tumemo): if --out already
             holds an import of the same verified source files, do nothing; else obtain every source file in the
             raw folder (default data/raw/NAME, beside --out): the Hugging Face mirror or a plain URL (resumed,
             retried with backoff, SHA-256 checked, renamed into place only once verified), or, for files that
             only a person can fetch (Google Drive / Baidu / author sites), stop with exit status 2 and the
             placement message: which file, from where, where to put it, which hash it must have. Then import.
        Network use is skipped (placement message at once) when HF_HUB_OFFLINE=1 or MSAREPRO_OFFLINE=1.

    msarepro data extract RAW --out DIR [--text MODEL] [--audio librosa|opensmile|none]
                                        [--vision openface|mediapipe|none] [--batch-size N] [--cache DIR]
        (see msarepro.features.pipeline) raw media folder -> canonical trimodal dataset, per-item cache.

Files in the raw folder: `<file>` (verified), `<file>.part` (an interrupted download, resumed next time; never
read as data), `.<file>.sha256.json` (the verified hash with the size and mtime it was computed for, so a second
run does not re-hash an unchanged file). A file whose hash does not match is never used: a downloaded one is
deleted (the next run starts it afresh), a hand-placed one is left for the user and named in the error.
"""
from __future__ import annotations

import contextlib
import fnmatch
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..io import sha256_file, write_json
from ..runtime import progress
from .format import DatasetError
from .registry import DATASETS, DatasetInfo, RemoteFile


class DownloadError(DatasetError):
    """A download or verification failed; the message names the file and what to do."""


class PlacementRequired(FileNotFoundError):
    """A file must be placed by hand; the message is the placement message."""


def raw_dir_for(out: str | Path, name: str) -> Path:
    """Default raw folder of a dataset: data/raw/NAME beside data/NAME (outside the stage's output, so DVC
    does not delete downloads when it re-runs the stage)."""
    return Path(out).parent / "raw" / name


def offline() -> bool:
    return any(os.environ.get(k, "0").lower() in ("1", "true", "yes") for k in ("MSAREPRO_OFFLINE", "HF_HUB_OFFLINE"))


# ---------------------------------------------------------------------------------------------------------------
# placement message


def _where(f: RemoteFile, endpoint: str | None = None) -> list[str]:
    ways = []
    if f.hf_repo:
        if f.hf_parts:
            ways.append(f"the parts {f.hf_parts} of the Hugging Face dataset {f.hf_repo} "
                        f"({_endpoint(endpoint)}/datasets/{f.hf_repo}), concatenated in name order")
        else:
            ways.append(hf_file_url(f.hf_repo, f.hf_path, endpoint))
    if f.url:
        ways.append(f.url)
    if f.manual:
        ways.append(f.manual)
    return ways


def placement_message(info: DatasetInfo, dir: str | Path, raw: str | Path | None = None,
                      missing: list[RemoteFile] | None = None, reason: str = "", endpoint: str | None = None) -> str:
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


# ---------------------------------------------------------------------------------------------------------------
# hashing with a stamp, so that an unchanged verified file is not re-hashed


def _stamp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.sha256.json"


def file_sha256(path: Path) -> str:
    """SHA-256 of `path`, reusing the stamp written when it was last hashed if size and mtime are unchanged."""
    st = path.stat()
    sp = _stamp_path(path)
    try:
        s = json.loads(sp.read_text())
        if s["size"] == st.st_size and s["mtime_ns"] == st.st_mtime_ns:
            return s["sha256"]
    except (FileNotFoundError, ValueError, KeyError):
        pass
    digest = sha256_file(path)
    write_json(sp, {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return digest


def verify(path: Path, sha256: str | None, size: int = 0, what: str = "") -> str:
    """Return the file's SHA-256; raise DownloadError naming it when size or hash differ from what is expected."""
    got_size = path.stat().st_size
    if size and got_size != size:
        raise DownloadError(f"{path}: {got_size} bytes, expected {size} (truncated or a different file){what}")
    digest = file_sha256(path)
    if sha256 and digest != sha256.lower():
        raise DownloadError(f"{path}: SHA-256 {digest} does not match the expected {sha256}{what}")
    return digest


# ---------------------------------------------------------------------------------------------------------------
# HTTP download with resume, retries with backoff, progress bar, verification and atomic placement


def _endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def hf_file_url(repo: str, path: str, endpoint: str | None = None, revision: str = "main") -> str:
    from huggingface_hub import hf_hub_url
    return hf_hub_url(repo, path, repo_type="dataset", revision=revision, endpoint=_endpoint(endpoint))


def hf_list_parts(repo: str, pattern: str, endpoint: str | None = None) -> list[tuple[str, int, str | None]]:
    """(path, size, LFS SHA-256 or None) of the files of a Hugging Face dataset repository matching `pattern`."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    folder = pattern.rsplit("/", 1)[0] if "/" in pattern else None
    try:
        entries = list(HfApi(endpoint=_endpoint(endpoint)).list_repo_tree(repo, path_in_repo=folder,
                                                                            repo_type="dataset", recursive=True))
    except Exception as e:  # huggingface_hub raises several error types (HTTP, connection, offline)
        raise DownloadError(f"cannot list {repo} on {_endpoint(endpoint)} ({type(e).__name__}: {e})") from None
    parts = sorted((e.path, e.size, (e.lfs or {}).get("sha256") if isinstance(e.lfs, dict) else
                    getattr(e.lfs, "sha256", None))
                   for e in entries if isinstance(e, RepoFile) and fnmatch.fnmatch(e.path, pattern))
    if not parts:
        raise DownloadError(f"no file of {repo} matches {pattern}; the mirror changed: place the file by hand")
    return parts


@dataclass
class Fetcher:
    retries: int = 4  # attempts after the first
    backoff: float = 1.0  # seconds before the first retry, doubled after each
    timeout: float = 30.0
    chunk: int = 1 << 20
    progress: bool = True

    def fetch(self, url: str, dest: Path, sha256: str | None = None, size: int = 0) -> str:
        """Download `url` to `dest`: resume from dest.part, retry, verify, then rename into place.

        Returns the SHA-256. On a hash mismatch the partial file is deleted and DownloadError names the file.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        attempt, total = 0, size or None
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                total = self._get(url, part, total) or total
                break
            except (urllib.error.URLError, OSError, http.client.HTTPException, _Incomplete) as e:
                code = getattr(e, "code", None)
                if code is not None and 400 <= code < 500 and code not in (408, 429):
                    raise DownloadError(f"{url}: HTTP {code} ({e}); the source moved or needs a login: "
                                        "place the file by hand") from None
                # host unreachable (no DNS, refused, no route) before any byte: one retry, then fail fast
                unreachable = (isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError)
                               and (part.stat().st_size if part.exists() else 0) == before)
                if attempt >= (min(1, self.retries) if unreachable else self.retries):
                    have = part.stat().st_size if part.exists() else 0
                    kept = f"; {have} bytes kept in {part}, the next run resumes from there" if have else ""
                    raise DownloadError(f"{dest.name}: download from {url} failed after {attempt + 1} attempts "
                                        f"({type(e).__name__}: {e}){kept}") from None
                time.sleep(self.backoff * 2 ** attempt)
                attempt += 1
        got = part.stat().st_size
        if (size or total) and got != (size or total):
            part.unlink()
            raise DownloadError(f"{dest.name}: the file downloaded from {url} has {got} bytes, expected "
                                f"{size or total}: truncated (or a different file); the partial file was deleted")
        digest = sha256_file(part)
        if sha256 and digest != sha256.lower():
            part.unlink()
            raise DownloadError(f"{dest.name}: SHA-256 {digest} of the file downloaded from {url} does not match "
                                f"the expected {sha256}; the partial file was deleted. Run again; if it persists "
                                "the source changed: place a verified copy by hand")
        os.replace(part, dest)
        st = dest.stat()
        write_json(_stamp_path(dest), {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return digest

    def _get(self, url: str, part: Path, total: int | None) -> int | None:
        have = part.stat().st_size if part.exists() else 0
        if total and have == total:
            return total
        if total and have > total:
            part.unlink()
            have = 0
        req = urllib.request.Request(url, headers={"User-Agent": "msarepro", **({"Range": f"bytes={have}-"} if have else {})})
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the part is complete
                return have
            raise
        with resp:
            length = resp.headers.get("Content-Length")
            if resp.status == 206:
                crange = resp.headers.get("Content-Range", "")
                start = int(crange.split(" ")[1].split("-")[0]) if crange.startswith("bytes ") else have
                if start != have:
                    raise _Incomplete(f"server resumed at byte {start}, expected {have}")
                full = int(crange.rsplit("/", 1)[1]) if "/" in crange and not crange.endswith("*") else None
                mode = "ab"
            else:  # 200: the server ignored the range; start over
                have, mode = 0, "wb"
                full = int(length) if length else None
            expect = int(length) if length else None
            bar = self._bar(full, have, part.name)
            n = 0
            with open(part, mode) as f:
                while True:
                    block = resp.read(self.chunk)
                    if not block:
                        break
                    f.write(block)
                    n += len(block)
                    if bar is not None:
                        bar.update(len(block))
            if bar is not None:
                bar.close()
            if expect is not None and n < expect:
                raise _Incomplete(f"connection closed after {n} of {expect} bytes")
            return full

    def _bar(self, total, initial, desc):
        return progress(None, desc, unit="B", total=total, enabled=self.progress, initial=initial, unit_scale=True,
                        file=sys.stderr)


class _Incomplete(Exception):
    """The connection ended before the announced length: retried (resuming)."""


# ---------------------------------------------------------------------------------------------------------------
# obtaining every file of a dataset


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
            return dest, _fetch_parts(f, dest, fetcher, endpoint)
        url = hf_file_url(f.hf_repo, f.hf_path, endpoint) if f.hf_repo else f.url
        return dest, fetcher.fetch(url, dest, f.sha256, f.size)
    raise PlacementRequired(f.filename)


def _fetch_parts(f: RemoteFile, dest: Path, fetcher: Fetcher, endpoint: str | None) -> str:
    """Download every part (each checked against its LFS hash), join them, verify the joined file, place it."""
    import hashlib

    parts_dir = dest.parent / f".{dest.name}.parts"
    paths = []
    for path, size, lfs_sha in hf_list_parts(f.hf_repo, f.hf_parts, endpoint):
        p = parts_dir / Path(path).name
        if p.exists():
            verify(p, lfs_sha, size)
        else:
            fetcher.fetch(hf_file_url(f.hf_repo, path, endpoint), p, lfs_sha, size)
        paths.append(p)
    joined = dest.with_name(dest.name + ".joining")
    h = hashlib.sha256()
    with open(joined, "wb") as out:
        for p in paths:
            with open(p, "rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
    digest = h.hexdigest()
    if f.sha256 and digest != f.sha256.lower():
        joined.unlink()
        raise DownloadError(f"{dest.name}: the {len(paths)} joined parts from {f.hf_repo} have SHA-256 {digest}, "
                            f"expected {f.sha256}; the parts are kept in {parts_dir} for inspection: delete them "
                            "and run again, or place a verified copy by hand")
    os.replace(joined, dest)
    st = dest.stat()
    write_json(_stamp_path(dest), {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    shutil.rmtree(parts_dir)
    return digest


def download(name: str, out: str | Path, raw: str | Path | None = None, fetcher: Fetcher | None = None,
             endpoint: str | None = None, synth_seed: int = 0, synth_scale: float = 1.0, **import_kw) -> str:
    """The download stage for one dataset name; returns a one-line summary of what was done."""
    out = Path(out)
    if name == "raw-media":
        from ..features.media import write_raw_media
        write_raw_media(out, seed=synth_seed)
        return f"wrote the embedded raw media in {out}"
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}, or raw-media")
    info = DATASETS[name]
    if info.source == "media":
        return _synth_media(out, Path(raw) if raw is not None else raw_dir_for(out, name), synth_seed)
    if info.source == "synth":
        from .synth import generate
        m = generate(name, out, seed=synth_seed, scale=synth_scale)
        return f"generated {name} in {out}: {m.splits}"
    raw = Path(raw) if raw is not None else raw_dir_for(out, name)
    fetcher = fetcher or Fetcher()
    got: dict[str, Path] = {}
    hashes: dict[str, str | None] = {}
    missing: list[RemoteFile] = []
    errors: list[str] = []
    for f in info.extra["files"]:
        try:
            got[f.filename], hashes[f.filename] = obtain(f, raw, fetcher, endpoint)
        except PlacementRequired:
            if not f.optional:
                missing.append(f)
        except DownloadError as e:
            if f.manual:
                errors.append(str(e))
                missing.append(f)
            else:
                raise
    if missing:
        msg = placement_message(info, out, raw, missing, endpoint=endpoint)
        if errors:
            msg = "\n".join(errors) + "\n" + msg
        raise PlacementRequired(msg)
    sources = {k: v for k, v in hashes.items() if v is not None}
    if _up_to_date(out, sources):
        return f"{out} is up to date (same verified sources)"
    m = import_registered(info, got, out, sources, **import_kw)
    return f"imported {name} into {out}: {m.splits}"


def _synth_media(out: Path, raw: Path, seed: int) -> str:
    """The embedded raw media through the real extractors; nothing to do when `out` was made from the same."""
    from ..features.media import write_raw_media
    from ..features.pipeline import extract

    stamp = raw / "media.json"
    if not (stamp.exists() and json.loads(stamp.read_text()).get("seed") == seed):
        write_raw_media(raw, seed=seed)
    if _up_to_date(out, {"media.json": sha256_file(stamp), "labels.csv": sha256_file(raw / "labels.csv")}):
        return f"{out} is up to date (same raw media)"
    with staged_dir(out) as stage:
        m, speed = extract(raw, stage, name="synth-media", cache=raw / ".features-cache",
                           sources={"media.json": sha256_file(stamp), "labels.csv": sha256_file(raw / "labels.csv")})
    return (f"extracted the embedded raw media into {out}: {m.splits}; items/s: "
            + ", ".join(f"{k}={v:.1f}" for k, v in speed.items()))


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
    if kind == "mmsa":
        from .mmsa import import_mmsa
        (path,) = files.values()
        return import_mmsa(path, out, name=info.name, family=info.metric_family, preset=info.name,
                           provenance=prov, **kw)
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


def _up_to_date(out: Path, sources: dict[str, str]) -> bool:
    try:
        man = json.loads((out / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return man.get("provenance", {}).get("sources") == sources and all((out / k).exists() for k in man.get("files", {}))
