"""Ablation tables, sensitivity figures and the compact paired tests, on small hand-made frames (no runs)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import yaml

from msarepro.config import VariantConfig, load
from msarepro.report import ablations, build_tables, load_paper_results, write_reports
from msarepro.report.tables import paired_table

HEADER = "paper,table,kind,dataset,method,row,variant,metric,value,note\n"
# ALMT-like: Table 4 prints its full row after an ablation row, one row is refused, one never ran; Table 6 prints
# no full row (its full-model numbers come from the main Table 1).
PAPER = """almt,Table 1,main,mosi,almt,,almt,Mult_acc_7,49.42,
almt,Table 1,main,mosi,almt,,almt,MAE,0.683,
almt,Table 1,main,mosi,tfn,,,Mult_acc_7,34.9,
almt,Table 4,ablation,mosi,almt,w/o AHL,almt-wo-ahl,Mult_acc_7,34.40,
almt,Table 4,ablation,mosi,almt,w/o AHL,almt-wo-ahl,MAE,0.952,
almt,Table 4,ablation,mosi,almt,ALMT,almt,Mult_acc_7,49.42,
almt,Table 4,ablation,mosi,almt,ALMT,almt,MAE,0.683,
almt,Table 4,ablation,mosi,almt,w/o Fusion & H_l^3,almt-wo-fusion,Mult_acc_7,48.69,
almt,Table 4,ablation,mosi,almt,w/o Fusion & H_l^3,almt-wo-fusion,MAE,0.703,
almt,Table 4,ablation,mosi,almt,hyper query,almt-q-hyper,Mult_acc_7,48.10,
almt,Table 4,ablation,mosi,almt,hyper query,almt-q-hyper,MAE,0.707,
almt,Table 4,ablation,sims,almt,w/o AHL,almt-wo-ahl,Mult_acc_5,38.29,
almt,Table 4,ablation,sims,almt,ALMT,almt,Mult_acc_5,45.73,
almt,Table 6,ablation,mosi,almt,H_l^1 only,almt-g1,Mult_acc_7,47.38,
"""
VARIANTS = {name: VariantConfig(**cfg) for name, cfg in {
    "almt-wo-ahl": {"method": "almt", "settings": {"ahl_guidance": []}, "rows": ("Table 4: w/o AHL",)},
    "almt-wo-fusion": {"method": "almt", "settings": {"fusion": "concat"}, "rows": ("Table 4: w/o Fusion & H_l^3",)},
    "almt-q-hyper": {"method": "almt", "rows": ("Table 4: hyper query",),
                     "refused": "the hyper-modality query is not built here"},
    "almt-g1": {"method": "almt", "settings": {"ahl_guidance": [1]}, "rows": ("Table 6: H_l^1 only",)},
    "almt-t4": {"method": "almt", "settings": {"tokens": 4}, "rows": ("Figure 8: T=4",)},
    "almt-t16": {"method": "almt", "settings": {"tokens": 16}, "rows": ("Figure 8: T=16",)},
    "almt-t99": {"method": "almt", "settings": {"tokens": 99}, "rows": ("Figure 8: T=99",), "refused": "too big"},
}.items()}


def params_file(path: Path) -> Path:
    """A params.yaml with VARIANTS and ALMT's embedded preset setting T = 12 (the default is 8)."""
    variants = {n: {**dataclasses.asdict(v), "rows": list(v.rows)} for n, v in VARIANTS.items()}
    path.write_text(yaml.safe_dump({"model": "mult", "dataset": "synth-mosi", "seed": 1, "variants": variants,
                                    "methods": {"almt": {"presets": {"synth-mosi": {"tokens": 12}}}}}))
    return path


def summary(rows):
    return pd.DataFrame([{"method": m, "dataset": d, "protocol": "valid-selected", "metric": k, "seeds": s,
                          "n": len(s.split(",")), "mean": mean, "std": std, "ci_low": mean, "ci_high": mean}
                         for m, d, k, mean, std, s in rows])


