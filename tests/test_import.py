"""MMSA pickle import (restricted unpickler, every key, -inf policy, lengths, unimodal labels) and image-text
imports (CLMLF JSON, original MVSA release with label aggregation, HFM, table with a seeded 8:1:1 split)."""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .realdata_fixtures import make_mmsa

from msarepro.data import load_dataset
from msarepro.data.format import DatasetError
from msarepro.data.mmsa import UnsafePickleError, import_mmsa, safe_load


def _dump(obj, path: Path, protocol=4) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_round_trips_numpy_containers(tmp_path, protocol):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, 2.5, "x", (np.int64(3), None)],
           "c": np.array(["s", "t"], dtype=object), "d": np.float64(0.5), "e": {1, 2}, "f": b"raw"}
    got = safe_load(_dump(obj, tmp_path / "ok.pkl", protocol))
    assert np.array_equal(got["a"], obj["a"]) and got["a"].dtype == np.float32
    assert got["b"] == obj["b"] and list(got["c"]) == ["s", "t"] and got["d"] == 0.5
    assert got["e"] == {1, 2} and got["f"] == b"raw"


def test_numpy1_style_pickle_loads(tmp_path):
    # MMSA's files were written by numpy 1.x, whose globals live in numpy.core.multiarray; protocol 0 names
    # globals in text lines, so the numpy 2 name can be rewritten to the numpy 1 one.
    raw = pickle.dumps({"x": np.arange(4, dtype=np.float32)}, protocol=0).replace(b"numpy._core", b"numpy.core")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw
    (tmp_path / "np1.pkl").write_bytes(raw)
    assert np.array_equal(safe_load(tmp_path / "np1.pkl")["x"], np.arange(4, dtype=np.float32))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("payload", ["system", "eval", "nested"])
def test_pickle_that_executes_code_is_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = {"system": _RunsCode(marker), "eval": _Evals(),
            "nested": {"train": {"text": np.zeros(2), "audio": [_RunsCode(marker)]}}}[payload]
    p = _dump(evil, tmp_path / "evil.pkl")
    with pytest.raises(UnsafePickleError, match="refused to load") as e:
        safe_load(p)
    assert str(p) in str(e.value)
    assert not marker.exists(), "the payload ran"
    with pytest.raises(UnsafePickleError):
        import_mmsa(p, tmp_path / "out", name="evil")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_truncated_pickle_is_an_error_naming_the_file(tmp_path):
    p = _dump(make_mmsa(), tmp_path / "full.pkl")
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cut.pkl"):
        import_mmsa(cut, tmp_path / "out", name="cut")


def test_mmsa_mosi_import_keeps_every_key(tmp_path):
    src = make_mmsa(family="mosi")
    m = import_mmsa(_dump(src, tmp_path / "unaligned_50.pkl"), tmp_path / "mini-mosi", name="mini-mosi")
    assert (m.family, m.metric_family, m.label_range, m.unimodal_labels) == ("trimodal", "mosi", (-3.0, 3.0), False)
    assert m.nonfinite_replaced == {"audio": 9}  # 1 + 2 -inf values planted in each of the 3 splits
    ds = load_dataset(tmp_path / "mini-mosi")
    tr, d = ds.splits["train"], src["train"]
    assert tr.arrays["audio"][0, 0, 0] == 0.0 and np.isfinite(tr.arrays["audio"]).all()
    np.testing.assert_array_equal(tr.arrays["audio_lengths"], d["audio_lengths"])
    np.testing.assert_array_equal(tr.arrays["vision_lengths"], d["vision_lengths"])
    np.testing.assert_array_equal(tr.arrays["text_ids"], d["text_bert"][:, 0].astype(np.int64))
    np.testing.assert_array_equal(tr.arrays["text_ids_lengths"], d["text_bert"][:, 1].sum(1))
    np.testing.assert_array_equal(tr.arrays["text_lengths"], d["text_bert"][:, 1].sum(1))
    np.testing.assert_array_equal(tr.arrays["text"], d["text"])
    assert m.modalities["text_ids"] == {"vocab_size": 30522, "max_len": 12, "tokenizer": "bert-base-uncased",
                                        "vocab_sha256": None,
                                        "special_ids": {"pad": 0, "cls": 101, "sep": 102, "unk": 100}}
    assert m.raw_text  # every split carries raw_text: any tokenizer's ids can be derived from labels.csv
    np.testing.assert_allclose(tr.labels["M"], d["regression_labels"], atol=1e-6)
    assert tr.labels["id"].tolist() == list(d["id"]) and tr.labels["text"].tolist() == list(d["raw_text"])
    assert tr.labels["annotation"].tolist() == d["annotations"]
    np.testing.assert_allclose(tr.labels["classification_label"], d["classification_labels"])


