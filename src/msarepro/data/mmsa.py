"""Safe import of MMSA's feature pickles (unaligned_50.pkl, unaligned_39.pkl, ...) into the canonical format.

A pickle runs code when loaded: `pickle.load` on a downloaded file hands the file's author the machine. Here a
restricted unpickler resolves only the globals numpy needs to rebuild arrays and dtypes (plus OrderedDict and
the codec helper old pickles use for bytes); every other global is refused with UnsafePickleError, before it is
called. Plain containers, strings and numbers need no globals and load as usual.

MMSA's layout (docs/datasets.md): {"train"|"valid"|"test": {raw_text, id, text (N, L, 768), text_bert
(N, 3, L: input ids, attention mask, segment ids), audio (N, La, Da), vision (N, Lv, Dv), audio_lengths,
vision_lengths, annotations, classification_labels, regression_labels[, regression_labels_T/_A/_V]}}.

Conversion (every key kept somewhere):
    text, text_bert[:, 0]  -> arrays text (features) and text_ids (token ids); text true length = attention-mask
                              sum (text_bert[:, 1]); segment ids are all 0 for single sentences and are dropped
                              (their count of non-zeros is recorded in provenance)
    audio, vision          -> arrays with their true lengths from audio_lengths / vision_lengths (clipped to
                              [1, L]); where a file has no lengths, the last non-zero frame + 1
    -inf / +inf / NaN      -> 0, counted per modality in the manifest (`nonfinite_replaced`), as MMSA does
                              (while the split file is written, a chunk at a time: the pickle's arrays are not
                              copied whole, so an import peaks at about the pickle's size)
    regression_labels[_T/_A/_V] -> labels.csv M[, T, A, V];  raw_text -> text (manifest raw_text: true when
                              every part has it, so any tokenizer's ids can be derived);  id -> id
    token ids' record       -> modalities["text_ids"]: tokenizer bert-base-uncased (mosi family) or
                              bert-base-chinese (sims family), vocab_sha256 None (see TOKENIZERS), special_ids
                              PAD 0, CLS 101, SEP 102, UNK 100 (both vocabularies')
    annotations, classification_labels -> labels.csv columns `annotation`, `classification_label`

An unlabeled part (CH-SIMS v2's ch-simsv2u.pkl, `unlabeled=`) becomes the canonical `unlabeled` split: the same
keys minus the labels (label columns left empty; labels it may carry are not read), either at the top level of
the pickle or under one split key (docs/datasets.md: the release's inner layout is not documented by its
authors). Its per-frame dims must equal the labelled part's; where its sequences are longer or shorter, the
shorter side is zero-padded (true lengths kept), so nothing is cut.
"""
from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from .format import BERT_SPECIAL_IDS, SPLITS, DatasetError, Manifest, write_dataset


class UnsafePickleError(DatasetError):
    """The pickle asked for a global outside the allow-list: it is refused, never called."""


def _allowed() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray, numeric

    table = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x and 2.x pickles
        table[(mod, "_reconstruct")] = multiarray._reconstruct
        table[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(mod, "_frombuffer")] = numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                 "uint32", "uint64", "bool_", "str_", "bytes_", "object_"):
        table[("numpy", name)] = getattr(np, name)
    # numpy 2 pickles dtypes by their DType class, e.g. numpy.dtypes.Float32DType
    import numpy.dtypes as npd
    for name in dir(npd):
        if name.endswith("DType") and name[0].isupper():
            table[("numpy.dtypes", name)] = getattr(npd, name)
    table[("collections", "OrderedDict")] = collections.OrderedDict
    table[("_codecs", "encode")] = __import__("_codecs").encode  # protocol-2 pickles rebuild bytes with it
    for name in ("set", "frozenset", "bytearray", "complex", "slice"):
        table[("builtins", name)] = getattr(__import__("builtins"), name)
        table[("__builtin__", name)] = getattr(__import__("builtins"), name)
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """Admits numpy arrays and dtypes, plain containers, strings and numbers; refuses every other global."""

    def __init__(self, file, source: str = "pickle"):
        super().__init__(file, encoding="latin1")  # latin1: Python 2 numpy pickles hold byte strings
        self._table = _allowed()
        self._source = source

    def find_class(self, module: str, name: str):
        obj = self._table.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"{self._source}: refused to load: the pickle asks for {module}.{name}, which is not a numpy "
                "array, dtype, plain container, string or number. Pickles can run code when loaded; this file "
                "is not a plain MMSA feature file. Do not open it with pickle.load.")
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: refused to load: persistent ids are not allowed ({pid!r})")


