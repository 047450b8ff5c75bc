"""Evaluation across seeds and protocols, on hand-built run directories (no training)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from msarepro import evaluate, metrics


def make_run(root, method, dataset, seed, family, y_true, epoch_outputs, best_epoch):
    """A run directory as train.py writes it: metrics.json, predictions.csv, history.csv, epochs/*.npz."""
    d = root / method / dataset / str(seed)
    (d / "epochs").mkdir(parents=True)
    y_true = np.asarray(y_true, dtype=np.float64)
    rows = []
    for e, out in enumerate(epoch_outputs):
        np.savez(d / "epochs" / f"epoch_{e:03d}.npz", valid=np.asarray(out), test=np.asarray(out))
        rows.append({"epoch": e, "train_loss": 1.0 / (e + 1), "valid_loss": 0.5 + e, "test_loss": 0.6 + e})
    pd.DataFrame(rows).to_csv(d / "history.csv", index=False)
    best = np.asarray(epoch_outputs[best_epoch])
    pred = best.argmax(-1) if family == "cls" else best
    ids = [f"s{i}" for i in range(len(y_true))]
    pd.DataFrame({"split": "test", "id": ids, "y_true": y_true, "y_pred": pred}).to_csv(d / "predictions.csv", index=False)
    test = metrics.compute(family, pred, y_true)
    (d / "metrics.json").write_text(json.dumps({"model": method, "dataset": dataset, "seed": seed,
                                                "metric_family": family, "f1_average": "weighted", "test": test}))
    return d


def test_summarise_mean_sample_std_and_ci():
    s = evaluate.summarise([1.0, 2.0, 3.0], n_resamples=2000)
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0)  # ddof=1: sqrt(((1)^2 + 0 + 1^2) / 2)
    assert 1.0 <= s["ci_low"] <= 2.0 <= s["ci_high"] <= 3.0
    assert evaluate.bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7))
    one = evaluate.summarise([0.4])
    assert one["std"] == 0.0 and one["ci_low"] == one["ci_high"] == 0.4


@pytest.mark.parametrize("family,metric_names", [("mosi", evaluate.PAIRED_METRICS["mosi"] + ["Mult_acc_5", "Mult_acc_3"]),
                                                 ("sims", evaluate.PAIRED_METRICS["sims"]), ("cls", ["Accuracy"])])
def test_per_sample_scores_average_to_the_metric(family, metric_names):
    rng = np.random.default_rng(0)
    if family == "cls":
        true, pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    else:
        lim = 3.0 if family == "mosi" else 1.0
        true = np.round(rng.uniform(-lim, lim, 50) * 5) / 5
        true[:5] = 0.0  # Non0 leaves these out
        pred = rng.normal(0, lim, 50)
    ref = metrics.compute(family, pred, true)
    for k in metric_names:
        s, w = evaluate.per_sample_scores(family, k, pred, true)
        assert (w * s).sum() / w.sum() == pytest.approx(ref[k]), k


def test_paired_test_hand_case():
    true = np.array([1.0, 1.0, -1.0, -1.0])
    a = {1: {"metric_family": "mosi", "test_ids": np.array(list("abcd")), "test_true": true,
             "test_pred": np.array([0.5, 0.5, -0.5, -0.5]), "dir": "a"}}
    b = {1: {**a[1], "test_pred": np.array([0.5, -0.5, 0.5, -0.5]), "dir": "b"}}
    r = evaluate.paired_test(a, b, "Has0_acc_2", n_resamples=2000)
    assert r["diff"] == pytest.approx(0.5)  # A right on 4 of 4, B on 2 of 4
    assert r["ci_low"] >= 0.0 and r["seeds"] == [1] and r["n_samples"] == 4
    same = evaluate.paired_test(a, a, "MAE", n_resamples=500)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    c = {1: {**a[1], "test_ids": np.array(list("abce"))}}
    with pytest.raises(ValueError, match="not paired"):
        evaluate.paired_test(a, c, "MAE")


def test_protocols_on_hand_built_runs(tmp_path):
    true = [1.0, -1.0, 2.0, -2.0]
    # epoch 0: every sign right but far (MAE 1.0); epoch 1: two signs wrong but close on the others.
    e0 = [2.0, -2.0, 3.0, -3.0]
    e1 = [-0.2, 0.2, 2.0, -2.0]
    make_run(tmp_path, "m1", "synth-mosi", 1, "mosi", true, [e0, e1], best_epoch=0)
    make_run(tmp_path, "m1", "synth-mosi", 2, "mosi", true, [e1, e0], best_epoch=0)
    make_run(tmp_path, "m2", "synth-mosi", 1, "mosi", true, [e1], best_epoch=0)
    make_run(tmp_path, "m2", "synth-mosi", 2, "mosi", true, [e1], best_epoch=0)
    t = evaluate.evaluate_sweep(tmp_path, n_resamples=500)
    s = t["summary"].set_index(["method", "protocol", "metric"])
    # valid-selected: seed 1 took e0 (acc 1.0, MAE 1.0), seed 2 took e1 (acc 0.5, MAE 0.6)
    assert s.loc[("m1", "valid-selected", "Has0_acc_2"), "mean"] == pytest.approx(0.75)
    assert s.loc[("m1", "valid-selected", "MAE"), "mean"] == pytest.approx(0.8)
    assert s.loc[("m1", "valid-selected", "Has0_acc_2"), "n"] == 2
    # best-test-epoch: per metric over epochs, for both seeds the best acc is e0's, the best MAE e1's
    assert s.loc[("m1", "best-test-epoch", "Has0_acc_2"), "mean"] == pytest.approx(1.0)
    assert s.loc[("m1", "best-test-epoch", "MAE"), "mean"] == pytest.approx(0.6)
    # best-seed: per metric, the better of the two seeds' valid-selected values
    assert s.loc[("m1", "best-seed", "Has0_acc_2"), "mean"] == pytest.approx(1.0)
    assert s.loc[("m1", "best-seed", "MAE"), "mean"] == pytest.approx(0.6)
    p = t["paired"]
    row = p[(p["method_a"] == "m1") & (p["method_b"] == "m2") & (p["metric"] == "Has0_acc_2")].iloc[0]
    assert row["diff"] == pytest.approx(0.25) and row["seeds"] == "1,2"
    assert set(t["curves"]["method"]) == {"m1", "m2"}
    js = evaluate.metrics_json(t["summary"])
    assert js["synth-mosi"]["m2"]["Has0_acc_2"] == pytest.approx(0.5)


def test_write_evaluation_and_recompute(tmp_path):
    d = make_run(tmp_path / "runs", "m1", "synth-mvsa", 7, "cls", [0, 1, 2, 1],
                 [[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]]], best_epoch=0)
    assert evaluate.recompute(d)["test"]["Accuracy"] == pytest.approx(0.75)
    evaluate.write_evaluation(tmp_path / "runs", tmp_path / "out", n_resamples=100)
    for f in ("per_seed.csv", "summary.csv", "paired.csv", "curves.csv", "metrics.json"):
        assert (tmp_path / "out" / f).exists()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["synth-mvsa"]["m1"]["Accuracy"] == 0.75
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        evaluate.write_evaluation(tmp_path / "empty", tmp_path / "out2")


def test_variants_pair_with_their_full_model_only(tmp_path):
    """paired.csv: every pair of methods, plus each variant against its full model; never variant vs variant.
    run_inputs.csv: one row per run with its base method; the pool columns only where a pool was recorded."""
    true = [1.0, -1.0, 2.0, -2.0]
    good, half = [0.5, -0.5, 1.5, -1.5], [-0.5, -0.5, 1.5, 1.5]
    runs = {("almt", 1): good, ("almt", 2): good, ("tfn", 1): half, ("tfn", 2): half,
            ("almt-wo-ahl", 1): half, ("almt-wo-fus", 1): good, ("almt-late", 9): half}
    for (name, seed), out in runs.items():
        d = make_run(tmp_path, name, "synth-mosi", seed, "mosi", true, [out], best_epoch=0)
        cfg = {"model": name}
        if name.startswith("almt-"):
            cfg["variant"] = {"name": name, "method": "almt", "settings": {}, "pretrain": {}}
        if name == "tfn":
            cfg["method_inputs"] = {"pretrained_encoders": {"pool": "train", "pool_size": 4}}
        (d / "config.json").write_text(json.dumps(cfg))
    t = evaluate.evaluate_sweep(tmp_path, n_resamples=200)
    pairs = set(zip(t["paired"]["method_a"], t["paired"]["method_b"]))
    # almt-late ran only seed 9, which almt never ran: no common seed, no pair (and no error)
    assert pairs == {("almt", "tfn"), ("almt-wo-ahl", "almt"), ("almt-wo-fus", "almt")}
    p = t["paired"].set_index(["method_a", "metric"])
    assert p.loc[("almt-wo-ahl", "Has0_acc_2"), "diff"] == pytest.approx(-0.5)  # A = variant, B = full model
    assert p.loc[("almt-wo-ahl", "Has0_acc_2"), "seeds"] == "1"  # the seeds both ran
    assert len(t["paired"]) == 3 * len(evaluate.PAIRED_METRICS["mosi"])
    ri = t["run_inputs"]
    assert list(ri.columns) == ["method", "base_method", "dataset", "seed", "pretrain_pool", "pretrain_pool_size"]
    assert len(ri) == len(runs)
    assert dict(zip(ri["method"], ri["base_method"])) == {"almt": "almt", "tfn": "tfn", "almt-wo-ahl": "almt",
                                                          "almt-wo-fus": "almt", "almt-late": "almt"}
    assert set(ri.loc[ri["pretrain_pool"].notna(), "method"]) == {"tfn"}
    from msarepro.report.tables import pool_notes
    assert set(pool_notes(ri)) == {("synth-mosi", "tfn")}  # only runs that loaded a pool are footnoted
    assert evaluate.paired_pairs({("a", "d"): "a", ("b", "d"): "b", ("v", "d"): "a", ("w", "d"): "b",
                                  ("x", "e"): "c"}) == [("d", "a", "b"), ("d", "v", "a"), ("d", "w", "b")]
