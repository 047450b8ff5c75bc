"""Issue 18: test-time perturbations (robustness/perturb.py) and the evaluation of saved checkpoints under them
(robustness_eval/evaluate.py, `msarepro robustness`)."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from msarepro.config import ConfigError
from msarepro.robustness import perturb as P
from msarepro.robustness_eval.evaluate import COLUMNS, evaluate_run, load_run, parse_rates, plan
from msarepro.robustness.perturb import SpecialIds
from msarepro.robustness.special import BERT_FALLBACK, for_tokens, special_ids

from .conftest import fast_params

SPECIAL = {"text_ids": SpecialIds(pad=0, cls=1, sep=2, unk=3)}
SFTTR_TWO_STAGES = {"methods.sfttr.presets.synth-mosi.text_encoder": "tiny-bert", "methods.sfttr.pretrain_epochs": 1,
                    "methods.sfttr.presets.synth-mosi.max_epochs": 3, "methods.sfttr.presets.synth-mosi.patience": 10,
                    "methods.sfttr.select_metric": "Corr"}  # Corr picks a fusion-stage epoch on the small data


def make_batch(n: int = 24, seed: int = 0, lt: int = 9, la: int = 9, lv: int = 7) -> dict[str, torch.Tensor]:
    """A hand-made trimodal batch in the loader's layout: rows 0..n-1, true lengths >= 3, padding of ids 0 and
    of features a sentinel 7.0 (so that a change to padding shows)."""
    g = torch.Generator().manual_seed(seed)
    out = {"index": torch.arange(n), "y": torch.randn(n, generator=g)}
    for key, L, D in (("text", lt, 4), ("audio", la, 3), ("vision", lv, 5)):
        lens = torch.randint(3, L + 1, (n,), generator=g)
        mask = torch.arange(L)[None, :] < lens[:, None]
        x = torch.randn(n, L, D, generator=g) + 0.5
        out[key] = torch.where(mask[..., None], x, torch.full_like(x, 7.0))
        out[f"{key}_mask"] = mask
        if key == "text":
            ids = torch.randint(4, 60, (n, L), generator=g)
            ids[:, 0] = 1
            ids[torch.arange(n), lens - 1] = 2
            out["text_ids"] = torch.where(mask, ids, torch.zeros_like(ids))
            out["text_ids_mask"] = mask.clone()
    return out


def rows(batch: dict, idx: torch.Tensor) -> dict:
    """The rows idx of a batch, cut to their longest true length, as the loader would batch them."""
    out = {}
    for k, v in batch.items():
        v = v[idx]
        out[k] = v
    for k in [k for k in batch if k.endswith("_mask")]:
        L = int(out[k].sum(1).max())
        for name in (k[:-5], k):
            out[name] = out[name][:, :L]
    return out


def dropped_rows(x: torch.Tensor, before: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) True where a real feature vector became zero."""
    return mask & (x == 0).all(-1) & ~(before == 0).all(-1)


# ---- random drop ------------------------------------------------------------------------------------------------

def test_random_drop_keeps_cls_last_token_and_padding_and_drops_to_unk_or_zero():
    b = make_batch()
    keep = {k: v.clone() for k, v in b.items()}
    out = P.random_drop(b, 0.6, special=SPECIAL, seed=1111)
    assert all(torch.equal(b[k], keep[k]) for k in b)  # the input batch is untouched
    ids, mask = out["text_ids"], b["text_ids_mask"]
    lens = mask.sum(1)
    assert (ids[:, 0] == 1).all() and (ids[torch.arange(len(ids)), lens - 1] == 2).all()
    assert torch.equal(ids[~mask], b["text_ids"][~mask])  # padding untouched
    changed = ids != b["text_ids"]
    assert changed.any() and (ids[changed] == 3).all()  # a dropped token is [UNK]
    inner = mask.sum() - 2 * len(ids)
    assert 0.45 < changed.sum() / inner < 0.75
    for k in ("text", "audio", "vision"):
        m = b[f"{k}_mask"]
        gone = dropped_rows(out[k], b[k], m)
        assert 0.45 < gone.sum() / m.sum() < 0.75
        assert torch.equal(out[k][~gone], b[k][~gone])  # kept positions and padding exactly as they were
        assert torch.equal(out[f"{k}_mask"], m)