def test_mmsa_lengths_fall_back_to_last_nonzero_frame(tmp_path):
    src = make_mmsa(neg_inf=False)
    for s in src.values():
        del s["audio_lengths"]
    import_mmsa(_dump(src, tmp_path / "p.pkl"), tmp_path / "d", name="d")
    tr = load_dataset(tmp_path / "d").splits["train"]
    a = src["train"]["audio"]
    expect = [max([t + 1 for t in range(a.shape[1]) if np.abs(a[i, t]).sum() > 0] or [1]) for i in range(len(a))]
    np.testing.assert_array_equal(tr.arrays["audio_lengths"], expect)


def test_sims_import_has_unimodal_labels_and_trains_by_name(tmp_path):
    from .conftest import fast_params
    from msarepro.train import RunSpec, run

    src = make_mmsa(family="sims", seed=3)
    root = tmp_path / "data"
    m = import_mmsa(_dump(src, tmp_path / "unaligned_39.pkl"), root / "mini-sims", name="mini-sims")
    assert m.metric_family == "sims" and m.unimodal_labels and m.label_range == (-1.0, 1.0)
    tr = load_dataset(root / "mini-sims").splits["train"]
    for c in "TAV":
        np.testing.assert_allclose(tr.labels[c], src["train"][f"regression_labels_{c}"], atol=1e-6)
    params = fast_params(2, **{"data.root": str(root)})
    for model in ("lf_dnn", "mult"):
        r = run(params, RunSpec(model=model, dataset="mini-sims", seed=1, out=tmp_path / f"run-{model}",
                                progress=False))
        assert set(r["test"]) >= {"Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"}
        assert np.isfinite(r["test"]["MAE"])


def test_sims_family_without_unimodal_labels_is_an_error(tmp_path):
    p = _dump(make_mmsa(family="mosi"), tmp_path / "p.pkl")
    with pytest.raises(DatasetError, match="regression_labels_T"):
        import_mmsa(p, tmp_path / "d", name="d", family="sims")


def test_cli_import_mmsa(tmp_path, capsys):
    from msarepro.cli import main

    p = _dump(make_mmsa(family="sims"), tmp_path / "x.pkl")
    assert main(["data", "import-mmsa", str(p), "--name", "x", "--out", str(tmp_path / "x")]) == 0
    assert "non-finite values set to 0" in capsys.readouterr().out
    assert load_dataset(tmp_path / "x").manifest.unimodal_labels


def test_cli_import_mmsa_with_unlabeled_part(tmp_path):
    """--unlabeled adds the unlabeled clips as the `unlabeled` split (without it there is none)."""
    from msarepro.cli import main
    from .realdata_fixtures import make_simsv2_unlabeled

    p = _dump(make_mmsa(family="sims"), tmp_path / "x.pkl")
    u = _dump(make_simsv2_unlabeled(n=20), tmp_path / "u.pkl")
    assert main(["data", "import-mmsa", str(p), "--name", "x", "--out", str(tmp_path / "x"), "--unlabeled", str(u)]) == 0
    assert main(["data", "import-mmsa", str(p), "--name", "y", "--out", str(tmp_path / "y")]) == 0
    with_u, without = load_dataset(tmp_path / "x").manifest, load_dataset(tmp_path / "y").manifest
    assert with_u.splits["unlabeled"] == 20 and "unlabeled" not in without.splits


# ------------------------------------------------------------------------------------------------ image-text


def _image(path: Path, colour) -> None:
    from PIL import Image
    Image.new("RGB", (40, 30), colour).save(path)


def test_mvsa_label_aggregation():
    from msarepro.data.imagetext import aggregate_pair, majority

    assert aggregate_pair("positive", "positive") == "positive"
    assert aggregate_pair("neutral", "negative") == "negative"
    assert aggregate_pair("positive", "neutral") == "positive"
    assert aggregate_pair("positive", "negative") is None
    assert majority(["neutral", "positive", "positive"]) == "positive"
    assert majority(["neutral", "positive", "negative"]) is None
    assert majority(["negative"]) == "negative"


