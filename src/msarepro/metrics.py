"""The field's metric definitions, with MMSA's names (docs/metrics.md).

Regression families:
- "mosi" (MOSI / MOSEI, labels in [-3, 3]): Has0_acc_2, Has0_F1_score, Non0_acc_2, Non0_F1_score,
  Mult_acc_3/5/7, MAE, Corr.
- "sims" (CH-SIMS / CH-SIMS v2, labels in [-1, 1]): Mult_acc_2/3/5, F1_score, MAE, Corr.
Classification family "cls": Accuracy, F1_weighted, F1_macro and F1_score (the one the dataset's papers report).

Conventions that matter for comparability:
- F1 is scikit-learn's weighted F1 called as f1_score(truth, prediction): the argument order changes it.
- numpy's round (half to even) is used for the multi-class accuracies, as MMSA does.
- Pearson's r of a constant vector is undefined; it is reported as 0.0 (MMSA would print nan).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

# Metrics where smaller is better; every other metric is larger-is-better.
LOWER_IS_BETTER = frozenset({"MAE", "loss"})

# The columns each family's papers print, in their usual order.
REPORTED = {
    "mosi": ["Has0_acc_2", "Non0_acc_2", "Has0_F1_score", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"],
    "sims": ["Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"],
    "cls": ["Accuracy", "F1_score"],
}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _mult_acc(pred: np.ndarray, true: np.ndarray, bound: float) -> float:
    """Clip both to [-bound, bound], round half to even, compare."""
    p = np.round(np.clip(pred, -bound, bound))
    t = np.round(np.clip(true, -bound, bound))
    return float(np.mean(p == t))


def mosi_metrics(pred, true) -> dict[str, float]:
    """MOSI / MOSEI metrics. `pred`, `true`: (N,) floats, labels in [-3, 3]."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    has0_t, has0_p = true >= 0, pred >= 0
    nz = true != 0
    non0_t, non0_p = true[nz] > 0, pred[nz] > 0
    out = {
        "Has0_acc_2": float(accuracy_score(has0_t, has0_p)),
        "Has0_F1_score": float(f1_score(has0_t, has0_p, average="weighted")),
        "Non0_acc_2": float(accuracy_score(non0_t, non0_p)) if nz.any() else 0.0,
        "Non0_F1_score": float(f1_score(non0_t, non0_p, average="weighted")) if nz.any() else 0.0,
        "Mult_acc_3": _mult_acc(pred, true, 1.0),
        "Mult_acc_5": _mult_acc(pred, true, 2.0),
        "Mult_acc_7": _mult_acc(pred, true, 3.0),
        "MAE": float(np.mean(np.abs(pred - true))),  # on unclipped values
        "Corr": _pearson(pred, true),
    }
    return out


def _bins(x: np.ndarray, edges: list[float]) -> np.ndarray:
    """Class index of each value in half-open bins (lo, hi]."""
    out = np.zeros(len(x), dtype=np.int64)
    for i in range(len(edges) - 1):
        out[(x > edges[i]) & (x <= edges[i + 1])] = i
    return out


SIMS_EDGES = {
    2: [-1.01, 0.0, 1.01],
    3: [-1.01, -0.1, 0.1, 1.01],
    5: [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01],
}


def sims_metrics(pred, true) -> dict[str, float]:
    """CH-SIMS family metrics. Both are clipped to [-1, 1] first; MAE and Corr use the clipped values."""
    pred = np.clip(np.asarray(pred, dtype=np.float64).reshape(-1), -1.0, 1.0)
    true = np.clip(np.asarray(true, dtype=np.float64).reshape(-1), -1.0, 1.0)
    out = {}
    for k, edges in SIMS_EDGES.items():
        out[f"Mult_acc_{k}"] = float(np.mean(_bins(pred, edges) == _bins(true, edges)))
    out["F1_score"] = float(f1_score(_bins(true, SIMS_EDGES[2]), _bins(pred, SIMS_EDGES[2]), average="weighted"))
    out["MAE"] = float(np.mean(np.abs(pred - true)))
    out["Corr"] = _pearson(pred, true)
    return out


def classification_metrics(pred_class, true, f1_average: str = "weighted") -> dict[str, float]:
    """Accuracy and F1 for class indices; F1_score is the average the dataset's papers report."""
    pred_class = np.asarray(pred_class).reshape(-1)
    true = np.asarray(true).reshape(-1)
    out = {
        "Accuracy": float(accuracy_score(true, pred_class)),
        "F1_weighted": float(f1_score(true, pred_class, average="weighted")),
        "F1_macro": float(f1_score(true, pred_class, average="macro")),
    }
    out["F1_score"] = out["F1_weighted" if f1_average == "weighted" else "F1_macro"]
    return out


def compute(family: str, pred, true, f1_average: str = "weighted") -> dict[str, float]:
    """Dispatch on the metric family a dataset's manifest declares."""
    if family == "mosi":
        return mosi_metrics(pred, true)
    if family == "sims":
        return sims_metrics(pred, true)
    if family == "cls":
        return classification_metrics(pred, true, f1_average)
    raise ValueError(f"unknown metric family {family!r}: expected 'mosi', 'sims' or 'cls'")


def better(metric: str, a: float, b: float) -> bool:
    """True when value `a` of `metric` is strictly better than `b`."""
    return a < b if metric in LOWER_IS_BETTER else a > b