def test_rate_zero_is_the_identity_and_rate_one_drops_every_real_position():
    b = make_batch()
    for rate in (0.0, torch.zeros(len(b["y"]))):
        out = P.random_drop(b, rate, special=SPECIAL, seed=1111)
        assert all(torch.equal(out[k], b[k]) for k in b)
    out = P.random_drop(b, 1.0, special=SPECIAL, seed=1111)
    for k in ("text", "audio", "vision"):
        assert (out[k][b[f"{k}_mask"]] == 0).all()
    assert (P.protect_ends(b["text_ids_mask"], b["text_ids_mask"]) == (out["text_ids"] == 3)).all()


def test_a_per_sample_rate_tensor_drops_each_sample_at_its_own_rate():
    b = make_batch(8)
    rate = torch.tensor([0.0, 1.0] * 4)
    out = P.random_drop(b, rate, special=SPECIAL, seed=1111)
    for k in ("text", "audio", "vision"):
        assert torch.equal(out[k][0::2], b[k][0::2])
        assert (out[k][1::2][b[f"{k}_mask"][1::2]] == 0).all()
    # training draws (no seed): from the generators, one per modality, the same semantics
    gens = {m: torch.Generator().manual_seed(5) for m in P.TRIMODAL}
    out = P.random_drop(b, rate, special=SPECIAL, generators=gens)
    assert torch.equal(out["audio"][0::2], b["audio"][0::2]) and (out["audio"][1::2][b["audio_mask"][1::2]] == 0).all()


def test_evaluation_masks_do_not_depend_on_batch_size_or_order():
    b = make_batch(30)
    whole = P.random_drop(b, 0.4, special=SPECIAL, seed=1111)
    order = torch.randperm(30, generator=torch.Generator().manual_seed(3))
    for size in (1, 4, 7):
        for s in range(0, 30, size):
            idx = order[s:s + size]
            part = P.random_drop(rows(b, idx), 0.4, special=SPECIAL, seed=1111)
            ref = rows(whole, idx)
            for k in ("text", "text_ids", "audio", "vision"):
                assert torch.equal(part[k], ref[k]), (size, k)


def test_modalities_and_seeds_get_their_own_masks_and_rates_nest():
    b = make_batch(40, lt=9, la=9)
    b["audio"] = b["text"][..., :3].clone()  # same real positions, same values: only the masks can differ
    b["audio_mask"] = b["text_mask"].clone()
    out = P.random_drop(b, 0.5, special=SPECIAL, seed=1111)
    gone = {k: dropped_rows(out[k], b[k], b[f"{k}_mask"]) for k in ("text", "audio")}
    assert not torch.equal(gone["text"], gone["audio"])
    ids_gone = out["text_ids"] != b["text_ids"]  # text as ids and as features: one modality, one stream
    assert torch.equal(ids_gone, P.protect_ends(b["text_mask"], gone["text"]))
    again = P.random_drop(b, 0.5, special=SPECIAL, seed=1111)
    other = P.random_drop(b, 0.5, special=SPECIAL, seed=7)
    assert torch.equal(again["audio"], out["audio"]) and not torch.equal(other["audio"], out["audio"])
    mild = dropped_rows(P.random_drop(b, 0.2, special=SPECIAL, seed=1111)["audio"], b["audio"], b["audio_mask"])
    assert mild.any() and (gone["audio"] | ~mild).all()  # drops at 0.2 are among those at 0.5


def test_dropping_ids_without_their_special_ids_is_refused():
    with pytest.raises(ValueError, match="special ids"):
        P.random_drop(make_batch(), 0.3, seed=1111)


# ---- the other families ------------------------------------------------------------------------------------------

def test_remove_zeroes_features_and_turns_ids_to_unk_but_cls_and_sep():
    b = make_batch()
    out = P.remove(b, ("text", "vision"), special=SPECIAL)
    for k in ("text", "vision"):
        assert (out[k][b[f"{k}_mask"]] == 0).all() and torch.equal(out[k][~b[f"{k}_mask"]], b[k][~b[f"{k}_mask"]])
    assert torch.equal(out["audio"], b["audio"])
    lens = b["text_ids_mask"].sum(1)
    assert (out["text_ids"][:, 0] == 1).all() and (out["text_ids"][torch.arange(len(lens)), lens - 1] == 2).all()
    assert int((out["text_ids"] == 3).sum()) == int((lens - 2).sum())
    img = {"index": torch.arange(2), "image": torch.rand(2, 3, 20, 20)}
    assert (P.remove(img, ("image",))["image"] == 0).all()