SUMMARY = summary([
    ("almt", "synth-mosi", "Mult_acc_7", 0.40, 0.01, "1,2"), ("almt", "synth-mosi", "MAE", 0.80, 0.02, "1,2"),
    ("almt", "synth-mosi", "Has0_acc_2", 0.90, 0.01, "1,2"), ("almt", "synth-mosi", "Mult_acc_5", 0.45, 0.01, "1,2"),
    ("almt-wo-ahl", "synth-mosi", "Mult_acc_7", 0.30, 0.0, "1"), ("almt-wo-ahl", "synth-mosi", "MAE", 0.95, 0.0, "1"),
    ("almt-g1", "synth-mosi", "Mult_acc_7", 0.38, 0.0, "1"), ("almt-g1", "synth-mosi", "MAE", 0.82, 0.0, "1"),
    ("tfn", "synth-mosi", "Mult_acc_7", 0.35, 0.01, "1,2"), ("tfn", "synth-mosi", "MAE", 0.85, 0.01, "1,2"),
    ("almt-t4", "synth-mosi", "Has0_acc_2", 0.85, 0.01, "1"), ("almt-t4", "synth-mosi", "MAE", 0.9, 0.0, "1"),
    ("almt-t16", "synth-mosi", "Has0_acc_2", 0.88, 0.02, "1"), ("almt-t16", "synth-mosi", "MAE", 0.85, 0.0, "1"),
])
PAIRED_COLS = ["dataset", "method_a", "method_b", "metric", "seeds", "n_samples", "diff", "ci_low", "ci_high",
               "p_value"]


def paired(rows):
    return pd.DataFrame([dict(zip(PAIRED_COLS, (d, a, b, k, s, 100, diff, diff - 0.01, diff + 0.01, p)))
                         for d, a, b, k, s, diff, p in rows], columns=PAIRED_COLS)


# Δ from the paired test on the common seed differs from the difference of means (0.30 - 0.40), so a Δ of -8.0
# can only have come from paired.csv. The MAE row is stored full-vs-variant: the table must flip it.
PAIRED = paired([
    ("synth-mosi", "almt-wo-ahl", "almt", "Mult_acc_7", "1", -0.08, 0.012),
    ("synth-mosi", "almt", "almt-wo-ahl", "MAE", "1", -0.14, 0.034),
    ("synth-mosi", "almt", "tfn", "Mult_acc_7", "1,2", 0.05, 0.2),
    ("synth-mosi", "almt", "tfn", "MAE", "1,2", -0.05, 0.3),
])


@pytest.fixture
def paper(tmp_path):
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "almt.csv").write_text(HEADER + PAPER)
    return load_paper_results(tmp_path / "papers")


def by_label(table):
    return {r["label"]: i for i, r in enumerate(table["rows"])}


def test_layout_paper_delta_ours_from_paired(paper):
    built = {t["table"]: t for t in ablations.build_ablation_tables(SUMMARY, PAIRED, paper, VARIANTS)}
    assert sorted(built) == ["Table 4", "Table 6"]  # one table per paper ablation table; Table 1 is a main table
    t = built["Table 4"]
    assert t["stem"] == "almt-table-4"
    # the paper's order, the full model moved first
    assert [r["label"] for r in t["rows"]] == ["ALMT", "w/o AHL", "w/o Fusion & H_l^3", "hyper query"]
    mosi, sims = t["blocks"]
    assert (mosi["dataset"], mosi["metrics"], mosi["ours"]) == ("mosi", ["Mult_acc_7", "MAE"], ["synth-mosi"])
    # no synth-sims runs: synth-mosi (same modality family) stands in, with the columns it computes
    assert (sims["dataset"], sims["metrics"], sims["ours"]) == ("sims", ["Mult_acc_5"], ["synth-mosi"])
    i = by_label(t)
    wo = mosi["cells"][i["w/o AHL"]]
    assert wo["paper"]["Mult_acc_7"] == (34.40, pytest.approx(34.40 - 49.42))  # paper Δ = row - full row
    assert wo["paper"]["MAE"][1] == pytest.approx(0.952 - 0.683)
    assert mosi["cells"][i["ALMT"]]["paper"]["MAE"] == (0.683, None)
    ours = wo["ours"]["synth-mosi"]
    assert ours["Mult_acc_7"]["mean"] == pytest.approx(30.0) and ours["MAE"]["mean"] == pytest.approx(0.95)
    assert ours["Mult_acc_7"]["delta"] == pytest.approx(-8.0) and ours["Mult_acc_7"]["p"] == 0.012
    assert ours["MAE"]["delta"] == pytest.approx(0.14) and ours["MAE"]["p"] == 0.034  # stored reversed: flipped
    assert wo["seeds"]["synth-mosi"] == "1"
    full = mosi["cells"][i["ALMT"]]["ours"]["synth-mosi"]
    assert full["Mult_acc_7"]["mean"] == pytest.approx(40.0) and full["Mult_acc_7"]["delta"] is None
    # refused: "–" and a footnote with the reason; never ran: "–" and a footnote
    assert mosi["cells"][i["hyper query"]]["ours"]["synth-mosi"] is None
    assert mosi["cells"][i["w/o Fusion & H_l^3"]]["ours"]["synth-mosi"] is None
    notes = [t["notes"][n] for n in t["rows"][i["hyper query"]]["notes"]]
    assert any("not reproduced here: the hyper-modality query is not built here" in n for n in notes)
    assert any("no finished run on synth-mosi" in t["notes"][n] for n in t["rows"][i["w/o Fusion & H_l^3"]]["notes"])
    md = ablations.markdown_ablation(t)
    head = next(line for line in md.splitlines() if line.startswith("| row |"))
    assert head.startswith("| row | Mult_acc_7 (paper) | MAE (paper) | Mult_acc_7 synth-mosi | Δ | p |")
    row = next(line for line in md.splitlines() if line.startswith("| w/o AHL"))
    assert "34.40 (Δ -15.02)" in row and "0.952 (Δ +0.269)" in row  # the paper's units and precision
    assert "30.0 ± 0.0 | -8.0 | 0.012" in row and "0.950 ± 0.000 | +0.140 | 0.034" in row
    refused = next(line for line in md.splitlines() if line.startswith("| hyper query"))
    assert refused.count("–") >= 6 and "[" in refused  # our cells dashed, a footnote mark on the label


