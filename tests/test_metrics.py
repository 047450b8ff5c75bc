"""Metrics against hand-computed cases (zeros, round-half-to-even, clipping, (lo, hi] bins, F1 argument order)."""
import numpy as np
import pytest

from msarepro import metrics


def test_mosi_metrics_hand_computed():
    pred = [0.0, -0.2, 0.5, 1.5, 2.5, -3.4]
    true = [0.0, 0.0, 1.0, 2.5, 2.5, -2.6]
    m = metrics.mosi_metrics(pred, true)
    # Has0: truth >= 0 is [T T T T T F], prediction >= 0 is [T F T T T F]
    assert m["Has0_acc_2"] == pytest.approx(5 / 6)
    # weighted F1 with supports from the truth (5 x T, 1 x F): T F1 = 8/9, F F1 = 2/3
    assert m["Has0_F1_score"] == pytest.approx((5 * 8 / 9 + 1 * 2 / 3) / 6)
    # Non0 drops the two samples whose truth is exactly 0; the other four are all right
    assert m["Non0_acc_2"] == 1.0 and m["Non0_F1_score"] == 1.0
    # half to even: 0.5 -> 0 (truth 1 -> miss), 1.5 -> 2, 2.5 -> 2; -3.4 clipped to -3
    assert m["Mult_acc_7"] == pytest.approx(5 / 6)
    assert m["Mult_acc_5"] == pytest.approx(5 / 6)
    assert m["Mult_acc_3"] == pytest.approx(5 / 6)
    # MAE on unclipped values: |0| + .2 + .5 + 1 + 0 + .8 = 2.5
    assert m["MAE"] == pytest.approx(2.5 / 6)
    assert m["Corr"] == pytest.approx(np.corrcoef(pred, true)[0, 1])


def test_f1_argument_order_matters():
    pred = [0.0, -0.2, 0.5, 1.5, 2.5, -3.4]
    true = [0.0, 0.0, 1.0, 2.5, 2.5, -2.6]
    swapped = (4 * 8 / 9 + 2 * 2 / 3) / 6  # supports from the prediction instead
    assert metrics.mosi_metrics(pred, true)["Has0_F1_score"] != pytest.approx(swapped)


def test_non0_prediction_of_exactly_zero_counts_as_negative():
    m = metrics.mosi_metrics([0.0, 1.0], [0.4, 1.0])
    assert m["Non0_acc_2"] == 0.5
    assert m["Has0_acc_2"] == 1.0


def test_sims_metrics_hand_computed():
    pred = [-1.5, 0.01, 0.05, 0.1, 0.7, 0.75]
    true = [-1.0, 0.0, 0.1, 0.2, 0.7, 1.2]
    m = metrics.sims_metrics(pred, true)
    # 2 classes (-1.01, 0], (0, 1.01]: pred [0 1 1 1 1 1], truth [0 0 1 1 1 1] (neutral counts as negative)
    assert m["Mult_acc_2"] == pytest.approx(5 / 6)
    # 3 classes: 0.1 is in (-0.1, 0.1] (neutral), 0.2 is positive: pred [0 1 1 1 2 2], truth [0 1 1 2 2 2]
    assert m["Mult_acc_3"] == pytest.approx(5 / 6)
    # 5 classes: 0.7 is in (0.1, 0.7], 0.75 in (0.7, 1.01]: pred [0 2 2 2 3 4], truth [0 2 2 3 3 4]
    assert m["Mult_acc_5"] == pytest.approx(5 / 6)
    # F1 on the 2-class bins, weighted by truth supports (2, 4): class 0 F1 2/3, class 1 F1 8/9
    assert m["F1_score"] == pytest.approx((2 * 2 / 3 + 4 * 8 / 9) / 6)
    # MAE on clipped values (-1.5 -> -1, 1.2 -> 1): 0 + .01 + .05 + .1 + 0 + .25
    assert m["MAE"] == pytest.approx(0.41 / 6)
    assert m["Corr"] == pytest.approx(np.corrcoef(np.clip(pred, -1, 1), np.clip(true, -1, 1))[0, 1])


def test_classification_metrics():
    m = metrics.classification_metrics([0, 1, 2, 2], [0, 1, 1, 2], f1_average="macro")
    assert m["Accuracy"] == 0.75
    assert m["F1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["F1_weighted"] == pytest.approx((1 + 2 * 2 / 3 + 2 / 3) / 4)
    assert m["F1_score"] == m["F1_macro"]


def test_constant_prediction_corr_is_zero_and_better():
    assert metrics.mosi_metrics([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["Corr"] == 0.0
    assert metrics.better("MAE", 0.5, 0.6) and not metrics.better("MAE", 0.6, 0.5)
    assert metrics.better("Corr", 0.6, 0.5)
    with pytest.raises(ValueError, match="unknown metric family"):
        metrics.compute("nope", [0], [0])