@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0])
def test_noise_has_the_requested_snr_on_real_positions(snr):
    b = make_batch(60, la=40)
    out = P.gaussian_noise(b, snr, ("audio",), seed=1111)
    x, y, m = b["audio"], out["audio"], b["audio_mask"]
    assert torch.equal(y[~m], x[~m]) and torch.equal(out["text"], b["text"])
    noise = P.signal_power(y - x, m)
    measured = 10 * torch.log10(P.signal_power(x, m).mean() / noise.mean())
    assert abs(float(measured) - snr) < 0.3
    again = P.gaussian_noise(P.random_drop(b, 0.0, special=SPECIAL, seed=1), snr, ("audio",), seed=1111)
    assert torch.equal(again["audio"], y)
    part = P.gaussian_noise(rows(b, torch.tensor([5, 2])), snr, ("audio",), seed=1111)
    assert torch.equal(part["audio"], rows(out, torch.tensor([5, 2]))["audio"])  # per sample, not per batch
    assert torch.equal(P.gaussian_noise(b, math.inf, seed=1111)["audio"], x)


def test_shift_moves_audio_and_vision_within_true_lengths():
    b = make_batch(6, la=8)
    b["audio"] = torch.arange(1, 49, dtype=torch.float32).reshape(6, 8, 1).expand(6, 8, 3).clone()
    for k in (2, -3):
        out = P.shift(b, k)
        assert torch.equal(out["text"], b["text"]) and torch.equal(out["text_ids"], b["text_ids"])
        for s in range(6):
            n = int(b["audio_mask"][s].sum())
            for t in range(8):
                inside = 0 <= t - k < n
                want = b["audio"][s, t] if t >= n else (b["audio"][s, t - k] if inside else 0 * b["audio"][s, t])
                assert torch.equal(out["audio"][s, t], want), (k, s, t)
        assert not torch.equal(out["vision"], b["vision"])
    assert all(torch.equal(P.shift(b, 0)[k], b[k]) for k in b)


def test_patch_mask_zeroes_whole_16_pixel_patches_per_sample():
    g = torch.Generator().manual_seed(0)
    b = {"index": torch.arange(6), "image": torch.rand(6, 3, 40, 36, generator=g) + 0.1}
    assert torch.equal(P.patch_mask(b, 0.0, seed=1111)["image"], b["image"])
    assert (P.patch_mask(b, 1.0, seed=1111)["image"] == 0).all()
    out = P.patch_mask(b, 0.5, seed=1111)["image"]
    zero = (out == 0).all(1)  # (B, H, W)
    for i in range(0, 40, 16):
        for j in range(0, 36, 16):
            block = zero[:, i:i + 16, j:j + 16]
            assert (block.all((1, 2)) | ~block.any((1, 2))).all()  # a patch is zeroed whole or not at all
    assert 0.2 < zero.float().mean() < 0.8
    part = P.patch_mask({"index": b["index"][3:], "image": b["image"][3:]}, 0.5, seed=1111)["image"]
    assert torch.equal(part, out[3:])


def test_token_drop_touches_token_ids_only():
    b = {"index": torch.arange(8), "image": torch.rand(8, 3, 16, 16), **{k: v[:8] for k, v in make_batch().items()
                                                                          if k.startswith("text_ids")}}
    out = P.token_drop(b, 0.7, special=SPECIAL, seed=1111)
    assert torch.equal(out["image"], b["image"]) and not torch.equal(out["text_ids"], b["text_ids"])


