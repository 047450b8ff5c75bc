"""Fetching one file: HTTP(S) download with resume (from `<file>.part`), retries with exponential backoff, a
progress bar, SHA-256 verification, and atomic placement (renamed into place only once verified); the Hugging Face
mirror's file URLs and multi-part files (downloaded, joined, verified).

A file whose hash does not match is never used: a downloaded one is deleted (the next run starts it afresh); a
file already in place that does not match raises DownloadError naming it.
"""
from __future__ import annotations

import fnmatch
import hashlib
import http.client
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..io import sha256_file
from .format import DatasetError
from .stamps import file_sha256, write_stamp


class DownloadError(DatasetError):
    """A download or verification failed; the message names the file and what to do."""


def offline() -> bool:
    return any(os.environ.get(k, "0").lower() in ("1", "true", "yes") for k in ("MSAREPRO_OFFLINE", "HF_HUB_OFFLINE"))


def verify(path: Path, sha256: str | None, size: int = 0, what: str = "") -> str:
    """Return the file's SHA-256; raise DownloadError naming it when size or hash differ from what is expected."""
    got_size = path.stat().st_size
    if size and got_size != size:
        raise DownloadError(f"{path}: {got_size} bytes, expected {size} (truncated or a different file){what}")
    digest = file_sha256(path)
    if sha256 and digest != sha256.lower():
        raise DownloadError(f"{path}: SHA-256 {digest} does not match the expected {sha256}{what}")
    return digest


def hf_endpoint(endpoint: str | None) -> str:
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def hf_file_url(repo: str, path: str, endpoint: str | None = None, revision: str = "main") -> str:
    from huggingface_hub import hf_hub_url
    return hf_hub_url(repo, path, repo_type="dataset", revision=revision, endpoint=hf_endpoint(endpoint))


def hf_list_parts(repo: str, pattern: str, endpoint: str | None = None) -> list[tuple[str, int, str | None]]:
    """(path, size, LFS SHA-256 or None) of the files of a Hugging Face dataset repository matching `pattern`."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    folder = pattern.rsplit("/", 1)[0] if "/" in pattern else None
    try:
        entries = list(HfApi(endpoint=hf_endpoint(endpoint)).list_repo_tree(repo, path_in_repo=folder,
                                                                            repo_type="dataset", recursive=True))
    except Exception as e:  # huggingface_hub raises several error types (HTTP, connection, offline)
        raise DownloadError(f"cannot list {repo} on {hf_endpoint(endpoint)} ({type(e).__name__}: {e})") from None
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
        write_stamp(dest, digest)
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
        from ..runtime import progress
        return progress(None, desc, unit="B", total=total, enabled=self.progress, initial=initial, unit_scale=True,
                        file=sys.stderr)


class _Incomplete(Exception):
    """The connection ended before the announced length: retried (resuming)."""


def fetch_parts(repo: str, pattern: str, dest: Path, sha256: str | None, fetcher: Fetcher,
                endpoint: str | None = None) -> str:
    """Download every part of Hugging Face dataset `repo` matching `pattern` (each checked against its LFS hash),
    join them in name order, verify the joined file against `sha256`, place it at `dest`; -> its SHA-256."""
    parts_dir = dest.parent / f".{dest.name}.parts"
    paths = []
    for path, size, lfs_sha in hf_list_parts(repo, pattern, endpoint):
        p = parts_dir / Path(path).name
        if p.exists():
            verify(p, lfs_sha, size)
        else:
            fetcher.fetch(hf_file_url(repo, path, endpoint), p, lfs_sha, size)
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
    if sha256 and digest != sha256.lower():
        joined.unlink()
        raise DownloadError(f"{dest.name}: the {len(paths)} joined parts from {repo} have SHA-256 {digest}, "
                            f"expected {sha256}; the parts are kept in {parts_dir} for inspection: delete them "
                            "and run again, or place a verified copy by hand")
    os.replace(joined, dest)
    write_stamp(dest, digest)
    shutil.rmtree(parts_dir)
    return digest
