"""The canonical on-disk dataset format: one directory per dataset.

    manifest.json          what the dataset is (see `Manifest`), with the SHA-256 of every other file
    labels.csv             split, id, M [, T, A, V], text   (one row per sample; unlabeled rows have empty M)
    <split>.safetensors    per-split arrays (cannot execute code when loaded)

Arrays in a split file (N samples; sequences right-padded with zeros, true lengths kept):
    trimodal:    text (N, Lt, Dt) float32, text_lengths (N,) int64,
                 audio (N, La, Da) float32, audio_lengths (N,), vision (N, Lv, Dv) float32, vision_lengths (N,)
                 optional text_ids (N, Li) int64 with text_ids_lengths (N,)  -- the dataset's own token ids
    image_text:  image (N, C, H, W) uint8 [, text_ids (N, Li) int64, text_ids_lengths (N,)]

Text: `raw_text: true` says labels.csv's `text` column holds every row's raw text; token ids for any tokenizer
are then derived from it and cached outside the dataset (data/tokens.py). Token ids a dataset carries itself
(MMSA's BERT ids, the embedded vocabularies) are recorded as modalities["text_ids"] = {"vocab_size", "max_len",
"tokenizer", "vocab_sha256", "special_ids"}; special_ids = {"pad", "cls", "sep", "unk"} -> id (null where the
tokenizer has no such token) says which ids are the padding, first, last and unknown tokens (the robustness
perturbations replace dropped tokens by "unk" and keep "cls" and "sep"). Manifests written before special_ids
existed load as before; `special_ids()` then gives the ids their tokenizer is known to use, where it is known.
An image_text dataset needs `image` and raw text or its own text_ids.

Non-finite policy: features are stored finite. Importers replace -inf/+inf/NaN by 0 (as MMSA does for MOSI's
audio) and record how many they replaced in the manifest (`nonfinite_replaced`); loading refuses a file that
still holds a non-finite value.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_path, sha256_file, write_json

SPLITS = ("train", "valid", "test")
SEQ_MODALITIES = ("text", "audio", "vision", "text_ids")
FORMAT_VERSION = 1


EMBEDDED_PREFIX = "msarepro "  # names of the embedded generators' vocabularies: "msarepro synth-mvsa vocabulary"


def embedded_tokenizer_name(dataset: str) -> str:
    """The tokenizer name an embedded generator records for its own vocabulary."""
    return f"{EMBEDDED_PREFIX}{dataset} vocabulary"


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else str(v)


def vocab_digest(vocab: dict[str, int], special_tokens: dict) -> str:
    """The `vocab_sha256` of a token-id record: SHA-256 of the canonical JSON {"special_tokens": {role: token},
    "vocab": {token: id}} (sorted keys, no spaces, UTF-8). data/tokens.vocab_sha256 applies it to a loaded
    tokenizer; the embedded generators to their vocabulary definitions."""
    blob = json.dumps({"special_tokens": {str(k): _plain(v) for k, v in special_tokens.items()},
                       "vocab": {str(k): int(v) for k, v in vocab.items()}},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class DatasetError(ValueError):
    """A dataset directory is malformed; the message names the file, the field and what to do."""


SPECIAL_ROLES = ("pad", "cls", "sep", "unk")
BERT_SPECIAL_IDS = {"pad": 0, "cls": 101, "sep": 102, "unk": 100}  # bert-base-uncased and bert-base-chinese alike
EMBEDDED_SPECIAL_IDS = {"pad": 0, "cls": 1, "sep": 2, "unk": 3}  # every embedded vocabulary (data/synth.py)
# tokenizers whose ids are known without loading them (packaged-minilm: bert-base-uncased's WordPiece, data/tokens.py)
KNOWN_SPECIAL_IDS = {"bert-base-uncased": BERT_SPECIAL_IDS, "bert-base-chinese": BERT_SPECIAL_IDS,
                     "packaged-minilm": BERT_SPECIAL_IDS}


def special_ids(record: dict | None) -> dict[str, int | None] | None:
    """The special token ids of a token-id record (manifest modalities["text_ids"] or a derived record): its
    `special_ids`, or, for a record written before that field existed, the ids its tokenizer is known to use
    (bert-base-uncased / bert-base-chinese: MMSA's imports; packaged-minilm; the embedded vocabularies); None
    when unknown."""
    if not record:
        return None
    if "special_ids" in record:
        return dict(record["special_ids"])
    name = str(record.get("tokenizer", ""))
    if name.startswith(EMBEDDED_PREFIX):
        return dict(EMBEDDED_SPECIAL_IDS)
    return dict(KNOWN_SPECIAL_IDS[name]) if name in KNOWN_SPECIAL_IDS else None


def tokenizer_special_ids(tokenizer) -> dict[str, int | None]:
    """`special_ids` of a loaded Hugging Face tokenizer: its pad/cls/sep/unk token ids (None where it has no such
    token, e.g. CLIP's has no [CLS])."""
    return {role: (None if getattr(tokenizer, f"{role}_token_id", None) is None
                   else int(getattr(tokenizer, f"{role}_token_id"))) for role in SPECIAL_ROLES}


def _check_special_ids(path: Path, name: str, spec: dict) -> None:
    ids = spec["special_ids"]
    where = f"{path}: modalities.{name}.special_ids"
    if not isinstance(ids, dict) or set(ids) != set(SPECIAL_ROLES):
        got = sorted(ids) if isinstance(ids, dict) else type(ids).__name__
        raise DatasetError(f"{where} must map exactly {list(SPECIAL_ROLES)} to token ids (null where the tokenizer "
                           f"has no such token); found {got}. Re-create or re-import the dataset.")
    size = spec.get("vocab_size")
    for role, v in ids.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (isinstance(size, int) and v >= size):
            raise DatasetError(f"{where}.{role} is {v!r}; expected an id in [0, vocab_size={size}) or null. "
                               "Re-create or re-import the dataset.")


@dataclass(frozen=True)
class Manifest:
    name: str
    family: str  # "trimodal" | "image_text"
    task: str  # "regression" | "classification"
    metric_family: str  # "mosi" | "sims" | "cls"
    label_range: tuple[float, float]
    modalities: dict[str, dict[str, Any]]  # e.g. {"audio": {"dim": 5, "max_len": 375}, "image": {"shape": [3,32,32]}}
    splits: dict[str, int]  # sample count per split, "unlabeled" optional
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    f1_average: str = "weighted"
    unimodal_labels: bool = False  # T/A/V columns present (CH-SIMS family)
    preset: str = ""  # which per-dataset hyperparameter preset applies (e.g. "mosi" for an imported MOSI)
    provenance: dict[str, Any] = field(default_factory=dict)
    nonfinite_replaced: dict[str, int] = field(default_factory=dict)
    raw_text: bool = False  # labels.csv column `text` holds the raw text of every row (token ids derive from it)
    files: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256
    format_version: int = FORMAT_VERSION

    @property
    def label_columns(self) -> list[str]:
        return ["M", "T", "A", "V"] if self.unimodal_labels else ["M"]


def _manifest_from_json(path: Path) -> Manifest:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing. A dataset directory needs a manifest.json; "
                           "create one with `msarepro data synth` or an importer.") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e}).") from None
    known = set(Manifest.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise DatasetError(f"{path}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    missing = [k for k in ("name", "family", "task", "metric_family", "label_range", "modalities", "splits")
               if k not in raw]
    if missing:
        raise DatasetError(f"{path}: missing field(s) {missing}")
    raw["label_range"] = tuple(raw["label_range"])
    raw["class_names"] = tuple(raw.get("class_names", ()))
    m = Manifest(**raw)
    if m.family not in ("trimodal", "image_text"):
        raise DatasetError(f"{path}: field 'family' is {m.family!r}; expected 'trimodal' or 'image_text'")
    if m.task not in ("regression", "classification"):
        raise DatasetError(f"{path}: field 'task' is {m.task!r}; expected 'regression' or 'classification'")
    if m.metric_family not in ("mosi", "sims", "cls"):
        raise DatasetError(f"{path}: field 'metric_family' is {m.metric_family!r}; expected mosi, sims or cls")
    for name, spec in m.modalities.items():
        if isinstance(spec, dict) and "special_ids" in spec:
            _check_special_ids(path, name, spec)
    return m


def write_dataset(out_dir: str | Path, manifest: Manifest, arrays: dict[str, dict[str, np.ndarray]],
                  labels: pd.DataFrame, release: bool = False) -> Manifest:
    """Write a canonical dataset. Non-finite feature values are written as 0 and counted in the manifest.

    `arrays[split][name]` as described in the module docstring (ndarrays, or LazyArrays of a loaded dataset);
    `labels` has columns split, id, M[, T, A, V], text. Split files are streamed a chunk at a time (the
    caller's arrays are neither copied whole nor changed); release: drop each split from `arrays` once written,
    so that an importer's memory shrinks as it goes. Every file is written atomically; the manifest, written
    last, lists their hashes.
    """
    from . import stfile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    replaced: dict[str, int] = dict(manifest.nonfinite_replaced)
    for split in list(arrays):
        fname = f"{split}.safetensors"
        with atomic_path(out / fname) as tmp:
            counts = stfile.write(tmp, arrays[split], zero_nonfinite=True)
        for name, k in counts.items():
            replaced[name] = replaced.get(name, 0) + k
        files[fname] = sha256_file(out / fname)
        if release:
            del arrays[split]
    with atomic_path(out / "labels.csv") as tmp:
        labels.to_csv(tmp, index=False)
    files["labels.csv"] = sha256_file(out / "labels.csv")
    d = asdict(manifest)
    d.update(files=files, nonfinite_replaced=replaced)
    d["label_range"] = list(manifest.label_range)
    d["class_names"] = list(manifest.class_names)
    write_json(out / "manifest.json", d)
    return _manifest_from_json(out / "manifest.json")


@dataclass
class Split:
    """One split: arrays (see module docstring; ndarrays, or for a lazily loaded dataset LazyArrays of its
    features, which index and np.asarray like arrays; arrays put in later may be plain) and its labels table rows,
    in the same order."""
    name: str
    arrays: dict[str, np.ndarray]
    labels: pd.DataFrame

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class CanonicalDataset:
    root: Path
    manifest: Manifest
    splits: dict[str, Split]


def split_files_bytes(root: str | Path, splits: tuple[str, ...] = SPLITS) -> int:
    """Total size of the split files of `splits` that exist under `root`."""
    return sum(p.stat().st_size for p in (Path(root) / f"{s}.safetensors" for s in splits) if p.exists())


def should_load_lazily(root: str | Path, runtime, splits: tuple[str, ...] = SPLITS) -> bool:
    """`runtime` (config.RuntimeConfig: load, lazy_above_gb) decides how `load_dataset` reads `root`: "lazy" or
    "memory" as said; "auto": lazily when the split files of `splits` together exceed lazy_above_gb GiB."""
    if runtime.load == "lazy":
        return True
    if runtime.load == "memory":
        return False
    return split_files_bytes(root, splits) > runtime.lazy_above_gb * 2 ** 30


def load_dataset(root: str | Path, verify_hashes: bool = True,
                 splits: tuple[str, ...] = SPLITS, lazy: bool = False) -> CanonicalDataset:
    """Load and validate a canonical dataset directory; every error names the file and the field.

    lazy: feature arrays (3 or more dimensions) stay in their files as `stfile.LazyArray`s read a batch at a
    time (lengths and token ids are read into memory); validation and hashing read the files in chunks. The
    batches `loader.SplitTensors` makes are the same tensors either way. See `should_load_lazily`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from . import stfile

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory. Generate it (`msarepro data synth NAME --out "
                           f"{root}`), import it (`msarepro data import-mmsa`), or run `dvc repro download`.")
    m = _manifest_from_json(root / "manifest.json")
    if verify_hashes:
        for fname, expected in m.files.items():
            p = root / fname
            if not p.exists():
                raise DatasetError(f"{p}: listed in manifest.json but missing; re-create the dataset.")
            got = sha256_file(p)
            if got != expected:
                raise DatasetError(f"{p}: SHA-256 {got} does not match manifest.json ({expected}); the file "
                                   "changed after it was written. Re-create or re-import the dataset.")
    labels_path = root / "labels.csv"
    try:
        labels = pd.read_csv(labels_path, keep_default_na=False, na_values=[""],
                             dtype={"id": str, "split": str, "text": str})
    except FileNotFoundError:
        raise DatasetError(f"{labels_path}: missing; a dataset needs a labels table.") from None
    for col in ["split", "id"] + m.label_columns + (["text"] if m.raw_text else []):
        if col not in labels.columns:
            raise DatasetError(f"{labels_path}: missing column {col!r} (manifest says unimodal_labels="
                               f"{m.unimodal_labels}, raw_text={m.raw_text}); found {list(labels.columns)}")
    out: dict[str, Split] = {}
    for split in splits:
        if split not in m.splits:
            if split == "unlabeled":
                continue
            raise DatasetError(f"{root / 'manifest.json'}: field 'splits' has no {split!r} split")
        p = root / f"{split}.safetensors"
        try:
            arrays = stfile.open_arrays(p) if lazy else load_file(str(p))
        except FileNotFoundError:
            raise DatasetError(f"{p}: missing split file; re-create the dataset.") from None
        except (SafetensorError, stfile.FormatError) as e:
            raise DatasetError(f"{p}: not a readable safetensors file ({e}); re-create or re-import the "
                               "dataset.") from None
        rows = labels[labels["split"] == split].reset_index(drop=True)
        out[split] = Split(split, arrays, rows)
        _validate_split(p, labels_path, m, out[split])
    return CanonicalDataset(root, m, out)


def _nonfinite(a) -> int:
    """How many NaN/inf values a float array holds, read a chunk at a time (an ndarray or a LazyArray)."""
    from .stfile import chunks

    return sum(int(c.size - np.count_nonzero(np.isfinite(c))) for c in chunks(a))


def _validate_split(path: Path, labels_path: Path, m: Manifest, s: Split) -> None:
    n = m.splits[s.name]
    if n == 0 or len(s) == 0:
        raise DatasetError(f"{path}: split {s.name!r} is empty; every split needs at least one sample.")
    if len(s) != n:
        raise DatasetError(f"{labels_path}: split {s.name!r} has {len(s)} rows, manifest.json says {n}")
    expected = {"trimodal": ["text", "audio", "vision"], "image_text": ["image"]}[m.family]
    if m.family == "image_text" and not m.raw_text and "text_ids" not in m.modalities:
        raise DatasetError(f"{path.parent / 'manifest.json'}: an image_text dataset needs raw text (raw_text: true, "
                           "labels.csv column 'text') or its own token ids (modality 'text_ids'); it has neither. "
                           "Re-import the dataset.")
    for mod in expected:
        if mod not in m.modalities:
            raise DatasetError(f"{path.parent / 'manifest.json'}: modality {mod!r} missing from 'modalities' "
                               f"(a {m.family} dataset needs {expected})")
        if mod not in s.arrays:
            raise DatasetError(f"{path}: array {mod!r} missing (a {m.family} dataset needs {expected})")
    for name, spec in m.modalities.items():
        if name not in s.arrays:
            if name == "text_ids" and m.family == "trimodal":
                continue
            raise DatasetError(f"{path}: array {name!r} declared in manifest.json is missing")
        a = s.arrays[name]
        if a.shape[0] != n:
            raise DatasetError(f"{path}: array {name!r} has {a.shape[0]} samples, expected {n}")
        if name == "image":
            if list(a.shape[1:]) != list(spec["shape"]):
                raise DatasetError(f"{path}: array 'image' has shape {list(a.shape[1:])} per sample, "
                                   f"manifest.json says {spec['shape']}")
            continue
        if "vocab_size" in spec:  # token ids
            if a.ndim != 2 or a.shape[1] != spec["max_len"]:
                raise DatasetError(f"{path}: array {name!r} shape {a.shape}, expected (N, {spec['max_len']})")
        elif a.ndim != 3 or a.shape[1:] != (spec["max_len"], spec["dim"]):
            raise DatasetError(f"{path}: array {name!r} has shape {a.shape}, manifest.json says "
                               f"(N, max_len={spec['max_len']}, dim={spec['dim']})")
        bad = _nonfinite(a) if a.dtype.kind == "f" else 0
        if bad:
            raise DatasetError(f"{path}: array {name!r} holds {bad} non-finite values; "
                               "importers replace them by 0 (the documented policy): re-import the dataset.")
        lens = s.arrays.get(f"{name}_lengths")
        if lens is None:
            raise DatasetError(f"{path}: array '{name}_lengths' missing (true lengths of {name!r})")
        if lens.shape != (n,) or lens.min() < 1 or lens.max() > a.shape[1]:
            raise DatasetError(f"{path}: '{name}_lengths' must be (N,) with values in [1, {a.shape[1]}]; "
                               f"found shape {lens.shape}, range [{lens.min()}, {lens.max()}]")
    if s.name == "unlabeled":
        return
    lo, hi = m.label_range
    for col in m.label_columns:
        y = s.labels[col].to_numpy(dtype=np.float64)
        if not np.isfinite(y).all():
            raise DatasetError(f"{labels_path}: column {col!r} in split {s.name!r} has missing or non-numeric labels")
        if y.min() < lo - 1e-6 or y.max() > hi + 1e-6:
            raise DatasetError(f"{labels_path}: column {col!r} in split {s.name!r} has labels in "
                               f"[{y.min():g}, {y.max():g}], outside the declared label_range [{lo:g}, {hi:g}]")
        if m.task == "classification" and col == "M" and not np.all(y == np.round(y)):
            raise DatasetError(f"{labels_path}: classification labels in split {s.name!r} must be integers")