def _mvsa_multiple(tmp_path: Path, n=30, annotators=3, archive_name="MVSA-Multiple.zip") -> Path:
    root = tmp_path / "MVSA"
    (root / "data").mkdir(parents=True)
    lines = ["ID\t" + "\t".join(["text,image"] * annotators)]
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        labs = rng.choice(["positive", "neutral", "negative"], (annotators, 2), p=[0.5, 0.3, 0.2])
        lines.append(f"{i}\t" + "\t".join(f"{t},{v}" for t, v in labs))
        (root / "data" / f"{i}.txt").write_text(f"tweet number {i}")
        _image(root / "data" / f"{i}.jpg", (i * 8, 100, 200))
    (root / "labelResultAll.txt").write_text("\n".join(lines) + "\n")
    archive = tmp_path / archive_name
    with zipfile.ZipFile(archive, "w") as z:
        for p in root.rglob("*"):
            z.write(p, p.relative_to(tmp_path))
    return archive


def test_mvsa_release_import_aggregates_and_splits(tmp_path):
    from msarepro.data.imagetext import import_mvsa, read_mvsa_labels

    archive = _mvsa_multiple(tmp_path)
    m = import_mvsa(archive, tmp_path / "mvsa", name="mvsa-multiple", multiple=True, seed=5, image_size=16)
    expect = read_mvsa_labels(tmp_path / "MVSA-Multiple.zip.d" / "MVSA" / "labelResultAll.txt")
    n = len(expect)
    assert sum(m.splits.values()) == n == 30 - m.provenance["dropped_by_aggregation"]
    assert m.splits == {"train": n - 2 * round(n * 0.1), "valid": round(n * 0.1), "test": round(n * 0.1)}
    assert m.provenance["split"] == "random 8:1:1, seed 5" and m.provenance["missing_images"] == 0
    ds = load_dataset(tmp_path / "mvsa")
    rows = pd.concat([s.labels for s in ds.splits.values()])
    got = dict(zip(rows["id"], rows["M"]))
    assert got == dict(zip(expect["id"], expect["label"]))
    img = ds.splits["train"].arrays["image"]
    assert img.shape[1:] == (3, 16, 16) and img.dtype == np.uint8 and img.max() > 0
    _raw_text_only(ds, {i: f"tweet number {i}" for i in got})


def test_placed_mvsa_single_archive_is_imported_by_the_download_stage(tmp_path, monkeypatch):
    from msarepro.prepare import download

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = tmp_path / "data" / "raw" / "mvsa-single"
    raw.mkdir(parents=True)
    _mvsa_multiple(raw, n=30, annotators=1, archive_name="MVSA-Single.zip")
    out = tmp_path / "data" / "mvsa-single"
    assert download("mvsa-single", out, image_size=8).startswith("imported mvsa-single")
    m = load_dataset(out).manifest
    assert m.num_classes == 3 and m.provenance["annotators"] == 1 and m.provenance["split"].startswith("random")
    assert set(m.provenance["sources"]) == {"MVSA-Single.zip"} and len(m.provenance["sources"]["MVSA-Single.zip"]) == 64
    assert m.raw_text and "text_ids" not in m.modalities  # the download route stores raw text; ids come per method
    assert "up to date" in download("mvsa-single", out, image_size=8)


def _raw_text_only(ds, texts: dict) -> None:
    """An imported image-text set stores images and the raw text (labels.csv), no token ids."""
    assert ds.manifest.raw_text and set(ds.manifest.modalities) == {"image"}
    for s in ds.splits.values():
        assert set(s.arrays) == {"image"}
        assert dict(zip(s.labels["id"], s.labels["text"])) == {i: texts[i] for i in s.labels["id"]}


def test_clmlf_layout_import_and_batch_image(tmp_path):
    from msarepro.data.imagetext import import_clmlf
    from msarepro.data.loader import to_tensors
    import torch

    (tmp_path / "dataset_image").mkdir()
    k = 0
    for split, n in (("train", 6), ("dev", 3), ("test", 3)):
        rows = []
        for _ in range(n):
            rows.append({"id": str(k), "text": f"so happy {k}", "emotion_label": k % 3})
            if k != 4:  # one image missing: stored as zeros and counted
                _image(tmp_path / "dataset_image" / f"{k}.jpg", (200, 10, 10))
            k += 1
        (tmp_path / f"{split}.json").write_text(json.dumps(rows))
    m = import_clmlf(tmp_path, tmp_path / "out", "mvsa-single", image_size=8)
    assert m.splits == {"train": 6, "valid": 3, "test": 3} and m.provenance["missing_images"] == 1
    ds = load_dataset(tmp_path / "out")
    b = to_tensors(ds)["train"].batch(torch.arange(6))
    assert b["image"].shape == (6, 3, 8, 8) and b["image"].dtype == torch.float32
    assert 0.0 <= float(b["image"].min()) and float(b["image"].max()) <= 1.0
    assert float(b["image"][4].abs().sum()) == 0.0
    assert "text_ids" not in b
    _raw_text_only(ds, {str(k): f"so happy {k}" for k in range(12)})
    from msarepro.data.tokens import TokenRequest, provide_tokens  # ids come from the text, per tokenizer
    provide_tokens(ds, [TokenRequest("text_ids", "packaged-minilm", 8)], tmp_path / "cache")
    assert ds.splits["train"].arrays["text_ids"][1].tolist() == [101, 2061, 3407, 1015, 102, 0, 0, 0]  # so happy 1