def safe_load(path: str | Path):
    """Load a pickle through the restricted unpickler; errors name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, str(path)).load()
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); truncated or corrupt? "
                           "Compare its SHA-256 with the published one.") from None


REQUIRED = ("text", "audio", "vision", "regression_labels")
UNLABELED_REQUIRED = REQUIRED[:3]
UNIMODAL = ("T", "A", "V")
# The tokenizers MMSA made text_bert's ids with (its config: bert-base-uncased for MOSI / MOSEI, bert-base-chinese
# for the CH-SIMS family) and their vocabulary sizes. The pickles carry ids, not the vocabulary, so the
# vocabulary's SHA-256 is not known at import (recorded as None); data/tokens.py checks the ids against the
# vocabulary size of the tokenizer of that name when a model uses them.
TOKENIZERS = {"mosi": ("bert-base-uncased", 30522), "sims": ("bert-base-chinese", 21128)}


def _lengths(arr: np.ndarray, given, key: str, split: str, path: Path) -> np.ndarray:
    n, L = arr.shape[:2]
    if given is not None:
        lens = np.asarray(given, dtype=np.int64).reshape(-1)
        if lens.shape != (n,):
            raise DatasetError(f"{path}: {split}.{key} has {lens.shape[0]} entries for {n} samples")
    else:  # no lengths stored: the last frame holding a non-zero value (a chunk of clips at a time)
        step = max(1, (64 << 20) // max(arr[0].nbytes, 1))
        nz = np.concatenate([np.abs(np.nan_to_num(arr[s:s + step], nan=0.0, posinf=0.0, neginf=0.0)).sum(-1) > 0
                             for s in range(0, n, step)]) if n else np.zeros((0, L), bool)
        lens = np.where(nz.any(1), L - np.argmax(nz[:, ::-1], axis=1), 1)
    return np.clip(lens, 1, L).astype(np.int64)


def convert_split(d: dict, split: str, path: Path, unimodal: bool,
                  labelled: bool = True) -> tuple[dict, pd.DataFrame, dict]:
    missing = [k for k in (REQUIRED if labelled else UNLABELED_REQUIRED) if k not in d]
    if missing:
        raise DatasetError(f"{path}: split {split!r} lacks key(s) {missing}; found {sorted(d)}. "
                           "Is this an MMSA feature pickle?")
    text = np.asarray(d["text"], dtype=np.float32)
    n = text.shape[0]
    arrays = {"text": text}
    info = {"raw_text": "raw_text" in d}
    if "text_bert" in d:
        tb = np.asarray(d["text_bert"])
        if tb.ndim != 3 or tb.shape[0] != n or tb.shape[1] != 3:
            raise DatasetError(f"{path}: {split}.text_bert has shape {tb.shape}, expected (N, 3, L)")
        arrays["text_ids"] = np.nan_to_num(tb[:, 0]).astype(np.int64)
        t_len = np.clip(np.nan_to_num(tb[:, 1]).sum(1), 1, tb.shape[2]).astype(np.int64)
        arrays["text_ids_lengths"] = t_len
        info["segment_ids_nonzero"] = int(np.count_nonzero(np.nan_to_num(tb[:, 2])))
        arrays["text_lengths"] = np.minimum(t_len, text.shape[1])
    else:
        arrays["text_lengths"] = _lengths(text, None, "text_lengths", split, path)
    for mod in ("audio", "vision"):
        a = np.asarray(d[mod], dtype=np.float32)
        if a.ndim != 3 or a.shape[0] != n:
            raise DatasetError(f"{path}: {split}.{mod} has shape {a.shape}, expected ({n}, L, D)")
        arrays[mod] = a
        arrays[f"{mod}_lengths"] = _lengths(a, d.get(f"{mod}_lengths"), f"{mod}_lengths", split, path)
    ids = [str(x) for x in d.get("id", [f"{split}_{i}" for i in range(n)])]
    raw_text = [str(x) for x in d.get("raw_text", [""] * n)]
    if not labelled:  # an unlabeled part: label columns present but empty, as the canonical format has them
        empty = {c: np.nan for c in ("M",) + (UNIMODAL if unimodal else ())}
        return arrays, pd.DataFrame({"split": split, "id": ids, **empty, "text": raw_text}), info
    labels = {"M": np.asarray(d["regression_labels"], dtype=np.float64).reshape(-1)}
    if unimodal:
        for c in UNIMODAL:
            key = f"regression_labels_{c}"
            if key not in d:
                raise DatasetError(f"{path}: split {split!r} lacks {key}: not a CH-SIMS-family file "
                                   "(use --family mosi)")
            labels[c] = np.asarray(d[key], dtype=np.float64).reshape(-1)
    rows = pd.DataFrame({"split": split, "id": ids, **labels, "text": raw_text})
    if "annotations" in d:
        rows["annotation"] = [str(x) for x in d["annotations"]]
    if "classification_labels" in d:
        rows["classification_label"] = np.asarray(d["classification_labels"]).reshape(-1)
    for k, v in labels.items():
        if len(v) != n:
            raise DatasetError(f"{path}: {split} has {n} samples but {len(v)} labels in {k}")
    return arrays, rows, info


def unlabeled_clips(path: str | Path) -> dict:
    """An unlabeled part's pickle -> its dict of MMSA keys (text, audio, vision[, text_bert, audio_lengths,
    vision_lengths, id, raw_text]), found at the top level or under the pickle's one split key."""
    path = Path(path)
    data = safe_load(path)
    if isinstance(data, dict) and all(k in data for k in UNLABELED_REQUIRED):
        return data
    inner = [v for v in data.values() if isinstance(v, dict)] if isinstance(data, dict) else []
    if len(inner) == 1 and len(data) == 1 and all(k in inner[0] for k in UNLABELED_REQUIRED):
        return inner[0]
    found = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise DatasetError(f"{path}: expected unlabeled clips with MMSA's keys {list(UNLABELED_REQUIRED)} at the top "
                       f"level or under one split key; found {found}")


