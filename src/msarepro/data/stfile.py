"""Safetensors files written from array buffers chunk by chunk, and read a row at a time.

The format: 8 bytes (little-endian uint64) n, n bytes of JSON {name: {"dtype": "F32", "shape": [...],
"data_offsets": [begin, end]}} padded with spaces to a multiple of 8, then the arrays' bytes (little-endian, C
order; offsets count from the end of the header). `write` lays the arrays out as `safetensors.numpy.save_file`
does (by dtype, widest first, then by name), so for the same arrays the file is byte for byte the same; unlike
save_file it never copies a whole array (save_file turns every array into bytes first).

`open_arrays` reads the header and gives each (N, L, ...) array as a `LazyArray`: rows are read with os.pread
when asked for, so nothing of the file stays resident in the process (the kernel's page cache holds what it
likes; it is not the process's memory). Each row of an (N, L, D) array is contiguous in the file.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

# safetensors' dtype codes, in the order its writer lays arrays out (widest first; ties as its Dtype enum)
ORDER = ("U64", "I64", "F64", "F32", "U32", "I32", "F16", "U16", "I16", "I8", "U8", "BOOL")
DTYPES = {"U64": "<u8", "I64": "<i8", "F64": "<f8", "F32": "<f4", "U32": "<u4", "I32": "<i4", "F16": "<f2",
          "U16": "<u2", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
CODES = {np.dtype(v).newbyteorder("<") if np.dtype(v).itemsize > 1 else np.dtype(v): k for k, v in DTYPES.items()}
CHUNK = 64 << 20  # bytes per read or write when a whole array is streamed
MAX_HEADER = 100 << 20


class FormatError(ValueError):
    """Not a readable safetensors file (the message says what is wrong; callers name the file)."""


def code_of(dtype: np.dtype) -> str:
    d = np.dtype(dtype)
    key = d.newbyteorder("<") if d.itemsize > 1 else d
    if key not in CODES:
        raise FormatError(f"dtype {d} cannot be stored in a safetensors file here; use one of {sorted(DTYPES)}")
    return CODES[key]


def _rows_per_chunk(a) -> int:
    row = int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize
    return max(1, CHUNK // max(row, 1))


def chunks(a) -> Iterator[np.ndarray]:
    """C-contiguous pieces of `a` (an ndarray or LazyArray) along its first axis, each about CHUNK bytes."""
    if a.ndim == 0:
        yield np.ascontiguousarray(a)
        return
    step = _rows_per_chunk(a)
    for s in range(0, a.shape[0], step):
        yield np.ascontiguousarray(a[s:s + step])


def header_bytes(arrays: dict) -> bytes:
    """The header (length prefix included) save_file writes for arrays of these dtypes and shapes."""
    names = sorted(arrays, key=lambda k: (ORDER.index(code_of(arrays[k].dtype)), k))
    head, at = {}, 0
    for k in names:
        a = arrays[k]
        size = int(np.prod(a.shape, dtype=np.int64)) * a.dtype.itemsize
        shape = [int(x) for x in a.shape] or [1]  # a 0-d array is stored as shape [1], as save_file does
        head[k] = {"dtype": code_of(a.dtype), "shape": shape, "data_offsets": [at, at + size]}
        at += size
    blob = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob


def write(path: str | Path, arrays: dict, zero_nonfinite: bool = False) -> dict[str, int]:
    """Write `arrays` (ndarrays or LazyArrays) to `path`, a chunk at a time. zero_nonfinite: float values that
    are NaN or infinite are written as 0 (the caller's arrays are not changed) -> {name: how many} for arrays
    that had any."""
    head = header_bytes(arrays)
    order = list(json.loads(head[8:].decode("utf-8")))
    replaced: dict[str, int] = {}
    with open(path, "wb") as f:
        f.write(head)
        for k in order:
            a = arrays[k]
            for c in chunks(a):
                if c.dtype.byteorder == ">":
                    c = c.astype(c.dtype.newbyteorder("<"))
                if zero_nonfinite and c.dtype.kind == "f":
                    bad = ~np.isfinite(c)
                    if bad.any():
                        replaced[k] = replaced.get(k, 0) + int(bad.sum())
                        c = np.where(bad, 0, c).astype(c.dtype)
                f.write(memoryview(c.reshape(-1).view(np.uint8)))
    return replaced


def read_header(path: str | Path) -> tuple[dict[str, dict], int]:
    """-> ({name: {"dtype", "shape", "data_offsets"}}, offset of the data in the file); FormatError if the
    header is malformed or the file is shorter than the header says."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise FormatError(f"{size} bytes, shorter than the 8-byte header length")
        n = struct.unpack("<Q", raw)[0]
        if n > MAX_HEADER or 8 + n > size:
            raise FormatError(f"header length {n} does not fit in the file's {size} bytes (truncated?)")
        try:
            head = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"header is not valid JSON ({e})") from None
    if not isinstance(head, dict):
        raise FormatError("header is not a JSON object")
    head.pop("__metadata__", None)
    data = size - 8 - n
    for k, v in head.items():
        try:
            dt, shape, (b, e) = np.dtype(DTYPES[v["dtype"]]), [int(x) for x in v["shape"]], v["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"array {k!r}: malformed entry {v!r} (dtype one of {sorted(DTYPES)}, shape, "
                              "data_offsets)") from None
        if e - b != int(np.prod(shape, dtype=np.int64)) * dt.itemsize or b < 0:
            raise FormatError(f"array {k!r}: data_offsets {[b, e]} do not match shape {shape} of {v['dtype']}")
        if e > data:
            raise FormatError(f"array {k!r} ends at byte {e} of the data, but the file holds only {data} data "
                              "bytes (truncated?)")
    return head, 8 + n


def _read_into(fd: int, buf: np.ndarray, offset: int, path) -> None:
    view = memoryview(buf.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise FormatError(f"{path}: ended at byte {offset + done} while reading (truncated since it was opened?)")
        done += got


class LazyArray:
    """An array in a safetensors file, read when indexed; behaves enough like an ndarray for `len`, `.shape`,
    `.dtype`, `.ndim`, slicing, integer-array indexing and np.asarray (which reads it whole)."""

    def __init__(self, path: str | Path, entry: dict, data_start: int):
        self.path = str(path)
        self.dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("=")
        self.shape = tuple(int(x) for x in entry["shape"])
        self.offset = data_start + int(entry["data_offsets"][0])
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._pid = -1

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape, dtype=np.int64)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyArray({self.path!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(stop - start, 0),) + self.shape[1:], self.dtype)
        if out.size:
            _read_into(self._file(), out, self.offset + start * self.row_bytes, self.path)
        return out

    def rows(self, idx, length: int | None = None) -> np.ndarray:
        """a[idx, :length] as a new C-contiguous array, read in file order (indices sorted) and returned in the
        order asked for."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        n = self.shape[0]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{self.path}: row index out of range for {n} rows")
        idx = np.where(idx < 0, idx + n, idx)
        full = length is None or length >= self.shape[1]
        inner = self.shape[1:] if full else (length,) + self.shape[2:]
        out = np.empty((len(idx),) + inner, self.dtype)
        size = out[0].nbytes if len(idx) else 0
        if size == 0:
            return out
        fd, order = self._file(), np.argsort(idx, kind="stable")
        j = 0
        while j < len(order):  # a run of consecutive rows is one read when whole rows are asked for
            k = j + 1
            while full and k < len(order) and k - j < 512 and idx[order[k]] == idx[order[k - 1]] + 1:
                k += 1
            bufs = [memoryview(out[p].reshape(-1).view(np.uint8)) for p in order[j:k]]
            at = self.offset + int(idx[order[j]]) * self.row_bytes
            got = os.preadv(fd, bufs, at)
            if got != size * len(bufs):  # short read: fall back to one row at a time, which loops until done
                for p in order[j:k]:
                    _read_into(fd, out[p], self.offset + int(idx[p]) * self.row_bytes, self.path)
            j = k
        return out

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.rows([key])[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                return self._range(start, max(stop, start))
            return self.rows(np.arange(start, stop, step))
        if isinstance(key, tuple):
            return self[key[0]][(slice(None),) + key[1:]]
        return self.rows(key)

    def __array__(self, dtype=None, copy=None):
        a = self._range(0, self.shape[0]) if self.ndim else self._scalar()
        return a if dtype is None else a.astype(dtype)

    def _scalar(self) -> np.ndarray:
        out = np.empty((), self.dtype)
        _read_into(self._file(), out, self.offset, self.path)
        return out


def open_arrays(path: str | Path, lazy_min_ndim: int = 3) -> dict:
    """{name: array} of a safetensors file: arrays of at least `lazy_min_ndim` dimensions as LazyArray, the
    others (lengths, token ids) read into memory. Order: the file's."""
    head, start = read_header(path)
    out = {}
    for k, v in head.items():
        a = LazyArray(path, v, start)
        out[k] = a if a.ndim >= lazy_min_ndim else np.asarray(a)
    return out