def test_full_model_from_main_rows_when_the_table_prints_none(paper):
    t = {t["table"]: t for t in ablations.build_ablation_tables(SUMMARY, PAIRED, paper, VARIANTS)}["Table 6"]
    assert [r["label"] for r in t["rows"]] == ["almt (full model)", "H_l^1 only"]
    cells = t["blocks"][0]["cells"]
    assert cells[0]["paper"]["Mult_acc_7"] == (49.42, None)  # Table 1's main row for almt on mosi
    assert any("prints no almt row" in n and "(mosi: Table 1)" in n for n in t["notes"])
    assert cells[1]["paper"]["Mult_acc_7"][1] == pytest.approx(47.38 - 49.42)
    # no paired row for almt-g1 (e.g. no common seed): Δ of the means, no p
    ours = cells[1]["ours"]["synth-mosi"]["Mult_acc_7"]
    assert ours["p"] is None and ours["delta"] == pytest.approx(-2.0)


def test_latex_escapes_and_booktabs(paper):
    t = {t["table"]: t for t in ablations.build_ablation_tables(SUMMARY, PAIRED, paper, VARIANTS)}["Table 4"]
    tex = ablations.latex_ablation(t)
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"w/o Fusion \& H\_l\^{}3$^{", r"Mult\_acc\_7 (paper)",
                  r"$\Delta$ -15.02", r"30.0 $\pm$ 0.0"):
        assert token in tex, token
    assert "& H_l" not in tex and " [1]" not in tex  # nothing unescaped, footnote marks as superscripts


def test_main_tables_drop_ablation_rows_and_variant_runs(paper):
    names = sorted(set(SUMMARY["method"]))
    ri = pd.DataFrame({"method": names, "base_method": [VARIANTS[n].method if n in VARIANTS else n for n in names],
                       "dataset": "synth-mosi", "seed": 1, "pretrain_pool": None, "pretrain_pool_size": None})
    for kwargs in ({"variants": set(VARIANTS)}, {"run_inputs": ri}):  # named in params.yaml, or marked by evaluate
        tables = build_tables(SUMMARY, paper, ["tfn", "almt"], **kwargs)
        labels = [r[0] for r in tables["synth-mosi"]["rows"]]
        assert labels == ["tfn", "almt"], labels
        mosi = tables["mosi"]["rows"]
        assert [r[0] for r in mosi] == ["almt [almt, Table 1]", "tfn [almt, Table 1]"]
        assert mosi[0][2]["Mult_acc_7"]["value"] == 49.42  # the main row, not Table 4's
    assert "sims" not in tables  # sims only had ablation rows
    with_all = build_tables(SUMMARY, paper, ["tfn", "almt"])  # nothing marks the variants: they would show
    assert "almt-wo-ahl" in [r[0] for r in with_all["synth-mosi"]["rows"]]


