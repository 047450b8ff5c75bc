"""The robustness tables and plots (report/robustness.py) from a small hand-made long CSV: mean ± std over seeds,
the normalised trapezoid AUC, both ranks, the oracle rows from a manifest, the plot, and the CSV checks."""
from __future__ import annotations

import pandas as pd
import pytest

from msarepro.report.robustness import (COLUMNS, normalised_auc, ranks, read_robustness_csv,
                                        readme_lines, write_robustness_reports)

# method -> seed -> values at rates 0.0, 0.5, 0.9 (uneven spacing, so the trapezoid weights differ)
CURVES = {"alpha": {1: (0.80, 0.70, 0.50), 2: (0.90, 0.60, 0.40)},
          "beta": {1: (0.88, 0.50, 0.30), 2: (0.86, 0.52, 0.32)}}
MANIFEST = {"metric_family": "mosi", "provenance": {"reference": {
    "oracle_random_drop": {"0.0": {"Has0_acc_2": 1.0}, "0.5": {"Has0_acc_2": 0.9}},
    "oracle_without": {"T": {"Has0_acc_2": 0.8}, "TA": {"Has0_acc_2": 0.7}}}}}


def _csv(path):
    rows = []
    for m, seeds in CURVES.items():
        for seed, vals in seeds.items():
            run = f"runs/sweep/{m}/synth-mosi/{seed}"
            for rate, v in zip((0.0, 0.5, 0.9), vals):
                rows.append(["synth-mosi", m, seed, run, "random_drop", "TAV", rate, "Has0_acc_2", v])
                rows.append(["synth-mosi", m, seed, run, "random_drop", "TAV", rate, "MAE", 1 - v])  # not shown
    rows += [["synth-mosi", "alpha", 1, "r", "remove", "T", 1, "Has0_acc_2", 0.60],
             ["synth-mosi", "alpha", 2, "r", "remove", "T", 1, "Has0_acc_2", 0.62],
             ["synth-mosi", "alpha", 1, "r", "remove", "AT", 1, "Has0_acc_2", 0.55],  # written A, T: shown as TA
             ["synth-mosi", "beta", 1, "r", "noise", "A", 10, "Has0_acc_2", 0.75]]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


def test_tables_hold_hand_computed_means_aucs_ranks_and_the_oracle(tmp_path):
    (tmp_path / "csv").mkdir()
    _csv(tmp_path / "csv" / "synth-mosi.csv")
    written = write_robustness_reports(tmp_path / "csv", tmp_path / "tables", tmp_path / "figures",
                                       {"synth-mosi": MANIFEST})
    assert written == [tmp_path / "tables" / "synth-mosi.md", tmp_path / "tables" / "synth-mosi.tex",
                       tmp_path / "figures" / "synth-mosi.png"]
    md = (tmp_path / "tables" / "synth-mosi.md").read_text()
    # alpha: rate 0 (0.80, 0.90) -> 85.0 ± 7.1; AUC per seed (0.5 (0.8 + 0.7) / 2 + 0.4 (0.7 + 0.5) / 2) / 0.9 =
    # 0.6833 and 0.6389 -> 66.1 ± 3.1. beta: 87.0 ± 1.4 at rate 0 (rank 1) but AUC 0.5611, 0.5700 -> 56.6 ± 0.6
    assert "| method | 0.0 | 0.5 | 0.9 | AUC | rank (complete) | rank (AUC) | seeds |" in md
    assert "| alpha | 85.0 ± 7.1 | 65.0 ± 7.1 | 45.0 ± 7.1 | 66.1 ± 3.1 | 2 | 1 | 2 |" in md
    assert "| beta | 87.0 ± 1.4 | 51.0 ± 1.4 | 31.0 ± 1.4 | 56.6 ± 0.6 | 1 | 2 | 2 |" in md
    assert "| oracle | 100.0 | 90.0 | – | – | – | – | – |" in md  # no stored 0.9: no AUC either
    assert "## random_drop (TAV)" in md and "Has0_acc_2 (×100)" in md and "MAE" not in md.split("## random")[1]
    assert "| method | remove T | remove TA | noise A 10 dB |" in md
    assert "| alpha | 61.0 ± 1.4 | 55.0 ± 0.0 | – |" in md and "| beta | – | – | 75.0 ± 0.0 |" in md
    assert "| oracle | 80.0 | 70.0 | – |" in md
    tex = (tmp_path / "tables" / "synth-mosi.tex").read_text()
    assert r"alpha & 85.0 $\pm$ 7.1 & 65.0 $\pm$ 7.1 & 45.0 $\pm$ 7.1 & 66.1 $\pm$ 3.1 & 2 & 1 & 2 \\" in tex
    assert r"\label{tab:robustness-synth-mosi-random_drop}" in tex and r"remove TA" in tex
    png = (tmp_path / "figures" / "synth-mosi.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # deterministic: a second run writes the same bytes
    again = write_robustness_reports(tmp_path / "csv", tmp_path / "t2", tmp_path / "f2", {"synth-mosi": MANIFEST})
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]
    # without a manifest: the registry's family, no oracle row
    write_robustness_reports(tmp_path / "csv", tmp_path / "t3", tmp_path / "f3")
    assert "oracle" not in (tmp_path / "t3" / "synth-mosi.md").read_text()
    lines = readme_lines(written, tmp_path)
    assert ("- [synth-mosi](tables/synth-mosi.md) ([LaTeX](tables/synth-mosi.tex), [plot](figures/synth-mosi.png))"
            in lines)


def test_auc_and_ranks():
    assert normalised_auc([0.0, 0.5, 0.9], [0.8, 0.7, 0.5]) == pytest.approx(0.615 / 0.9)
    assert normalised_auc([0.9, 0.0], [0.0, 1.0]) == pytest.approx(0.5)  # unsorted input is sorted
    assert ranks({"a": 0.9, "b": 0.9, "c": 0.5, "d": float("nan")}, lower_is_better=False) == {"a": 1, "b": 1, "c": 3}
    assert ranks({"a": 0.3, "b": 0.1}, lower_is_better=True) == {"a": 2, "b": 1}


def test_csv_checks_name_the_file(tmp_path):
    bad = tmp_path / "x.csv"
    pd.DataFrame([[1, 2]], columns=["dataset", "method"]).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"x.csv: header .* expected exactly dataset,method,seed,run,"):
        read_robustness_csv(bad)
    row = ["synth-mosi", "a", 1, "r", "random_drop", "TAV", 0.0, "Has0_acc_2", 0.5]
    pd.DataFrame([row, row], columns=COLUMNS).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"x.csv: 2 rows share .* one run per method and seed"):
        read_robustness_csv(bad)
