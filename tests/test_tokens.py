"""Token ids per tokenizer (data/tokens.py): raw text stored once, ids derived, cached and recorded; a dataset's
own ids recorded with their tokenizer; every request that cannot be met refused with one sentence naming both
tokenizers and the fix. The packaged MiniLM tokenizer (bert-base-uncased WordPiece, loads offline) is the real
tokenizer here."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from msarepro.config import ConfigError
from msarepro.data import load_dataset
from msarepro.data import tokens
from msarepro.data.format import Manifest, write_dataset
from msarepro.data.loader import to_tensors
from msarepro.data.tokens import (DATASET_TOKENIZER, TokenRequest, check_request, load_tokenizer, provide_tokens,
                                  tokenizer_for_encoder, vocab_sha256)

SENTENCE = "A happy dog, unbelievably!"
# bert-base-uncased WordPiece: [CLS] a happy dog , un ##bel ##ie ##va ... (cut at 10 with [SEP] kept)
SENTENCE_IDS = [101, 1037, 3407, 3899, 1010, 4895, 8671, 2666, 3567, 102]
MINILM_VOCAB_SHA256 = "891d07cd0f2e35ebf7e041a6924b28ac4898505fe4888e4700ad04b2ba7e4c8d"
TEXTS = {"train": [SENTENCE, "so sad today", "", "cats and dogs"], "valid": ["fine", "bad"], "test": ["good", "meh"]}


def _raw_text_set(root, texts=TEXTS, name="tiny-mvsa"):
    """A small image_text dataset with raw text only (as the image-text importers write it)."""
    arrays, rows = {}, []
    for split, tx in texts.items():
        arrays[split] = {"image": np.full((len(tx), 3, 4, 4), 7, np.uint8)}
        rows += [{"split": split, "id": f"{split}{i}", "M": i % 3, "text": t} for i, t in enumerate(tx)]
    m = Manifest(name=name, family="image_text", task="classification", metric_family="cls",
                 label_range=(0.0, 2.0), modalities={"image": {"shape": [3, 4, 4]}},
                 splits={s: len(t) for s, t in texts.items()}, num_classes=3, class_names=("p", "n", "g"),
                 raw_text=True)
    write_dataset(root, m, arrays, pd.DataFrame(rows))
    return root


class _Counting:
    """Wraps load_tokenizer: counts loads and calls on texts."""

    def __init__(self, monkeypatch):
        self.loads = self.calls = 0
        real = tokens.load_tokenizer
        outer = self

        def load(name):
            outer.loads += 1
            tok = real(name)

            class Tok:
                def __getattr__(self, a):
                    return getattr(tok, a)

                def __len__(self):
                    return len(tok)

                def __call__(self, *a, **k):
                    outer.calls += 1
                    return tok(*a, **k)
            return Tok()
        monkeypatch.setattr(tokens, "load_tokenizer", load)


def test_encoder_sources_map_to_their_tokenizers():
    for tiny in ("tiny-bert", "tiny-deberta", "tiny-clip", "features"):
        assert tokenizer_for_encoder(tiny) == DATASET_TOKENIZER == "dataset"
    assert tokenizer_for_encoder("packaged-minilm") == "packaged-minilm"
    assert tokenizer_for_encoder("microsoft/deberta-v3-base") == "microsoft/deberta-v3-base"
    assert tokenizer_for_encoder("/models/my-clip") == "/models/my-clip"


def test_packaged_tokenizer_ids_and_vocabulary_hash():
    tok = load_tokenizer("packaged-minilm")
    ids, lens = tokens.encode(tok, [SENTENCE, ""], 10)
    assert ids.dtype == np.int64 and lens.dtype == np.int64
    assert ids[0].tolist() == SENTENCE_IDS and lens.tolist() == [10, 2]
    assert ids[1].tolist() == [101, 102] + [0] * 8  # padding to max_len; an empty text still has length 2
    assert vocab_sha256(tok) == MINILM_VOCAB_SHA256 and len(tok) == 30522


def test_unloadable_tokenizer_names_itself_and_the_fix():
    with pytest.raises(ConfigError) as e:
        load_tokenizer("no-such-org/no-such-tokenizer")
    msg = str(e.value)
    assert "'no-such-org/no-such-tokenizer'" in msg and "msarepro data tokenize" in msg and "local folder" in msg
    assert "\n" not in msg


def test_derived_ids_are_cached_and_a_second_use_loads_no_tokenizer(tmp_path, monkeypatch):
    root = _raw_text_set(tmp_path / "ds")
    count = _Counting(monkeypatch)
    req = TokenRequest("text_ids", "packaged-minilm", 10)
    ds = load_dataset(root)
    rec = provide_tokens(ds, [req], tmp_path / "cache")
    assert count.loads == 1 and count.calls == 3  # one call per split
    assert rec == {"text_ids": {"tokenizer": "packaged-minilm", "vocab_sha256": MINILM_VOCAB_SHA256,
                                "vocab_size": 30522, "max_len": 10, "source": "derived"}}
    tr = ds.splits["train"].arrays
    assert tr["text_ids"].shape == (4, 10) and tr["text_ids"].dtype == np.int64
    assert tr["text_ids"][0].tolist() == SENTENCE_IDS and tr["text_ids_lengths"].tolist()[2] == 2
    assert ds.manifest.modalities["text_ids"] == {"vocab_size": 30522, "max_len": 10, "tokenizer": "packaged-minilm",
                                                  "vocab_sha256": MINILM_VOCAB_SHA256,
                                                  "special_ids": {"pad": 0, "cls": 101, "sep": 102, "unk": 100}}
    entries = list((tmp_path / "cache" / "tiny-mvsa").iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == [
        "test.safetensors", "tokens.json", "train.safetensors", "valid.safetensors"]
    meta = json.loads((entries[0] / "tokens.json").read_text())
    assert meta["labels_sha256"] == ds.manifest.files["labels.csv"] and set(meta["files"]) == {
        "train.safetensors", "valid.safetensors", "test.safetensors"}
    assert meta["special_ids"] == {"pad": 0, "cls": 101, "sep": 102, "unk": 100}  # the MiniLM's WordPiece (BERT's)

    ds2 = load_dataset(root)
    assert provide_tokens(ds2, [req], tmp_path / "cache") == rec
    assert count.loads == 1 and count.calls == 3  # cache hit: no tokenizer loaded, no text tokenised
    for s in ds.splits:
        np.testing.assert_array_equal(ds2.splits[s].arrays["text_ids"], ds.splits[s].arrays["text_ids"])


def test_a_changed_text_never_meets_a_stale_entry(tmp_path):
    req = TokenRequest("text_ids", "packaged-minilm", 10)
    ds = load_dataset(_raw_text_set(tmp_path / "ds"))
    provide_tokens(ds, [req], tmp_path / "cache")
    changed = {**TEXTS, "train": ["so happy today"] + TEXTS["train"][1:]}
    ds2 = load_dataset(_raw_text_set(tmp_path / "ds", changed))
    provide_tokens(ds2, [req], tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "tiny-mvsa").iterdir())) == 2
    assert ds2.splits["train"].arrays["text_ids"][0, :5].tolist() == [101, 2061, 3407, 2651, 102]
    assert ds.splits["train"].arrays["text_ids"][0].tolist() == SENTENCE_IDS


def test_a_concurrent_filler_that_loses_the_race_keeps_the_winner(tmp_path):
    ds = load_dataset(_raw_text_set(tmp_path / "ds"))
    req = TokenRequest("text_ids", "packaged-minilm", 10)
    provide_tokens(ds, [req], tmp_path / "cache")
    (entry,) = (tmp_path / "cache" / "tiny-mvsa").iterdir()
    before = {p.name: p.read_bytes() for p in entry.iterdir()}
    sha, texts = tokens._labels_texts(ds)
    tokens._fill(entry, ds, req, sha, texts)  # a second process finishing after the first: its rename fails
    assert {p.name: p.read_bytes() for p in entry.iterdir()} == before
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # its staging folder is gone


def test_native_ids_serve_tiny_encoders_and_clip_ids(small_data):
    ds = load_dataset(small_data["synth-mvsa"])
    rec = provide_tokens(ds, [TokenRequest("text_ids", DATASET_TOKENIZER), TokenRequest("clip_ids", "dataset")],
                         "/nonexistent-cache")
    native = {"tokenizer": "msarepro synth-mvsa vocabulary", "vocab_size": 64, "max_len": 16,
              "vocab_sha256": "66088a26a32060dd504134de509807705a19b931e7c2fd1d5449d41009591e59", "source": "dataset"}
    assert rec == {"text_ids": native, "clip_ids": native}
    tr = ds.splits["train"].arrays
    np.testing.assert_array_equal(tr["clip_ids"], tr["text_ids"])
    b = to_tensors(ds)["train"].batch(torch.arange(5))
    L = int(tr["text_ids_lengths"][:5].max())
    assert b["clip_ids"].shape == (5, L) and b["clip_ids_mask"].sum(1).tolist() == tr["text_ids_lengths"][:5].tolist()


def test_requests_that_cannot_be_met_are_refused_naming_both_tokenizers(small_data, tmp_path):
    mvsa = load_dataset(small_data["synth-mvsa"]).manifest
    problem = check_request(mvsa, TokenRequest("text_ids", "microsoft/deberta-v3-base"), "text_encoder")
    assert problem == ("dataset synth-mvsa carries ids of 'msarepro synth-mvsa vocabulary' and no raw text; "
                       "'microsoft/deberta-v3-base' (text_encoder) cannot be derived: set text_encoder to a tiny-* "
                       "encoder (it reads the dataset's own ids), or import a dataset with raw text")
    assert check_request(mvsa, TokenRequest("text_ids", DATASET_TOKENIZER), "text_encoder") is None
    assert check_request(mvsa, TokenRequest("text_ids", "msarepro synth-mvsa vocabulary"), "x") is None

    raw = load_dataset(_raw_text_set(tmp_path / "ds")).manifest
    assert check_request(raw, TokenRequest("clip_ids", "openai/clip-vit-base-patch32"), "clip_model") is None
    problem = check_request(raw, TokenRequest("text_ids", DATASET_TOKENIZER), "text_encoder")
    assert problem.startswith("dataset tiny-mvsa carries raw text only and no token ids of its own, so text_encoder "
                              "(a tiny-* encoder") and "packaged-minilm" in problem

    mosi_like = Manifest(name="my-mosi", family="trimodal", task="regression", metric_family="mosi",
                         label_range=(-3.0, 3.0), splits={"train": 1},
                         modalities={"text_ids": {"vocab_size": 30522, "max_len": 50, "tokenizer": "bert-base-uncased",
                                                  "vocab_sha256": None}})
    assert check_request(mosi_like, TokenRequest("text_ids", "bert-base-uncased"), "text_encoder") is None
    assert check_request(mosi_like, TokenRequest("text_ids", "packaged-minilm"), "text_encoder") == (
        "dataset my-mosi carries ids of 'bert-base-uncased' and no raw text; 'packaged-minilm' (text_encoder) cannot "
        "be derived: set text_encoder to a tiny-* encoder (it reads the dataset's own ids), to 'bert-base-uncased', "
        "or import a dataset with raw text")
    features_only = Manifest(name="feats", family="trimodal", task="regression", metric_family="mosi",
                             label_range=(-3.0, 3.0), splits={"train": 1}, modalities={})
    assert check_request(features_only, TokenRequest("text_ids", "bert-base-uncased"), "text_encoder") == (
        "dataset feats carries neither token ids nor raw text, so 'bert-base-uncased' (text_encoder) has no text to "
        "read: set text_encoder to features (the dataset's text features), or import the dataset with its raw text")
    with pytest.raises(ConfigError, match="synth-mvsa vocabulary.*microsoft/deberta-v3-base"):
        provide_tokens(load_dataset(small_data["synth-mvsa"]),
                       [TokenRequest("text_ids", "microsoft/deberta-v3-base")], tmp_path / "cache")


def _native_set(root, ids, vocab_sha):
    """A trimodal set carrying ids that claim to be packaged-minilm's, with the given recorded vocabulary hash."""
    arrays = {s: {"text": np.zeros((2, 4, 3), np.float32), "text_lengths": np.full(2, 3),
                  "audio": np.zeros((2, 4, 3), np.float32), "audio_lengths": np.full(2, 4),
                  "vision": np.zeros((2, 4, 3), np.float32), "vision_lengths": np.full(2, 4),
                  "text_ids": ids, "text_ids_lengths": np.full(2, 3)} for s in ("train", "valid", "test")}
    rows = pd.DataFrame([{"split": s, "id": f"{s}{i}", "M": 0.0, "text": "x"} for s in arrays for i in range(2)])
    m = Manifest(name="odd", family="trimodal", task="regression", metric_family="mosi", label_range=(-3.0, 3.0),
                 modalities={**{k: {"dim": 3, "max_len": 4} for k in ("text", "audio", "vision")},
                             "text_ids": {"vocab_size": 30522, "max_len": 4, "tokenizer": "packaged-minilm",
                                          "vocab_sha256": vocab_sha}},
                 splits={s: 2 for s in arrays})
    write_dataset(root, m, arrays, rows)
    return root