def test_parse_and_plan():
    assert P.parse("random_drop@0.3", "trimodal") == P.Perturbation("random_drop", 0.3, P.TRIMODAL)
    assert P.parse("remove@VT", "trimodal").modalities == ("text", "vision")
    assert P.parse("noise@10", "trimodal", ["audio"]).modalities == ("audio",)
    assert P.parse("shift@3", "trimodal").label == "shift@3"
    assert P.parse("noise@inf", "trimodal").identity and not P.parse("noise@30", "trimodal").identity
    for bad in ("drop@0.3", "random_drop", "random_drop@1.5", "remove@X", "shift@1.5", "patch_mask@0.1"):
        with pytest.raises(ValueError):
            P.parse(bad, "trimodal")
    assert len(plan("trimodal")) == 10 + 6 + 4 + 4
    assert len(plan("image_text")) == 10 + 10 + 2
    assert [p.label for p in plan("trimodal", ["remove"], modalities=["text", "audio"])] == \
        ["remove@T", "remove@A", "remove@TA"]
    assert plan("trimodal", ["random_drop", "shift"], rates=(0.5,), modalities=["audio"]) == [
        P.Perturbation("random_drop", 0.5, ("audio",))] + [P.Perturbation("shift", k, ("audio",)) for k in (1, 2, 4, 8)]
    assert plan("trimodal", ["shift", "token_drop"], modalities=["text"]) == []  # nothing of theirs chosen
    assert parse_rates("0:0.9:0.1") == tuple(i / 10 for i in range(10)) and parse_rates("0,0.5") == (0.0, 0.5)
    with pytest.raises(ConfigError):
        parse_rates("0.5:0.1:0.1")


def test_special_ids_sources():
    from msarepro.data.format import special_ids as recorded

    rec = {"tokenizer": "msarepro synth-mosi vocabulary", "vocab_sha256": "0" * 64}
    rec["special_ids"] = recorded(rec)  # what provide_tokens puts into the loaded manifest
    assert special_ids("d", "text_ids", rec, rec["tokenizer"]) == SpecialIds(0, 1, 2, 3)
    clip_like = {"tokenizer": "x", "special_ids": {"pad": 9, "cls": None, "sep": None, "unk": 9}}
    assert special_ids("d", "clip_ids", clip_like, "x") == SpecialIds(9, None, None, 9)
    mmsa = {"tokenizer": "bert-base-cased", "vocab_sha256": None}  # no record, not loadable offline
    assert special_ids("d", "text_ids", mmsa, "bert-base-cased") == BERT_FALLBACK
    assert special_ids("d", "text_ids", None, "packaged-minilm") == SpecialIds(0, 101, 102, 100)  # loaded
    with pytest.raises(ConfigError, match="special_ids"):
        special_ids("d", "text_ids", {"tokenizer": "mine", "special_ids": {"pad": 0, "cls": 1, "sep": 2,
                                                                          "unk": None}}, "mine")
    # a run's keys: each key's record in the loaded manifest, else the tokenizer the method asked for
    tokens = {"text_ids": {"tokenizer": rec["tokenizer"], "source": "dataset"},
              "clip_ids": {"tokenizer": "packaged-minilm", "source": "derived"}}
    assert for_tokens("d", {"text_ids": rec, "clip_ids": {"tokenizer": "packaged-minilm"}},
                      {"text_ids": "dataset", "clip_ids": "packaged-minilm"}, tokens) == {
        "text_ids": SpecialIds(0, 1, 2, 3), "clip_ids": SpecialIds(0, 101, 102, 100)}


# ---- evaluating saved runs -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(small_data, tmp_path_factory):
    """Tiny finished runs: text_only on synth-mosi and synth-mvsa, SFTTR in two stages (its fusion stage caches
    the frozen text side per clip) with its best epoch in the fusion stage."""
    from msarepro.train import RunSpec, run

    root = tmp_path_factory.mktemp("robust_runs")
    out = {}
    for name, model, ds, params in (("text_only", "text_only", "synth-mosi", fast_params(2)),
                                    ("text_only_mvsa", "text_only", "synth-mvsa", fast_params(1)),
                                    ("sfttr", "sfttr", "synth-mosi", fast_params(3, **SFTTR_TWO_STAGES))):
        run(params, RunSpec(model, str(small_data[ds]), 1111, root / name, progress=False))
        out[name] = root / name
    assert json.loads((out["sfttr"] / "metrics.json").read_text())["best_epoch"] >= 1
    return out


IDENTITIES = ["random_drop@0", "noise@inf", "shift@0"]


