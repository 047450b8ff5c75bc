"""The canonical dataset format: round trip, generators, and every bad-input error naming file and field."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from msarepro.data import DatasetError, load_dataset
from msarepro.data.format import Manifest, write_dataset
from msarepro.data.synth import generate


def _copy(src, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(src, dst)
    return dst


def test_generators_are_deterministic_and_valid(tmp_path):
    a = generate("synth-sims", tmp_path / "a", seed=3, scale=0.05)
    b = generate("synth-sims", tmp_path / "b", seed=3, scale=0.05)
    assert a.files == b.files  # same seed, same bytes
    ds = load_dataset(tmp_path / "a", splits=("train", "valid", "test", "unlabeled"))
    assert set(ds.splits) == {"train", "valid", "test", "unlabeled"}
    assert ds.manifest.unimodal_labels and ds.manifest.label_range == (-1.0, 1.0)
    tr = ds.splits["train"]
    assert (tr.labels["T"] != tr.labels["M"]).any()  # unimodal labels differ from M
    lens = tr.arrays["audio_lengths"]
    assert lens.min() < lens.max()  # variable true lengths
    assert np.all(tr.arrays["audio"][0, lens[0]:] == 0)  # right-padded


def test_synth_mosi_labels_on_grid_with_zeros(small_data):
    ds = load_dataset(small_data["synth-mosi"])
    y = pd.concat([s.labels["M"] for s in ds.splits.values()]).to_numpy()
    assert np.allclose(np.round(y * 5), y * 5) and y.min() >= -3 and y.max() <= 3
    ref = ds.manifest.provenance["reference"]
    assert ref["oracle"]["Corr"] > ref["text_oracle"]["Corr"] > ref["majority"]["Corr"]


def test_synth_mvsa_is_image_text(small_data):
    ds = load_dataset(small_data["synth-mvsa"])
    tr = ds.splits["train"]
    assert tr.arrays["image"].dtype == np.uint8 and tr.arrays["image"].shape[1:] == (3, 32, 32)
    assert set(tr.labels["M"].astype(int)) == {0, 1, 2}
    assert ds.manifest.provenance["reference"]["oracle"]["Accuracy"] > 0.85


def test_nonfinite_features_replaced_and_counted(tmp_path):
    n, L, D = 4, 3, 2
    arr = {"text": np.ones((n, L, D), np.float32), "text_lengths": np.full(n, L),
           "audio": np.ones((n, L, D), np.float32), "audio_lengths": np.full(n, L),
           "vision": np.ones((n, L, D), np.float32), "vision_lengths": np.full(n, L)}
    arr["audio"][0, 0, 0] = -np.inf
    arr["audio"][1, 1, 1] = np.nan
    splits = {s: {k: v.copy() for k, v in arr.items()} for s in ("train", "valid", "test")}
    labels = pd.DataFrame([{"split": s, "id": f"{s}{i}", "M": 0.5, "text": "x"} for s in splits for i in range(n)])
    m = Manifest(name="t", family="trimodal", task="regression", metric_family="mosi", label_range=(-3, 3),
                 modalities={k: {"dim": D, "max_len": L} for k in ("text", "audio", "vision")},
                 splits={s: n for s in splits})
    m = write_dataset(tmp_path / "t", m, splits, labels)
    assert m.nonfinite_replaced == {"audio": 6}
    ds = load_dataset(tmp_path / "t")
    assert ds.splits["train"].arrays["audio"][0, 0, 0] == 0


def _rewrite_split(d, split, **changes):
    from safetensors.numpy import load_file, save_file
    arrays = load_file(str(d / f"{split}.safetensors"))
    arrays.update(changes)
    save_file(arrays, str(d / f"{split}.safetensors"))


def test_hash_mismatch_names_file(small_data, tmp_path):
    d = _copy(small_data["synth-mosi"], tmp_path)
    with open(d / "labels.csv", "a") as f:
        f.write("\n")
    with pytest.raises(DatasetError, match=r"labels.csv: SHA-256 .* does not match"):
        load_dataset(d)


def test_wrong_shape_names_array(small_data, tmp_path):
    d = _copy(small_data["synth-mosi"], tmp_path)
    a = load_dataset(d).splits["valid"].arrays["audio"]
    _rewrite_split(d, "valid", audio=a[:, :, :-1].copy())
    with pytest.raises(DatasetError, match=r"valid.safetensors: array 'audio' has shape"):
        load_dataset(d, verify_hashes=False)


def test_nan_in_stored_features_is_refused(small_data, tmp_path):
    d = _copy(small_data["synth-mosi"], tmp_path)
    a = load_dataset(d).splits["test"].arrays["vision"].copy()
    a[0, 0, 0] = np.nan
    _rewrite_split(d, "test", vision=a)
    with pytest.raises(DatasetError, match=r"test.safetensors: array 'vision' holds 1 non-finite"):
        load_dataset(d, verify_hashes=False)


def test_label_out_of_range(small_data, tmp_path):
    d = _copy(small_data["synth-mosi"], tmp_path)
    df = pd.read_csv(d / "labels.csv")
    df.loc[0, "M"] = 3.6
    df.to_csv(d / "labels.csv", index=False)
    with pytest.raises(DatasetError, match=r"labels.csv: column 'M' in split 'train' has labels in .*outside"):
        load_dataset(d, verify_hashes=False)


def test_empty_split(small_data, tmp_path):
    d = _copy(small_data["synth-mosi"], tmp_path)
    man = json.loads((d / "manifest.json").read_text())
    man["splits"]["valid"] = 0
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DatasetError, match=r"valid.safetensors: split 'valid' is empty"):
        load_dataset(d, verify_hashes=False)


def test_missing_modality(small_data, tmp_path):
    d = _copy(small_data["synth-mosi"], tmp_path)
    man = json.loads((d / "manifest.json").read_text())
    del man["modalities"]["vision"]
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DatasetError, match=r"manifest.json: modality 'vision' missing"):
        load_dataset(d, verify_hashes=False)


def test_missing_directory_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="msarepro data synth"):
        load_dataset(tmp_path / "nothing")


def test_image_text_needs_raw_text_or_its_own_ids(small_data, tmp_path):
    d = _copy(small_data["synth-mvsa"], tmp_path)
    man = json.loads((d / "manifest.json").read_text())
    del man["modalities"]["text_ids"]
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DatasetError, match=r"manifest.json: an image_text dataset needs raw text .* or its own token "
                                           r"ids \(modality 'text_ids'\); it has neither"):
        load_dataset(d, verify_hashes=False)
    man["raw_text"] = True  # raw text instead: the ids array is then just an undeclared extra
    (d / "manifest.json").write_text(json.dumps(man))
    assert load_dataset(d, verify_hashes=False).manifest.raw_text


def test_raw_text_needs_the_text_column(small_data, tmp_path):
    d = _copy(small_data["synth-mvsa"], tmp_path)
    man = json.loads((d / "manifest.json").read_text())
    man["raw_text"] = True
    (d / "manifest.json").write_text(json.dumps(man))
    pd.read_csv(d / "labels.csv").drop(columns="text").to_csv(d / "labels.csv", index=False)
    with pytest.raises(DatasetError, match=r"labels.csv: missing column 'text' \(manifest says unimodal_labels=False, "
                                           r"raw_text=True\)"):
        load_dataset(d, verify_hashes=False)


def test_special_ids_are_validated_and_old_manifests_without_them_still_load(small_data, tmp_path):
    from msarepro.data.format import special_ids

    d = _copy(small_data["synth-mosi"], tmp_path)
    man = json.loads((d / "manifest.json").read_text())
    assert man["modalities"]["text_ids"]["special_ids"] == {"pad": 0, "cls": 1, "sep": 2, "unk": 3}
    for bad, msg in (({"pad": 0, "cls": 1, "sep": 2}, r"special_ids must map exactly \['pad', 'cls', 'sep', 'unk'\]"),
                     ({"pad": 0, "cls": 1, "sep": 2, "unk": 64}, r"special_ids.unk is 64; expected an id in \[0, "
                                                                  r"vocab_size=64\)"),
                     ({"pad": 0, "cls": "1", "sep": 2, "unk": 3}, r"special_ids.cls is '1'")):
        man["modalities"]["text_ids"]["special_ids"] = bad
        (d / "manifest.json").write_text(json.dumps(man))
        with pytest.raises(DatasetError, match=r"manifest.json: modalities\.text_ids\." + msg):
            load_dataset(d, verify_hashes=False)
    man["modalities"]["text_ids"]["special_ids"] = {"pad": 0, "cls": None, "sep": 2, "unk": 3}  # no such token: null
    (d / "manifest.json").write_text(json.dumps(man))
    assert load_dataset(d, verify_hashes=False).manifest.modalities["text_ids"]["special_ids"]["cls"] is None
    # a manifest written before the field existed loads; its tokenizer's known ids stand in
    del man["modalities"]["text_ids"]["special_ids"]
    (d / "manifest.json").write_text(json.dumps(man))
    rec = load_dataset(d, verify_hashes=False).manifest.modalities["text_ids"]
    assert "special_ids" not in rec and special_ids(rec) == {"pad": 0, "cls": 1, "sep": 2, "unk": 3}
    assert special_ids({"tokenizer": "bert-base-uncased", "vocab_sha256": None}) == {"pad": 0, "cls": 101,
                                                                                   "sep": 102, "unk": 100}
    assert special_ids({"tokenizer": "some/other-model"}) is None and special_ids(None) is None


def test_tokenizer_special_ids_read_a_tokenizer_and_leave_missing_roles_null():
    from msarepro.data.format import tokenizer_special_ids

    class ClipLike:  # CLIP's tokenizer has no [CLS] / [SEP]: its *_token_id are None
        pad_token_id, cls_token_id, sep_token_id, unk_token_id = 49407, None, None, 49407

    assert tokenizer_special_ids(ClipLike()) == {"pad": 49407, "cls": None, "sep": None, "unk": 49407}