def test_native_ids_of_another_vocabulary_are_refused(tmp_path):
    """Ids that claim packaged-minilm but were made with another vocabulary (hash differs, or ids beyond it)."""
    ids = np.array([[101, 2000, 102, 0]] * 2, np.int64)
    _native_set(tmp_path / "odd", ids, "0" * 64)
    with pytest.raises(ConfigError) as e:
        provide_tokens(load_dataset(tmp_path / "odd"), [TokenRequest("text_ids", "packaged-minilm")], tmp_path / "c")
    assert str(e.value) == (
        "dataset odd carries ids of 'packaged-minilm' (vocabulary sha256 000000000000), but tokenizer "
        "'packaged-minilm' (text_ids) loads a different vocabulary (sha256 891d07cd0f2e): use the tokenizer the ids "
        "were made with, or import the dataset with raw text so that ids are derived")
    # no hash recorded (MMSA's pickles): the ids are checked against the vocabulary's size, the hash then recorded
    ds = load_dataset(_native_set(tmp_path / "ok", ids, None))
    rec = provide_tokens(ds, [TokenRequest("text_ids", "packaged-minilm")], tmp_path / "c")
    assert rec["text_ids"]["vocab_sha256"] == MINILM_VOCAB_SHA256 and rec["text_ids"]["source"] == "dataset"
    with pytest.raises(ConfigError, match=r"carries ids of 'packaged-minilm' up to 40000, but tokenizer "
                                          r"'packaged-minilm' \(text_ids\) has only 30522 tokens"):
        provide_tokens(load_dataset(_native_set(tmp_path / "big", ids + 38000, None)),
                       [TokenRequest("text_ids", "packaged-minilm")], tmp_path / "c")