def _pad(a: np.ndarray, length: int) -> np.ndarray:
    """(N, L, ...) -> (N, length, ...) with zeros after the L frames (length >= L)."""
    if a.shape[1] == length:
        return a
    width = [(0, 0)] * a.ndim
    width[1] = (0, length - a.shape[1])
    return np.pad(a, width)


def _join_unlabeled(arrays: dict, path: Path, upath: Path) -> None:
    """Make the unlabeled split's arrays fit the labelled ones' per-sample shapes (in place): equal dims
    required, the shorter sequences zero-padded; token ids kept only where the labelled part has them too."""
    un, tr = arrays["unlabeled"], arrays["train"]
    if "text_ids" in un and "text_ids" not in tr:
        for k in ("text_ids", "text_ids_lengths"):
            un.pop(k)
    for m in ("text", "audio", "vision", "text_ids"):
        if m not in un:
            continue
        if un[m].shape[2:] != tr[m].shape[2:]:
            raise DatasetError(f"{upath}: {m} has {un[m].shape[2:]} per frame, the labelled part {path.name} has "
                               f"{tr[m].shape[2:]}: not the same features")
        length = max(un[m].shape[1], tr[m].shape[1])
        for s in arrays:
            arrays[s][m] = _pad(arrays[s][m], length)


