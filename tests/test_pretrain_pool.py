"""AE-MT's pretraining pool (`pretrain.pool`, paper Section 4.1): CH-SIMS v2's unlabeled part placed by hand,
imported as the `unlabeled` split and pretrained on; the `train` and `both` pools; no silent fallback; the pool
in the fingerprint, the run config and the tables; and the w/o-MCD switch (`consistency_weight`)."""
from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from .conftest import pretrain_params
from .realdata_fixtures import make_mmsa, make_simsv2_unlabeled

from msarepro import config
from msarepro.data import load_dataset
from msarepro.data.registry import DATASETS
from msarepro.methods import method_config
from msarepro.methods.aemt import AEMT
from msarepro.pretrain.autoencoder import Autoencoders
from msarepro.pretrain.run import _inputs, _step_figures, run_pretraining
from msarepro.pretrain.stage import pretrain_fingerprint
from msarepro.report.tables import build_tables, latex_table, markdown_table, pool_notes

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path, *overrides):
    return pretrain_params(tmp_path / "data", 1, *overrides)


def test_presets_follow_the_paper():
    p = config.load(ROOT / "params.yaml")
    pools = {d: p.pretrain.resolve(d).pool for d in ("simsv2", "mosei", "mosi", "sims", "synth-sims", "synth-mosi")}
    assert pools == {"simsv2": "unlabeled", "mosei": "train", "mosi": "train", "sims": "train",
                     "synth-sims": "unlabeled", "synth-mosi": "train"}
    with pytest.raises(config.ConfigError, match=r"pretrain.presets.simsv2.pool: 'unlabelled'; expected one of "
                                                 r"unlabeled, train, both"):
        config.load(ROOT / "params.yaml", ["pretrain.presets.simsv2.pool=unlabelled"])


