"""INFIG's whole real-data path, offline: tiny image-text datasets placed by hand in each real layout (the original
MVSA-Single and MVSA-Multiple archives, HFM's repository, the TumEmo table, CLMLF's JSON splits) go through
`msarepro data download` / `data import-imagetext` and then `msarepro train --model infig` with tiny Hugging Face
folders built in the test (tests/tiny_hf.py: a DeBERTa-v3-style sentencepiece tokenizer and model, a CLIP
tokenizer, model and processor with unusual mean / std, a ResNet), for the full model and every Table 3 row
(w/o CLIP, w/o GAM, w/o HFAM, w/o GAM + HFAM) on every dataset. Each run must finish with metrics and record in
config.json the tokens it was given: text_ids from the DeBERTa folder's tokenizer, clip_ids from CLIP's.
A last test spies on what reaches the encoders: DeBERTa gets the DeBERTa tokenizer's ids of each row's raw text,
CLIP's text tower the CLIP tokenizer's ids, and CLIP's vision tower the stored pixels normalised with the CLIP
processor's own image_mean / image_std.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from .realdata_fixtures import (imagetext_rows, place_clmlf_layout, place_hfm, place_mvsa_release, place_tumemo,
                                write_clmlf_splits)
from .tiny_hf import CLIP_MEAN, CLIP_SIDE, CLIP_STD, build_all

ROOT = Path(__file__).resolve().parents[1]
PARAMS = str(ROOT / "params.yaml")
DOWNLOADED = ("mvsa-single", "mvsa-multiple", "hfm", "tumemo")  # `msarepro data download NAME`
DATASETS = (*DOWNLOADED, "clmlf")  # clmlf: CLMLF's layout through `data import-imagetext --layout clmlf`
TABLE3 = {  # INFIG's Table 3 rows as -S overrides of methods.infig
    "full": [],
    "wo_clip": ["use_clip=false"],
    "wo_gam": ["use_gam=false"],
    "wo_hfam": ["use_hfam=false"],
    "wo_gam_hfam": ["use_gam=false", "use_hfam=false"],
}
TINY = {"image_size": 32, "image_layers": 2, "hfam_layers": 2, "heads": 4, "fusion_layers": 1, "queue_size": 16,
        "batch_size": 8, "max_epochs": 1, "patience": 2}
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> dict[str, Path]:
    """The tiny DeBERTa-v3, CLIP and ResNet folders, built once per session."""
    return build_all(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="session")
def placed(tmp_path_factory) -> dict:
    """Every layout placed as a user would: the registered datasets' files in data/raw/<name>/ (the placement
    message's `put at:`), CLMLF's folder anywhere. -> {"data": data root, "clmlf_src", "clmlf_data", "rows"}."""
    from msarepro.data.registry import TUMEMO_CLASSES

    root = tmp_path_factory.mktemp("realdata")
    data, raw = root / "data", root / "data" / "raw"
    rows = {"mvsa-single": imagetext_rows(24, 3, seed=1, first_id=1),
            "mvsa-multiple": imagetext_rows(24, 3, seed=2, first_id=101),
            "hfm": imagetext_rows(24, 2, seed=3, first_id=10 ** 17),
            "tumemo": imagetext_rows(24, 7, seed=4, first_id=500),
            "clmlf": imagetext_rows(24, 3, seed=5, first_id=900)}
    place_mvsa_release(raw / "mvsa-single", "MVSA-Single.zip", rows["mvsa-single"])
    place_mvsa_release(raw / "mvsa-multiple", "MVSA-Multiple.zip", rows["mvsa-multiple"], annotators=3)
    write_clmlf_splits(raw / "mvsa-multiple", rows["mvsa-multiple"])  # the optional split files: CLMLF's split
    place_hfm(raw / "hfm", rows["hfm"])
    place_tumemo(raw / "tumemo", rows["tumemo"], TUMEMO_CLASSES)
    place_clmlf_layout(root / "CLMLF" / "MVSA-single", rows["clmlf"])
    return {"data": data, "clmlf_src": root / "CLMLF" / "MVSA-single", "clmlf_data": root / "clmlf-data",
            "rows": rows}


@pytest.fixture(scope="session")
def imported(placed) -> dict[str, Path]:
    """`msarepro data download NAME` for each registered layout and `msarepro data import-imagetext --layout
    clmlf` (images stored at CLIP's side, so the pixel test needs no resize) -> {dataset: directory}."""
    from msarepro.cli import main

    out = {}
    for name in DOWNLOADED:
        assert main(["data", "download", name, "--out", str(placed["data"] / name), "--params", PARAMS]) == 0, name
        out[name] = placed["data"] / name
    clmlf = placed["clmlf_data"] / "mvsa-single"
    assert main(["data", "import-imagetext", str(placed["clmlf_src"]), "--name", "mvsa-single", "--layout", "clmlf",
                 "--image-size", str(CLIP_SIDE), "--out", str(clmlf), "--params", PARAMS]) == 0
    out["clmlf"] = clmlf
    return out


@pytest.fixture(scope="session")
def vocab_hashes(tiny_hf) -> dict[str, str]:
    """msarepro.data.tokens.vocab_sha256 of the tiny DeBERTa and CLIP tokenizers."""
    from msarepro.data.tokens import load_tokenizer, vocab_sha256

    return {k: vocab_sha256(load_tokenizer(str(tiny_hf[k]))) for k in ("deberta", "clip")}


def _registered(dataset: str) -> str:
    return "mvsa-single" if dataset == "clmlf" else dataset


def _train_args(tiny_hf, data_root: Path, dataset: str, out: Path, variant: list[str], extra: dict | None = None):
    """`msarepro train --model infig` on the tiny folders; every setting also under the dataset's preset, whose
    values (HFM's batch 128 and 4 fusion layers, TumEmo's queue) would otherwise win."""
    settings = {"text_encoder": tiny_hf["deberta"], "image_encoder": tiny_hf["resnet"], "clip_model": tiny_hf["clip"],
                **TINY, **(extra or {})}
    sets = [f"data.root={data_root}"]
    for k, v in settings.items():
        sets += [f"methods.infig.{k}={v}", f"methods.infig.presets.{_registered(dataset)}.{k}={v}"]
    sets += [f"methods.infig.{kv}" for kv in variant]
    args = ["train", "--model", "infig", "--dataset", _registered(dataset), "--seed", "1", "--out", str(out),
            "--device", "cpu", "--no-progress", "--params", PARAMS]
    return args + [a for kv in sets for a in ("-S", kv)]


def _data_root(placed, dataset: str) -> Path:
    return placed["clmlf_data"] if dataset == "clmlf" else placed["data"]


def _check_run(out: Path, variant: list[str], tiny_hf, vocab_hashes) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and "Accuracy" in metrics["test"] and "Accuracy" in metrics["valid"]
    assert all(np.isfinite(v) for v in metrics["test"].values())
    flags = {k: f"{k}=false" not in variant for k in ("use_clip", "use_gam", "use_hfam")}
    config = json.loads((out / "config.json").read_text())
    assert {k: config["method"][k] for k in flags} == flags
    history = pd.read_csv(out / "history.csv")  # the row's loss terms, and only those, were trained
    assert ("train_global" in history) == flags["use_gam"] and ("train_fine" in history) == flags["use_hfam"]
    tokens = config["tokens"]
    text = tokens["text_ids"]
    assert text["vocab_sha256"] == vocab_hashes["deberta"] and text["source"] == "derived"
    assert Path(text["tokenizer"]).name == tiny_hf["deberta"].name
    uses_clip = flags["use_gam"] and flags["use_clip"]
    assert ("clip_ids" in tokens) == uses_clip, tokens
    if uses_clip:
        clip = tokens["clip_ids"]
        assert clip["vocab_sha256"] == vocab_hashes["clip"] and clip["source"] == "derived"
        assert Path(clip["tokenizer"]).name == tiny_hf["clip"].name


# ------------------------------------------------------------------------------------------- the tiny folders


def test_tiny_folders_load_offline_like_the_real_ones(tiny_hf):
    """Each folder loads through the Auto* classes with HF_HUB_OFFLINE=1 (conftest) as its real counterpart does:
    DeBERTa-v3's tokenizer from spm.model alone with v3's special ids, CLIP's byte-level BPE tokenizer, both
    models, and image processors whose mean / std are the unusual ones (pinned on a processed image)."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    deb = tiny_hf["deberta"]
    assert (deb / "spm.model").exists() and not (deb / "tokenizer.json").exists()  # as microsoft/deberta-v3-base
    tok = AutoTokenizer.from_pretrained(deb)
    assert type(tok).__name__.startswith("DebertaV2Tokenizer")
    assert [tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert tok.mask_token == "[MASK]" and tok.mask_token_id not in (0, 1, 2, 3)
    ids = tok("happy sunny day")["input_ids"]
    assert ids[0] == 1 and ids[-1] == 2 and 3 not in ids and len(ids) == 5  # [CLS] three words [SEP]
    model = AutoModel.from_pretrained(deb)
    c = model.config
    assert type(model).__name__ == "DebertaV2Model" and c.vocab_size == len(tok)
    assert c.relative_attention and c.position_buckets > 0 and list(c.pos_att_type) == ["p2c", "c2p"]
    assert c.share_att_key and c.norm_rel_ebd == "layer_norm" and not c.position_biased_input

    ctok = AutoTokenizer.from_pretrained(tiny_hf["clip"])
    assert type(ctok).__name__.startswith("CLIPTokenizer") and ctok.model_max_length == 77
    cids = ctok("Happy sunny day!")["input_ids"]
    assert ctok.convert_ids_to_tokens(cids) == ["<|startoftext|>", "happy</w>", "sunny</w>", "day</w>", "!</w>",
                                                "<|endoftext|>"]
    clip = AutoModel.from_pretrained(tiny_hf["clip"])
    assert type(clip).__name__ == "CLIPModel" and clip.config.text_config.vocab_size == len(ctok)
    assert clip.config.text_config.eos_token_id == ctok.eos_token_id
    assert clip.config.vision_config.image_size == CLIP_SIDE
    proc = AutoImageProcessor.from_pretrained(tiny_hf["clip"])
    img = np.random.default_rng(0).integers(0, 256, (CLIP_SIDE, CLIP_SIDE, 3), dtype=np.uint8)
    pv = proc(images=Image.fromarray(img), return_tensors="np")["pixel_values"][0]  # (3, S, S)
    expect = (img.transpose(2, 0, 1) / 255.0 - np.array(CLIP_MEAN)[:, None, None]) / np.array(CLIP_STD)[:, None, None]
    np.testing.assert_allclose(pv, expect, atol=1e-5)  # a same-size image: only the normalisation acts

    resnet = AutoModel.from_pretrained(tiny_hf["resnet"])
    assert type(resnet).__name__ == "ResNetModel"
    rproc = AutoImageProcessor.from_pretrained(tiny_hf["resnet"])
    assert tuple(rproc.image_mean) != (0.485, 0.456, 0.406) and tuple(rproc.image_std) != (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------------ the imports


@pytest.mark.parametrize("dataset", DATASETS)
def test_each_layout_imports_raw_text_labels_and_images(dataset, imported, placed):
    """What a placed layout becomes: every placed row (MVSA's annotations aggregate to the planted label) with its
    raw text verbatim in labels.csv's `text` column, its label, and its own image; the manifest says raw text."""
    from msarepro.data import load_dataset

    ds = load_dataset(imported[dataset])
    want = {r["id"]: r for r in placed["rows"][dataset]}
    labels = pd.concat([s.labels for s in ds.splits.values()])
    assert sorted(labels["id"].astype(str)) == sorted(want)
    for _, row in labels.iterrows():
        assert row["text"] == want[str(row["id"])]["text"] and int(row["M"]) == want[str(row["id"])]["label"]
    m = ds.manifest
    assert m.provenance["missing_images"] == 0 and m.family == "image_text"
    side = CLIP_SIDE if dataset == "clmlf" else 224
    for s in ds.splits.values():
        img = s.arrays["image"]
        assert img.shape[1:] == (3, side, side) and img.dtype == np.uint8
        assert len({im.tobytes() for im in img}) == len(img)  # each row its own picture
    if dataset == "mvsa-multiple":
        assert m.provenance["split"] == "CLMLF split files" and m.splits == {"train": 16, "valid": 4, "test": 4}
    assert m.raw_text is True  # the contract: text stored once as raw text, ids derived per tokenizer


# ---------------------------------------------------------------------------------- download -> import -> train

GRID = [(d, v) for d in DATASETS for v in TABLE3 if (d, v) != ("mvsa-single", "full")]  # that one: a real process


@pytest.mark.parametrize("dataset,variant", GRID, ids=[f"{d}-{v}" for d, v in GRID])
def test_infig_trains_on_every_layout_for_every_table3_row(dataset, variant, imported, placed, tiny_hf,
                                                           vocab_hashes, tmp_path):
    from msarepro.cli import main

    out = tmp_path / "run"
    assert main(_train_args(tiny_hf, _data_root(placed, dataset), dataset, out, TABLE3[variant])) == 0
    _check_run(out, TABLE3[variant], tiny_hf, vocab_hashes)


def test_placed_mvsa_single_archive_downloads_and_trains_in_a_real_process(imported, placed, tiny_hf, vocab_hashes,
                                                                           tmp_path):
    """The issue's "done when", through the installed command line: MVSA-Single's archive placed by hand, `msarepro
    data download mvsa-single` (the `imported` fixture), then `msarepro train --model infig --dataset mvsa-single`
    (the full model: CLIP, GAM, HFAM) with the tiny encoders."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MSAREPRO_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "msarepro.cli", *_train_args(tiny_hf, placed["data"], "mvsa-single", out, [])]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["best_epoch"] == 0
    _check_run(out, [], tiny_hf, vocab_hashes)


def test_tokenize_model_fills_exactly_what_training_asks_for(imported, tiny_hf, tmp_path, capsys):
    """`msarepro data tokenize NAME --model infig` (ahead of an offline job) caches DeBERTa's text_ids and CLIP's
    clip_ids as INFIG will ask for them; the training run that follows finds both entries and adds none."""
    import shutil

    from msarepro.cli import main

    root = tmp_path / "data"
    shutil.copytree(imported["hfm"], root / "hfm")
    train = _train_args(tiny_hf, root, "hfm", tmp_path / "run", [])
    sets = train[train.index("-S"):]
    assert main(["data", "tokenize", "hfm", "--model", "infig", "--params", PARAMS, *sets]) == 0
    out = capsys.readouterr().out
    assert f"hfm: text_ids token ids of {str(tiny_hf['deberta'])!r}" in out
    assert f"hfm: clip_ids token ids of {str(tiny_hf['clip'])!r}" in out
    entries = sorted(p.name for p in (root / ".tokens" / "hfm").iterdir())
    assert len(entries) == 2
    assert main(train) == 0
    assert sorted(p.name for p in (root / ".tokens" / "hfm").iterdir()) == entries
    capsys.readouterr()
    assert main(["data", "tokenize", "hfm", "--params", PARAMS, *sets]) == 2
    assert "give --model METHOD (its own requests) or --tokenizer NAME" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- what the encoders see


def _spy(monkeypatch, cls, seen: list) -> None:
    """Record every call's bound arguments (tensors copied) of cls.forward, then run it unchanged."""
    original = cls.forward
    sig = inspect.signature(original)

    def forward(self, *args, **kwargs):
        bound = sig.bind_partial(self, *args, **kwargs).arguments
        seen.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in bound.items() if k != "self"})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", forward)


