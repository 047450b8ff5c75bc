"""The special token ids ([PAD], [CLS], [SEP], [UNK]) of the token ids a model reads, for the perturbations that
replace dropped tokens by the unknown token (the first and last real tokens are kept by position, so of these
ids only the unknown one is needed; the others are kept for the record).

Where they come from, in this order:
    1. the token-id record: `special_ids` = {"pad", "cls", "sep", "unk"} under the dataset's
       modalities["text_ids"] (data/format.py: written by the importers and generators, or known for a manifest
       written before the field existed) and under a derived cache entry's record, both of which
       data.tokens.provide_tokens puts into the loaded manifest's modalities[key];
    2. the tokenizer itself, loaded by name: its unk, cls (else bos), sep (else eos) and pad ids;
    3. a Google BERT WordPiece vocabulary that cannot be loaded here: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102,
       the ids every such vocabulary shares (said on stderr);
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


def _id(v) -> int | None:
    return None if v is None else int(v)


def from_record(record: dict | None) -> SpecialIds | None:
    """SpecialIds from a token-id record's "special_ids" ({"pad", "cls", "sep", "unk"}, null where the tokenizer
    has no such token), or None when it has none or no unknown token."""
    ids = (record or {}).get("special_ids")
    if not ids or ids.get("unk") is None:
        return None
    try:
        return SpecialIds(pad=_id(ids.get("pad")), cls=_id(ids.get("cls")), sep=_id(ids.get("sep")),
                          unk=int(ids["unk"]))
    except (TypeError, ValueError):
        raise ConfigError(f"special_ids {ids!r}: expected integer ids (or null) for pad, cls, sep and unk") from None


def from_tokenizer(name: str) -> SpecialIds | None:
    """The ids of tokenizer `name` loaded by data.tokens.load_tokenizer, or None when it cannot be loaded or has
    no unknown token."""
    from ..data.tokens import DATASET_TOKENIZER, load_tokenizer

    if not name or name == DATASET_TOKENIZER:
        return None
    try:
        tok = load_tokenizer(name)
    except (ConfigError, ValueError):
        return None
    if tok.unk_token_id is None:
        return None
    cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    return SpecialIds(pad=_id(tok.pad_token_id), cls=_id(cls), sep=_id(sep), unk=int(tok.unk_token_id))


def is_bert_vocabulary(name: str) -> bool:
    return name in BERT_NAMES or bool(_BERT_NAME.match(name or ""))


def special_ids(dataset: str, key: str, record: dict | None, tokenizer: str) -> SpecialIds:
    """The special ids of batch key `key` (text_ids, clip_ids) of dataset `dataset`. record: the key's token-id
    record in the loaded manifest (after provide_tokens); tokenizer: the name of the tokenizer the ids belong to."""
    found = from_record(record) or from_tokenizer(tokenizer)
    if found is not None:
        return found
    if is_bert_vocabulary(tokenizer):
        print(f"msarepro: note: {dataset} {key}: no special token ids recorded and tokenizer {tokenizer!r} cannot "
              "be loaded here; using BERT WordPiece's [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102", file=sys.stderr)
        return BERT_FALLBACK
    raise ConfigError(f"dataset {dataset}: the unknown-token id of {key} (tokenizer {tokenizer!r}) is not known: "
                      "its record has no special_ids with an unk, the tokenizer cannot be loaded here and is not a "
                      "BERT vocabulary; add special_ids {\"pad\", \"cls\", \"sep\", \"unk\"} to modalities.text_ids "
                      "of the dataset's manifest.json, or make the tokenizer loadable (a local folder)")


def for_tokens(dataset: str, modalities: dict, requests: dict[str, str],
               tokens: dict[str, dict]) -> dict[str, SpecialIds]:
    """The special ids of every token-id key a model reads. modalities: the loaded manifest's modalities after
    data.tokens.provide_tokens (each key's record, with special_ids where known); requests: {key: tokenizer} of
    the method's `token_requests`; tokens: provide_tokens' records ({key: {"tokenizer", "source", ...}}).
    -> {key: SpecialIds}."""
    out = {}
    for key, rec in tokens.items():
        name = rec["tokenizer"] if rec["source"] == "dataset" else requests[key]
        out[key] = special_ids(dataset, key, modalities.get(key), name)
    return out
