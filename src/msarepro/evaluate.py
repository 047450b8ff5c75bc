"""Run outputs -> metrics. `recompute` re-derives a run's metrics from its saved predictions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics


def recompute(run_dir: Path) -> dict:
    """Metrics of `run_dir/predictions.csv`, per split, with the family recorded in metrics.json."""
    meta = json.loads((run_dir / "metrics.json").read_text())
    pred = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})
    out = {}
    for split, df in pred.groupby("split"):
        out[split] = metrics.compute(meta["metric_family"], df["y_pred"].to_numpy(np.float64)
                                     if meta["metric_family"] != "cls" else df["y_pred"].to_numpy(),
                                     df["y_true"].to_numpy(), meta.get("f1_average", "weighted"))
    return out