def _real(ids: torch.Tensor, mask: torch.Tensor | None, eos: int) -> list[list[int]]:
    """Each row's real positions: where the mask is on (a prefix), else up to the first end-of-text token."""
    rows = []
    for b in range(ids.size(0)):
        if mask is not None:
            n = int(mask[b].sum())
            assert bool(mask[b, :n].all()) and not bool(mask[b, n:].any()), "the mask is not a prefix"
        else:
            n = int((ids[b] == eos).nonzero()[0]) + 1
        rows.append(ids[b, :n].tolist())
    return rows


def test_infig_sees_deberta_tokens_clip_tokens_and_clip_normalised_pixels(imported, placed, tiny_hf, tmp_path,
                                                                           monkeypatch):
    """The full model on CLMLF's layout (images stored at CLIP's 32 x 32, text_max_len 12 so one row is cut):
    every call of the DeBERTa model gets, per row, the tiny DeBERTa tokenizer's ids of a row's raw text ([CLS] ...
    [SEP], truncated to 12, then [PAD] = 0 with the mask off), and every row of the dataset reaches it; CLIP's text
    tower gets the CLIP tokenizer's ids (<|startoftext|> ... <|endoftext|>) of every training row; CLIP's vision
    tower gets (stored image / 255 - image_mean) / image_std with the processor's unusual mean / std (not OpenAI's)
    for every training row."""
    from transformers import AutoTokenizer, DebertaV2Model
    from transformers.models.clip.modeling_clip import CLIPTextEmbeddings, CLIPVisionEmbeddings

    from msarepro.cli import main
    from msarepro.data import load_dataset

    seen = {"deberta": [], "clip_text": [], "clip_vision": []}
    _spy(monkeypatch, DebertaV2Model, seen["deberta"])
    # CLIP's towers through their embedding layers, which every way of calling a tower goes through once
    _spy(monkeypatch, CLIPTextEmbeddings, seen["clip_text"])
    _spy(monkeypatch, CLIPVisionEmbeddings, seen["clip_vision"])
    max_len = 12
    out = tmp_path / "run"
    assert main(_train_args(tiny_hf, placed["clmlf_data"], "clmlf", out, [], {"text_max_len": max_len})) == 0

    ds = load_dataset(imported["clmlf"])
    texts = {s: ds.splits[s].labels["text"].tolist() for s in ("train", "valid", "test")}
    assert sorted(sum(texts.values(), [])) == sorted(r["text"] for r in placed["rows"]["clmlf"])

    # DeBERTa: the DeBERTa tokenizer's ids, truncated as configured, padded with [PAD].
    dtok = AutoTokenizer.from_pretrained(tiny_hf["deberta"])
    want = {s: {tuple(dtok(t, truncation=True, max_length=max_len)["input_ids"]) for t in ts} for s, ts in texts.items()}
    every = set().union(*want.values())
    assert len(every) == 24 and max(map(len, every)) == max_len  # distinct rows; one of them is cut
    assert all(ids[0] == 1 and ids[-1] == 2 for ids in every)  # [CLS] ... [SEP]
    got = set()
    assert seen["deberta"]
    for call in seen["deberta"]:
        ids, mask = call["input_ids"], call["attention_mask"]
        assert ids.size(1) <= max_len
        for b, real in enumerate(_real(ids, mask, eos=2)):
            assert tuple(real) in every, f"DeBERTa got ids that are no row's DeBERTa tokens: {real}"
            assert (ids[b, len(real):] == dtok.pad_token_id).all()
            got.add(tuple(real))
    assert got == every

    # CLIP's text tower: the CLIP tokenizer's ids of every training row.
    ctok = AutoTokenizer.from_pretrained(tiny_hf["clip"])
    clip_train = {tuple(ctok(t, truncation=True, max_length=77)["input_ids"]) for t in texts["train"]}
    assert all(ids[0] == ctok.bos_token_id and ids[-1] == ctok.eos_token_id for ids in clip_train)
    got = set()
    assert seen["clip_text"]
    for call in seen["clip_text"]:
        for real in _real(call["input_ids"], None, ctok.eos_token_id):  # real up to the first end-of-text
            assert tuple(real) in clip_train, f"CLIP's text tower got ids that are no row's CLIP tokens: {real}"
            got.add(tuple(real))
    assert got == clip_train

    # CLIP's vision tower: the stored pixels, normalised with the processor's own mean and std.
    stored = torch.from_numpy(ds.splits["train"].arrays["image"]).float() / 255.0  # (N, 3, 32, 32)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    expect = (stored - mean) / std
    openai = (stored - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    matched = set()
    assert seen["clip_vision"]
    for call in seen["clip_vision"]:
        pv = call["pixel_values"].float()
        assert pv.shape[1:] == (3, CLIP_SIDE, CLIP_SIDE)
        for b in range(pv.size(0)):
            err = (expect - pv[b]).abs().flatten(1).amax(1)  # (N,) against every training row
            r = int(err.argmin())
            assert float(err[r]) < 1e-4, f"CLIP's pixels match no training row's CLIP-normalised image ({err[r]:.3g})"
            assert float((openai[r] - pv[b]).abs().max()) > 0.5  # the test tells the processor's values from OpenAI's
            matched.add(r)
    assert matched == set(range(len(stored)))
