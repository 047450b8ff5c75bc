"""The special token ids ([PAD], [CLS], [SEP], [UNK]) of the token ids a model reads, for the perturbations that
replace dropped tokens by the unknown token and keep the first and last real token.

Where they come from, in this order:
    1. the dataset's manifest: modalities["text_ids"]["special_ids"] = {"pad", "cls", "sep", "unk"} (datasets that
       carry token ids of their own record them), for ids the dataset carries;
    2. the embedded generators' vocabularies (data/synth.py), recognised by their vocabulary SHA-256;
    3. the tokenizer itself, loaded by name (ids derived from raw text, data/tokens.py): its unk, cls (else bos),
       sep (else eos) and pad ids;
    4. a Google BERT WordPiece vocabulary that cannot be loaded here (MMSA's bert-base-uncased / bert-base-chinese
       ids, offline): [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, the ids every such vocabulary shares (said on
       stderr);
and otherwise a ConfigError naming the dataset and the tokenizer.
"""
from __future__ import annotations

import re
import sys

from ..config import ConfigError
from .perturb import SpecialIds

BERT_FALLBACK = SpecialIds(pad=0, cls=101, sep=102, unk=100)
_BERT_NAME = re.compile(r"^(google-bert/)?bert-(base|large)-(uncased|cased|chinese|multilingual-(un)?cased)$")
BERT_NAMES = ("packaged-minilm",)  # the packaged MiniLM reads bert-base-uncased's WordPiece vocabulary


def from_record(record: dict | None) -> SpecialIds | None:
    """SpecialIds from a manifest token-id record's "special_ids", or None when it has none."""
    ids = (record or {}).get("special_ids")
    if not ids:
        return None
    try:
        return SpecialIds(pad=int(ids["pad"]), cls=int(ids["cls"]), sep=int(ids["sep"]), unk=int(ids["unk"]))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"manifest special_ids {ids!r}: expected integers pad, cls, sep and unk") from None


def embedded(record: dict | None) -> SpecialIds | None:
    """The special ids of an embedded generator's vocabulary whose SHA-256 the record names, else None."""
    from ..data.format import vocab_digest
    from ..data.synth import SPECIAL_TOKENS, image_text_vocabulary, trimodal_vocabulary

    want = (record or {}).get("vocab_sha256")
    for vocab in (trimodal_vocabulary(), image_text_vocabulary()):
        if want and vocab_digest(vocab, SPECIAL_TOKENS) == want:
            return SpecialIds(pad=vocab["[PAD]"], cls=vocab["[CLS]"], sep=vocab["[SEP]"], unk=vocab["[UNK]"])
    return None


def from_tokenizer(name: str) -> SpecialIds | None:
    """The ids of tokenizer `name` loaded by data.tokens.load_tokenizer, or None when it cannot be loaded or lacks
    an unknown token."""
    from ..data.tokens import DATASET_TOKENIZER, load_tokenizer

    if not name or name == DATASET_TOKENIZER:
        return None
    try:
        tok = load_tokenizer(name)
    except (ConfigError, ValueError):
        return None
    cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    if tok.unk_token_id is None or cls is None or sep is None:
        return None
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return SpecialIds(pad=int(pad), cls=int(cls), sep=int(sep), unk=int(tok.unk_token_id))


def is_bert_vocabulary(name: str) -> bool:
    return name in BERT_NAMES or bool(_BERT_NAME.match(name or ""))


def special_ids(dataset: str, key: str, record: dict | None, tokenizer: str) -> SpecialIds:
    """The special ids of batch key `key` (text_ids, clip_ids) of dataset `dataset`. record: the manifest's
    token-id record of ids the dataset carries (None for ids derived from raw text); tokenizer: the name of the
    tokenizer the ids belong to (the record's, or the one the method requested)."""
    found = from_record(record) or embedded(record) or from_tokenizer(tokenizer)
    if found is not None:
        return found
    if is_bert_vocabulary(tokenizer):
        print(f"msarepro: note: {dataset} {key}: no special token ids recorded and tokenizer {tokenizer!r} cannot "
              "be loaded here; using BERT WordPiece's [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102", file=sys.stderr)
        return BERT_FALLBACK
    raise ConfigError(f"dataset {dataset}: the special token ids of {key} (tokenizer {tokenizer!r}) are unknown: "
                      "the manifest records no special_ids under modalities.text_ids, the tokenizer cannot be "
                      "loaded and is not a BERT vocabulary; add special_ids {\"pad\", \"cls\", \"sep\", \"unk\"} to "
                      "the dataset's manifest.json record, or make the tokenizer loadable (a local folder)")


def for_tokens(dataset: str, native: dict | None, requests: dict[str, str], tokens: dict[str, dict]) -> dict[str, SpecialIds]:
    """The special ids of every token-id key a model reads: native, the manifest's modalities["text_ids"] record
    as loaded (before data.tokens.provide_tokens replaces it); requests, {key: tokenizer} of the method's
    `token_requests`; tokens, provide_tokens' records ({key: {"tokenizer", "source", ...}}). -> {key: SpecialIds}."""
    out = {}
    for key, rec in tokens.items():
        from_dataset = rec["source"] == "dataset"
        out[key] = special_ids(dataset, key, native if from_dataset else None,
                               rec["tokenizer"] if from_dataset else requests[key])
    return out