def test_compact_paired_keeps_method_vs_baseline():
    p = paired([
        ("synth-mosi", "aemt", "almt", "MAE", "1,2", 0.01, 0.5),
        ("synth-mosi", "aemt", "tfn", "MAE", "1,2", 0.02, 0.5),
        ("synth-mosi", "almt", "tfn", "MAE", "1,2", -0.05, 0.04),
        ("synth-mosi", "mult", "tfn", "MAE", "1,2", 0.03, 0.5),
        ("synth-mosi", "mult", "sfttr", "MAE", "1,2", 0.07, 0.01),  # stored baseline-first: flipped
        ("synth-mosi", "almt-wo-ahl", "almt", "MAE", "1", 0.1, 0.01),
    ])
    md = paired_table(p, "synth-mosi", ["aemt", "almt", "sfttr"], {"almt-wo-ahl"})
    pairs = [tuple(line.split(" | ")[:2]) for line in md.splitlines()[2:]]
    assert pairs == [("| aemt", "tfn"), ("| almt", "tfn"), ("| sfttr", "mult")]  # the pairs paired.csv holds
    assert "| almt | tfn | -0.050 (0.040) | 1,2 |" in md and "| sfttr | mult | -0.070 (0.010) |" in md
    assert "mult | tfn" not in md and "aemt | almt" not in md and "almt-wo-ahl" not in md
    full = paired_table(p, "synth-mosi", None, {"almt-wo-ahl"})  # without the method list: every pair
    assert "| mult | tfn |" in full and "| aemt | almt |" in full


def test_sensitivity_points_and_figure(tmp_path, paper):
    params = load(params_file(tmp_path / "params.yaml"))
    setting = ablations.params_setting(params)
    assert setting("almt", "synth-mosi", "tokens") == 12 and setting("almt", "synth-sims", "tokens") == 8
    groups = ablations.figure_groups(VARIANTS)
    assert groups == {("almt", "Figure 8"): ["almt-t16", "almt-t4"]}  # the refused one left out
    pts = ablations.sensitivity_points(SUMMARY, VARIANTS, groups[("almt", "Figure 8")], "synth-mosi", "MAE", setting)
    assert [(p["x"], p["full"]) for p in pts] == [(4, False), (12, True), (16, False)]
    assert pts[1]["mean"] == pytest.approx(0.80)
    out = ablations.write_ablations(SUMMARY, PAIRED, paper, params, tmp_path / "reports")
    assert out["figures"] == [tmp_path / "reports" / "figures" / "ablations" / "almt-figure-8.png"]
    assert out["figures"][0].stat().st_size > 0
    with pytest.raises(ValueError, match="variants.bad: .* exactly one setting"):
        ablations.x_setting("bad", VariantConfig("almt", {"tokens": 4, "dim": 8}), "synth-mosi")


def test_write_reports_wires_ablations(tmp_path):
    m = tmp_path / "metrics"
    m.mkdir()
    SUMMARY.to_csv(m / "summary.csv", index=False)
    PAIRED.to_csv(m / "paired.csv", index=False)
    pd.DataFrame({"epoch": [0, 0], "train_loss": [1.0, 1.0], "valid_loss": [1.0, 1.0], "test_loss": [1.0, 1.0],
                  "method": ["almt", "almt-wo-ahl"], "dataset": "synth-mosi", "seed": 1}).to_csv(m / "curves.csv",
                                                                                                 index=False)
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "almt.csv").write_text(HEADER + PAPER)
    params = params_file(tmp_path / "params.yaml")
    out = tmp_path / "reports"
    stale = out / "tables" / "ablations" / "almt-table-9.md"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    written = write_reports(m, tmp_path / "papers", out, ["tfn", "almt"], {}, params_path=params)
    for f in ("tables/ablations/almt-table-4.md", "tables/ablations/almt-table-4.tex",
              "tables/ablations/almt-table-6.md", "figures/ablations/almt-figure-8.png"):
        assert out / f in written and (out / f).stat().st_size > 0, f
    assert not stale.exists()
    readme = (out / "README.md").read_text()
    assert "## Ablation tables" in readme and "(tables/ablations/almt-table-4.md)" in readme
    assert "figures/ablations/almt-figure-8.png" in readme
    main = (out / "tables" / "synth-mosi.md").read_text()
    assert "almt-wo-ahl" not in main and "reports/metrics/paired.csv" in main
    assert "w/o AHL" not in (out / "tables" / "mosi.md").read_text()
    table4 = (out / "tables" / "ablations" / "almt-table-4.md").read_text()
    assert "the hyper-modality query is not built here" in table4


def test_our_datasets_prefer_the_metric_family_then_the_modality_family():
    from msarepro.report.ablations import our_datasets

    ran = {"synth-mosi", "synth-mvsa"}
    assert our_datasets("mosi", ran) == ["synth-mosi"]  # same metric family
    assert our_datasets("sims", ran) == ["synth-mosi"]  # no sims-family run: the trimodal embedded one stands in
    assert our_datasets("sims", ran | {"synth-sims"}) == ["synth-sims"]  # the same metric family wins
    assert our_datasets("hfm", ran) == ["synth-mvsa"]
    assert our_datasets("mosi", {"synth-mvsa"}) == []  # never across modality families