def test_a_local_tokenizer_folder_is_recorded_by_name_and_its_vocabulary(tmp_path):
    tok = load_tokenizer("packaged-minilm")
    tok.save_pretrained(tmp_path / "my-tok")
    req = TokenRequest("text_ids", str(tmp_path / "my-tok"), 10)
    ds = load_dataset(_raw_text_set(tmp_path / "ds"))
    rec = provide_tokens(ds, [req], tmp_path / "cache")["text_ids"]
    assert rec["tokenizer"] == "my-tok" and rec["vocab_sha256"] == MINILM_VOCAB_SHA256  # no absolute path recorded
    tok.add_tokens(["unbelievably"])  # the folder's tokenizer changes: its ids must not come from the old entry
    tok.save_pretrained(tmp_path / "my-tok")
    ds = load_dataset(tmp_path / "ds")
    rec2 = provide_tokens(ds, [req], tmp_path / "cache")["text_ids"]
    assert len(list((tmp_path / "cache" / "tiny-mvsa").iterdir())) == 2
    assert rec2["vocab_size"] == 30523 and rec2["vocab_sha256"] != MINILM_VOCAB_SHA256
    assert ds.splits["train"].arrays["text_ids"][0, :6].tolist() == [101, 1037, 3407, 3899, 1010, 30522]