def import_mmsa(path: str | Path, out: str | Path, name: str, family: str | None = None, preset: str = "",
                provenance: dict | None = None, unlabeled: str | Path | None = None) -> Manifest:
    """Import an MMSA feature pickle into the canonical directory `out`.

    family: "mosi" (labels in [-3, 3]) or "sims" (labels in [-1, 1] with T/A/V); default: "sims" when the file
    carries regression_labels_T, else "mosi".
    unlabeled: a pickle of unlabeled clips of the same features (CH-SIMS v2's ch-simsv2u.pkl), imported as the
    `unlabeled` split.
    """
    path = Path(path)
    data = safe_load(path)
    if not isinstance(data, dict) or not all(s in data for s in SPLITS):
        raise DatasetError(f"{path}: expected a dict with splits {list(SPLITS)}, found "
                           f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    if family is None:
        family = "sims" if "regression_labels_T" in data["train"] else "mosi"
    if family not in ("mosi", "sims"):
        raise DatasetError(f"--family {family!r}: expected mosi or sims")
    unimodal = family == "sims"
    arrays, frames, infos = {}, [], {}
    for s in SPLITS:
        arrays[s], rows, infos[s] = convert_split(data[s], s, path, unimodal)
        frames.append(rows)
    del data
    if unlabeled is not None:
        upath = Path(unlabeled)
        arrays["unlabeled"], rows, infos["unlabeled"] = convert_split(unlabeled_clips(upath), "unlabeled", upath,
                                                                      unimodal, labelled=False)
        frames.append(rows)
    tr = arrays["train"]
    tok, vocab = TOKENIZERS[family]
    modalities = {m: {"dim": int(tr[m].shape[2]), "max_len": int(tr[m].shape[1])} for m in ("text", "audio", "vision")}
    for s in SPLITS:
        for m in ("text", "audio", "vision"):
            if arrays[s][m].shape[1:] != tr[m].shape[1:]:
                raise DatasetError(f"{path}: {s}.{m} has shape {arrays[s][m].shape[1:]} per sample, train has "
                                   f"{tr[m].shape[1:]}")
    if unlabeled is not None:
        _join_unlabeled(arrays, path, upath)
        modalities = {m: {**modalities[m], "max_len": int(tr[m].shape[1])} for m in modalities}
    if "text_ids" in tr:
        top = max(int(arrays[s]["text_ids"].max()) for s in arrays if "text_ids" in arrays[s])
        modalities["text_ids"] = {"vocab_size": max(vocab, top + 1), "max_len": int(tr["text_ids"].shape[1]),
                                  "tokenizer": tok, "vocab_sha256": None, "special_ids": dict(BERT_SPECIAL_IDS)}
    del tr  # write_dataset drops each split once written (release=True): nothing else holds them
    lo = 3.0 if family == "mosi" else 1.0
    manifest = Manifest(
        name=name, family="trimodal", task="regression", metric_family=family, label_range=(-lo, lo),
        modalities=modalities, splits={s: len(arrays[s]["text"]) for s in arrays}, unimodal_labels=unimodal,
        preset=preset or name, raw_text=all(i["raw_text"] for i in infos.values()),
        provenance={"importer": "msarepro.data.mmsa.import_mmsa", "file": path.name,
                    **({"unlabeled_file": Path(unlabeled).name} if unlabeled is not None else {}), **(provenance or {}),
                    "segment_ids_nonzero": sum(i.get("segment_ids_nonzero", 0) for i in infos.values()),
                    "nonfinite_policy": "replaced by 0 (as MMSA does for MOSI audio)"},
    )
    return write_dataset(out, manifest, arrays, pd.concat(frames, ignore_index=True), release=True)