@pytest.mark.parametrize("name", ["text_only", "sfttr", "text_only_mvsa"])
def test_no_change_reproduces_the_runs_test_metrics_bit_for_bit(runs, name):
    loaded = load_run(runs[name])
    ids = IDENTITIES if loaded.family == "trimodal" else ["token_drop@0", "patch_mask@0"]
    found = evaluate_run(loaded, [P.parse(s, loaded.family) for s in ids], progress=False)
    test = json.loads((runs[name] / "metrics.json").read_text())["test"]
    by = {}
    for r in found:
        by.setdefault(r["perturbation"], {})[r["metric"]] = r["value"]
    assert set(by) == {s.partition("@")[0] for s in ids}
    assert all(v == test for v in by.values())
    if name == "text_only_mvsa":  # the embedded vocabulary's ids, from the manifest's record
        assert loaded.special == {"text_ids": SpecialIds(0, 1, 2, 3)}


def test_perturbed_inputs_never_meet_clean_cached_values(runs, monkeypatch):
    """SFTTR's fusion stage reads its frozen text side through Method.cached: after a clean pass, a pass with the
    text dropped must give what the model gives with the cache off (it would give the clean values again if the
    cache were reused)."""
    from msarepro.methods.base import Method

    loaded = load_run(runs["sfttr"])
    assert loaded.model.stage == "fusion"
    ps = [P.parse("random_drop@0", "trimodal"), P.parse("random_drop@0.6", "trimodal", ["text"])]
    on = [r["value"] for r in evaluate_run(loaded, ps, progress=False) if r["metric"] == "MAE"]
    monkeypatch.setattr(Method, "frozen_cache", False)
    off = [r["value"] for r in evaluate_run(loaded, ps, progress=False) if r["metric"] == "MAE"]
    assert on == off and on[0] != on[1]


def test_cli_writes_the_long_csv(runs, tmp_path, capsys):
    from msarepro.cli import main

    out = tmp_path / "robust.csv"
    assert main(["robustness", str(runs["text_only"]), str(runs["text_only_mvsa"]), "--rates", "0,0.5",
                 "--perturbations", "random_drop,token_drop,remove,noise@10", "--out", str(out), "--no-progress"]) == 0
    t = pd.read_csv(out)
    assert tuple(t.columns) == COLUMNS
    got = set(zip(t["dataset"], t["perturbation"], t["modalities"], t["severity"]))
    assert got == {("synth-mosi", "random_drop", "TAV", 0.0), ("synth-mosi", "random_drop", "TAV", 0.5),
                   ("synth-mosi", "noise", "TAV", 10.0), ("synth-mvsa", "token_drop", "T", 0.0),
                   ("synth-mvsa", "token_drop", "T", 0.5), ("synth-mvsa", "remove", "T", 1.0),
                   ("synth-mvsa", "remove", "I", 1.0)} | {
        ("synth-mosi", "remove", s, 1.0) for s in ("T", "A", "V", "TA", "TV", "AV")}
    rows_of = t.set_index(["dataset", "perturbation", "modalities", "metric"])["value"]
    assert rows_of["synth-mosi", "remove", "A", "MAE"] == rows_of["synth-mosi", "random_drop", "TAV", "MAE"].iloc[0]
    assert rows_of["synth-mosi", "remove", "TA", "MAE"] == rows_of["synth-mosi", "remove", "T", "MAE"]  # no audio
    from msarepro.report.robustness import read_robustness_csv
    assert len(read_robustness_csv(out)) == len(t)  # the tables' reader takes it as it is
    assert main(["robustness", str(runs["text_only"]), str(runs["text_only_mvsa"]), "--rates", "0,0.5",
                 "--perturbations", "random_drop,token_drop,remove,noise@10", "--out-dir", str(tmp_path / "per"),
                 "--no-progress"]) == 0
    per = {f.name: pd.read_csv(f) for f in sorted((tmp_path / "per").iterdir())}
    assert list(per) == ["synth-mosi.csv", "synth-mvsa.csv"]
    assert pd.concat(per.values(), ignore_index=True).equals(t)
    clean = t[(t["dataset"] == "synth-mosi") & (t["severity"] == 0)]
    assert dict(zip(clean["metric"], clean["value"])) == \
        json.loads((runs["text_only"] / "metrics.json").read_text())["test"]  # exact through the CSV too
    assert (t["method"] == "text_only").all() and (t["seed"] == 1111).all()
    assert main(["robustness", str(runs["text_only"]), str(tmp_path / "none"), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "none") in err and "no best.pt" in err and not (tmp_path / "x.csv").exists()