def test_hfm_lines_are_read_without_eval(tmp_path):
    from msarepro.data.imagetext import import_hfm, read_hfm_lines

    (tmp_path / "text").mkdir()
    (tmp_path / "dataset_image").mkdir()
    k = 0
    for f, n in (("train.txt", 5), ("valid2.txt", 2), ("test2.txt", 2)):
        lines = []
        for _ in range(n):
            extra = ", 0" if f != "train.txt" else ""
            lines.append(repr([str(10 ** 17 + k), f"what a great day {k}"]).rstrip("]") + extra + f", {k % 2}]")
            _image(tmp_path / "dataset_image" / f"{10 ** 17 + k}.jpg", (0, 0, 255))
            k += 1
        (tmp_path / "text" / f).write_text("\n".join(lines) + "\n")
    m = import_hfm(tmp_path, tmp_path / "out", image_size=8)
    assert m.splits == {"train": 5, "valid": 2, "test": 2} and m.f1_average == "macro" and m.num_classes == 2
    _raw_text_only(load_dataset(tmp_path / "out"), {str(10 ** 17 + k): f"what a great day {k}" for k in range(9)})
    (tmp_path / "bad.txt").write_text("__import__('os').system('true')\n")
    with pytest.raises(DatasetError, match="not a Python literal"):
        read_hfm_lines(tmp_path / "bad.txt", "train")


def test_table_import_random_split_is_seeded(tmp_path):
    from msarepro.data.imagetext import import_table
    from msarepro.data.registry import TUMEMO_CLASSES

    (tmp_path / "images").mkdir()
    rows = [{"id": f"p{i}", "text": f"post {i}", "label": TUMEMO_CLASSES[i % 7]} for i in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "tumemo.csv", index=False)
    for r in rows:
        _image(tmp_path / "images" / f"{r['id']}.jpg", (10, 200, 10))
    m1 = import_table(tmp_path / "tumemo.csv", tmp_path / "images", tmp_path / "a", "tumemo", TUMEMO_CLASSES,
                      seed=7, image_size=8)
    m2 = import_table(tmp_path / "tumemo.csv", tmp_path / "images", tmp_path / "b", "tumemo", TUMEMO_CLASSES,
                      seed=7, image_size=8)
    assert m1.splits == {"train": 32, "valid": 4, "test": 4} and m1.provenance["split"] == "random 8:1:1, seed 7"
    assert m1.files == m2.files  # same seed, same bytes
    labels = load_dataset(tmp_path / "a").splits["train"].labels
    assert set(labels["M"]) <= set(range(7))
    _raw_text_only(load_dataset(tmp_path / "a"), {r["id"]: r["text"] for r in rows})


def test_cli_mvsa_with_clmlf_split_files(tmp_path, capsys):
    from msarepro.cli import main
    from msarepro.data.imagetext import read_mvsa_labels

    archive = _mvsa_multiple(tmp_path, n=30)
    labels = read_mvsa_labels(tmp_path / "MVSA" / "labelResultAll.txt")
    ids = labels["id"].tolist()
    split_dir = tmp_path / "clmlf"
    split_dir.mkdir()
    for name, chunk in (("train", ids[:-6]), ("dev", ids[-6:-3]), ("test", ids[-3:])):
        rows = [{"id": i, "text": "x", "emotion_label": int(labels.set_index("id").loc[i, "label"])} for i in chunk]
        rows[0]["emotion_label"] = (rows[0]["emotion_label"] + 1) % 3  # one disagreement with the aggregation
        (split_dir / f"{name}.json").write_text(json.dumps(rows))
    out = tmp_path / "mvsa-multiple"
    assert main(["data", "import-imagetext", str(archive), "--name", "mvsa-multiple", "--layout", "mvsa",
                 "--multiple", "--splits", str(split_dir), "--image-size", "8", "--out", str(out)]) == 0
    m = load_dataset(out).manifest
    assert m.splits == {"train": len(ids) - 6, "valid": 3, "test": 3}
    assert m.provenance["split"] == "CLMLF split files" and m.provenance["clmlf_label_disagreements"] == 3