def test_cli_tokenize_fills_the_cache_and_prints_the_record(tmp_path, capsys):
    from msarepro.cli import main

    _raw_text_set(tmp_path / "tiny-mvsa")
    args = ["data", "tokenize", "tiny-mvsa", "--tokenizer", "packaged-minilm", "--max-len", "12",
            "-S", f"data.root={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    head, body = out.split("\n", 1)
    assert head.startswith("tiny-mvsa: token ids of 'packaged-minilm': " + str(tmp_path / ".tokens" / "tiny-mvsa"))
    assert json.loads(body) == {"tokenizer": "packaged-minilm", "vocab_sha256": MINILM_VOCAB_SHA256,
                                "vocab_size": 30522, "max_len": 12, "source": "derived"}
    (entry,) = (tmp_path / ".tokens" / "tiny-mvsa").iterdir()
    assert entry.name.startswith("packaged-minilm-") and "-len12-text" in entry.name
    assert main(["data", "tokenize", "tiny-mvsa", "--tokenizer", "dataset", "-S", f"data.root={tmp_path}"]) == 2
    assert capsys.readouterr().err.startswith("msarepro: error: dataset tiny-mvsa carries raw text only and no token "
                                              "ids of its own, so --tokenizer (a tiny-* encoder")
    ds = load_dataset(tmp_path / "tiny-mvsa")  # training's request meets the entry the command filled
    provide_tokens(ds, [TokenRequest("text_ids", "packaged-minilm", 12)], tmp_path / ".tokens")
    assert len(list((tmp_path / ".tokens" / "tiny-mvsa").iterdir())) == 1
    # the whole sentence fits in 12: ... ##va ##bly ! [SEP]
    assert ds.splits["train"].arrays["text_ids"][0].tolist() == SENTENCE_IDS[:-1] + [6321, 999, 102]


def test_two_processes_filling_the_same_entry_at_once(tmp_path):
    import os
    import subprocess
    import sys

    _raw_text_set(tmp_path / "ds")
    code = ("import sys, json; from msarepro.data import load_dataset; "
            "from msarepro.data.tokens import TokenRequest, provide_tokens; "
            f"ds = load_dataset({str(tmp_path / 'ds')!r}); "
            f"provide_tokens(ds, [TokenRequest('text_ids', 'packaged-minilm', 10)], {str(tmp_path / 'cache')!r}); "
            "print(json.dumps({s: v.arrays['text_ids'].tolist() for s, v in ds.splits.items()}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-500:] for o in outs]
    a, b = (json.loads(o[0]) for o in outs)
    assert a == b and a["train"][0] == SENTENCE_IDS
    (entry,) = (tmp_path / "cache" / "tiny-mvsa").iterdir()  # one complete entry, no staging folder left
    assert (entry / "tokens.json").is_file()


def test_a_cache_entry_from_before_special_ids_gets_its_tokenizers_known_ids(tmp_path):
    req = TokenRequest("text_ids", "packaged-minilm", 10)
    provide_tokens(load_dataset(_raw_text_set(tmp_path / "ds")), [req], tmp_path / "cache")
    (entry,) = (tmp_path / "cache" / "tiny-mvsa").iterdir()
    meta = json.loads((entry / "tokens.json").read_text())
    del meta["special_ids"]  # as an entry written before the field existed
    (entry / "tokens.json").write_text(json.dumps(meta))
    ds = load_dataset(_raw_text_set(tmp_path / "ds"))
    provide_tokens(ds, [req], tmp_path / "cache")
    assert ds.manifest.modalities["text_ids"]["special_ids"] == {"pad": 0, "cls": 101, "sep": 102, "unk": 100}