def test_simsv2_placed_by_hand_imports_both_parts_and_pretrains_on_the_unlabeled_one(tmp_path, monkeypatch,
                                                                                       capsys):
    from msarepro.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    raw = tmp_path / "data" / "raw" / "simsv2"
    raw.mkdir(parents=True)
    # the release's two pickles under the names its authors give them; the unlabeled part's sequences are
    # shorter than the labelled part's (padded on import, nothing cut)
    (raw / "ch-simsv2s.pkl").write_bytes(pickle.dumps(make_mmsa(sizes=(24, 8, 8), family="sims")))
    (raw / "ch-simsv2u.pkl").write_bytes(pickle.dumps(make_simsv2_unlabeled(n=30, lens=(12, 18, 16))))
    assert main(["data", "download", "simsv2", "--out", "data/simsv2"]) == 0
    ds = load_dataset(tmp_path / "data" / "simsv2", splits=("train", "valid", "test", "unlabeled"))
    m = ds.manifest
    assert m.splits == {"train": 24, "valid": 8, "test": 8, "unlabeled": 30}
    assert set(m.provenance["sources"]) == {"ch-simsv2s.pkl", "ch-simsv2u.pkl"}
    assert ds.splits["unlabeled"].arrays["audio"].shape == (30, 20, 5)  # padded to the labelled length 20
    assert ds.splits["unlabeled"].labels["M"].isna().all() and ds.splits["unlabeled"].labels["T"].isna().all()
    assert ds.splits["unlabeled"].labels["id"].tolist()[:2] == ["unsup$0", "unsup$1"]

    assert main(["pretrain", "--dataset", "simsv2", "--out", "pre", "-S", "pretrain.epochs=1",
                 "-S", "pretrain.batch_size=8", "-S", "pretrain.heldout=0.2"]) == 0
    res = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    assert res["pool"] == "unlabeled" and res["pool_splits"] == {"unlabeled": 30} and res["pool_size"] == 30
    assert (res["pool_train"], res["pool_heldout"]) == (24, 6)
    ck = torch.load(tmp_path / "pre" / "encoders.pt", weights_only=True)
    assert (ck["pool"], ck["pool_size"]) == ("unlabeled", 30)

    # the run config of an AE-MT run records the pool its encoders were pretrained on
    p = config.load(tmp_path / "params.yaml", [f"methods.aemt.pretrained={tmp_path / 'pre'}"])
    model = AEMT(replace(method_config(p, "aemt", "simsv2"), pretrained=str(tmp_path / "pre")), m)
    enc = model.on_train_start()["pretrained_encoders"]
    assert (enc["pool"], enc["pool_size"]) == ("unlabeled", 30)

    # without the unlabeled part, `unlabeled` is a one-line error naming the file to place
    (raw / "ch-simsv2u.pkl").unlink()
    (raw / ".ch-simsv2u.pkl.sha256.json").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["data", "download", "simsv2", "--out", "data/simsv2"]) == 0
    assert "unlabeled" not in json.loads((tmp_path / "data" / "simsv2" / "manifest.json").read_text())["splits"]
    with pytest.raises(config.ConfigError) as e:
        run_pretraining(config.load(tmp_path / "params.yaml"), "simsv2", 1, tmp_path / "pre2", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "'simsv2'" in msg and "ch-simsv2u.pkl" in msg
    assert str(Path("data/raw/simsv2/ch-simsv2u.pkl")) in msg and "pretrain.presets.simsv2.pool: train" in msg


def test_placement_message_names_the_unlabeled_part_as_optional(tmp_path, monkeypatch, capsys):
    from msarepro.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    assert main(["data", "download", "simsv2", "--out", "data/simsv2"]) == 2
    err = capsys.readouterr().err
    assert "file ch-simsv2s.pkl\n" in err and "file ch-simsv2u.pkl  (optional)" in err
    assert f"put at: {Path('data/raw/simsv2/ch-simsv2u.pkl')}" in err
    assert [f.split for f in DATASETS["simsv2"].extra["files"]] == ["", "unlabeled"]


def test_train_and_both_pools(small_data, tmp_path):
    src = small_data["synth-sims"]
    n = load_dataset(src, splits=("train", "unlabeled")).manifest.splits
    res = run_pretraining(_params(tmp_path, "pretrain.presets.synth-sims.pool=train"), str(src), 1,
                          tmp_path / "a", progress=False)
    assert res["pool"] == "train" and res["pool_splits"] == {"train": n["train"]}
    assert res["pool_size"] == n["train"] == res["pool_train"] + res["pool_heldout"]
    res = run_pretraining(_params(tmp_path, "pretrain.presets.synth-sims.pool=both"), str(src), 1,
                          tmp_path / "b", progress=False)
    assert res["pool_splits"] == {"unlabeled": n["unlabeled"], "train": n["train"]}
    assert res["pool_size"] == n["unlabeled"] + n["train"] == res["pool_train"] + res["pool_heldout"]


@pytest.mark.parametrize("pool", ["unlabeled", "both"])
def test_a_pool_needing_the_unlabeled_split_is_an_error_without_it(small_data, tmp_path, pool):
    p = _params(tmp_path, f"pretrain.presets.synth-mosi.pool={pool}")
    with pytest.raises(config.ConfigError, match=rf"^pretrain.pool: '{pool}', but dataset 'synth-mosi' .* has no "
                                                 r"unlabeled split; .* pretrain.presets.synth-mosi.pool: train$"):
        run_pretraining(p, str(small_data["synth-mosi"]), 1, tmp_path / "x", progress=False)
    assert not (tmp_path / "x" / "encoders.pt").exists()


def test_the_pool_enters_the_pretraining_fingerprint(tmp_path):
    a = pretrain_fingerprint(_params(tmp_path), "synth-sims")
    b = pretrain_fingerprint(_params(tmp_path, "pretrain.presets.synth-sims.pool=both"), "synth-sims")
    assert a["pretrain"]["pool"] == "unlabeled" and b["pretrain"]["pool"] == "both" and a != b


def test_consistency_weight_switch_changes_the_loss_and_the_gradients(small_data, params):
    """w/o MCD (Table 5): lambda_1 = 0 must change L_ae and its gradients (same weights, same batch)."""
    ds = load_dataset(small_data["synth-sims"], splits=("unlabeled",))
    from msarepro.data.loader import SplitTensors

    split = SplitTensors(ds.splits["unlabeled"], "regression", ["M"], ("text", "audio", "vision"))
    batch = split.batch(torch.arange(16))
    spec = AEMT.encoder_spec(method_config(params, "aemt", "synth-sims"))
    in_dims = {m: ds.manifest.modalities[m]["dim"] for m in ("text", "audio", "vision")}
    torch.manual_seed(0)
    model = Autoencoders(in_dims, spec, 1).eval()  # eval: no dropout, so both passes see the same function

    def grads(weight):
        model.zero_grad(set_to_none=True)
        gen = torch.Generator().manual_seed(3)  # the same tampering both times
        f = _step_figures(model, _inputs(batch, spec), 0.5, gen, weight)
        f["loss"].backward()
        return f, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    on, g_on = grads(0.4)
    off, g_off = grads(0.0)
    assert torch.equal(on["recon"], off["recon"]) and torch.equal(on["consistency"], off["consistency"])
    assert float(on["loss"].detach()) == pytest.approx(float((on["recon"] + 0.4 * on["consistency"]).detach()))
    assert float(off["loss"].detach()) == float(off["recon"].detach())
    cls_on = [g for n, g in g_on.items() if n.startswith("classifier.")]
    cls_off = [g for n, g in g_off.items() if n.startswith("classifier.")]
    assert any(g.abs().sum() > 0 for g in cls_on) and all(g.abs().sum() == 0 for g in cls_off)
    enc = [n for n in g_on if n.startswith("encoders.text.")]
    assert any(not torch.equal(g_on[n], g_off[n]) for n in enc)  # the encoders learn differently


def test_tables_footnote_the_pool_from_the_runs(tmp_path):
    summary = pd.DataFrame([{"method": m, "dataset": "synth-sims", "protocol": "valid-selected", "metric": k,
                             "n": 2, "mean": 0.5, "std": 0.01} for m in ("aemt", "mult")
                            for k in ("Mult_acc_2", "MAE")])
    paper = pd.DataFrame(columns=["paper", "table", "dataset", "method", "metric", "value"])
    inputs = pd.DataFrame([("aemt", "synth-sims", 1111, "unlabeled", 1500),
                           ("aemt", "synth-sims", 1112, "unlabeled", 1500)],
                          columns=["method", "dataset", "seed", "pretrain_pool", "pretrain_pool_size"])
    t = build_tables(summary, paper, ["mult", "aemt"], inputs)["synth-sims"]
    assert [r[0] for r in t["rows"]] == ["mult", "aemt †"]
    assert t["notes"] == ["† aemt: encoders pretrained on the `unlabeled` pool (1,500 clips)."]
    assert markdown_table(t).endswith("\n† aemt: encoders pretrained on the `unlabeled` pool (1,500 clips).\n")
    assert r"aemt $^\dagger$" in latex_table("synth-sims", t, "cap")
    # seeds that disagree are listed apart, not merged
    mixed = inputs.assign(pretrain_pool=["unlabeled", "train"], pretrain_pool_size=[1500, 900])
    assert pool_notes(mixed)[("synth-sims", "aemt")] == (
        "aemt: encoders pretrained on the `train` pool (900 clips) (seeds 1112) and the `unlabeled` pool "
        "(1,500 clips) (seeds 1111)")
    assert build_tables(summary, paper, ["mult", "aemt"])["synth-sims"]["notes"] == []


def test_the_footnote_comes_from_the_runs_configs_through_evaluate(tmp_path):
    from msarepro import evaluate
    from msarepro.report import write_reports

    from .test_evaluate import make_run

    y = [0.2, -0.4, 0.6, -0.8]
    for method in ("aemt", "mult"):
        for seed in (1, 2):
            d = make_run(tmp_path / "runs", method, "synth-sims", seed, "sims", y, [[0.1, -0.2, 0.3, 0.1]], 0)
            inputs = ({"pretrained_encoders": {"path": "p", "sha256": "0" * 64, "pool": "unlabeled",
                                               "pool_size": 1500 + seed}} if method == "aemt" else {})
            (d / "config.json").write_text(json.dumps({"model": method, "method_inputs": inputs}))
    evaluate.write_evaluation(tmp_path / "runs", tmp_path / "metrics", n_resamples=50)
    got = pd.read_csv(tmp_path / "metrics" / "run_inputs.csv")
    pooled = got[got.pretrain_pool.notna()].drop(columns="base_method")
    assert pooled.to_dict("records") == [
        {"method": "aemt", "dataset": "synth-sims", "seed": s, "pretrain_pool": "unlabeled",
         "pretrain_pool_size": 1500 + s} for s in (1, 2)]
    assert set(got[got.pretrain_pool.isna()]["method"]) == {"mult"}  # every run has a row; mult's pool is empty
    (tmp_path / "papers").mkdir()
    write_reports(tmp_path / "metrics", tmp_path / "papers", tmp_path / "reports", ["mult", "aemt"], {})
    md = (tmp_path / "reports" / "tables" / "synth-sims.md").read_text()
    assert "| aemt † |" in md and "| mult |" in md
    assert ("† aemt: encoders pretrained on the `unlabeled` pool (1,501 clips) (seeds 1) and the `unlabeled` "
            "pool (1,502 clips) (seeds 2).") in md
