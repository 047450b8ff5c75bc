"""Generated tables: paper numbers beside reproduced ones, units, deltas, best marks, .md/.tex, README."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from msarepro.report import build_tables, load_paper_results, write_reports
from msarepro.report.tables import latex_table, markdown_table

ROOT = Path(__file__).resolve().parents[1]
MMSA_METRICS = {"Has0_acc_2", "Non0_acc_2", "Has0_F1_score", "Non0_F1_score", "Mult_acc_2", "Mult_acc_3", "Mult_acc_5",
                "Mult_acc_7", "MAE", "Corr", "F1_score", "Accuracy"}


def summary_rows(rows):
    return pd.DataFrame([{"method": m, "dataset": d, "protocol": "valid-selected", "metric": k, "seeds": "1,2",
                          "n": 2, "mean": mean, "std": std, "ci_low": mean, "ci_high": mean}
                         for m, d, k, mean, std in rows])


def write_paper_csv(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text("paper,table,dataset,method,metric,value,note\n" + text)


def test_paper_csvs_load_and_use_mmsa_names():
    """Every transcribed paper file in the repository follows the schema the tables stage reads."""
    df = load_paper_results(ROOT / "reports" / "paper_results")
    if df.empty:
        pytest.skip("no paper results transcribed yet")
    assert set(df["metric"]) <= MMSA_METRICS, sorted(set(df["metric"]) - MMSA_METRICS)
    assert df["table"].str.len().min() > 0


def test_load_paper_results_normalises_and_rejects(tmp_path):
    write_paper_csv(tmp_path / "a", "p", "p,1,mosi,tfn,MAE,0.901,\n")
    df = load_paper_results(tmp_path / "a")
    assert df.loc[0, "table"] == "Table 1" and df.loc[0, "value"] == 0.901
    write_paper_csv(tmp_path / "b", "p", "p,1,mosi,tfn,MAE,n/a,\n")
    with pytest.raises(ValueError, match="non-numeric"):
        load_paper_results(tmp_path / "b")


def test_load_paper_results_new_schema(tmp_path):
    """kind/row/variant are read (old files without them read as main rows); bad kinds and unnamed ablation
    rows are refused with the file named."""
    head = "paper,table,kind,dataset,method,row,variant,metric,value,note\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "p.csv").write_text(head + "p,4,ablation,mosi,almt,w/o AHL,almt-wo-ahl,MAE,0.952,\n"
                                                 "p,Table 1,main,mosi,tfn,,,MAE,0.901,\n")
    df = load_paper_results(tmp_path / "a")
    assert list(df["kind"]) == ["ablation", "main"] and df.loc[0, "table"] == "Table 4"
    assert (df.loc[0, "row"], df.loc[0, "variant"]) == ("w/o AHL", "almt-wo-ahl")
    for bad, match in (("p,4,sensitivity,mosi,almt,x,v,MAE,1,\n", "kind"), ("p,4,ablation,mosi,almt,x,,MAE,1,\n",
                                                                           "need a `row` label and a `variant`")):
        (tmp_path / "b").mkdir(exist_ok=True)
        (tmp_path / "b" / "p.csv").write_text(head + bad)
        with pytest.raises(ValueError, match=match):
            load_paper_results(tmp_path / "b")


def test_build_tables_units_deltas_best(tmp_path):
    summary = summary_rows([("mult", "mosi", "Has0_acc_2", 0.80, 0.01), ("mult", "mosi", "MAE", 0.75, 0.02),
                            ("tfn", "mosi", "Has0_acc_2", 0.78, 0.02), ("tfn", "mosi", "MAE", 0.70, 0.01)])
    write_paper_csv(tmp_path, "p", "p,2,mosi,mult,Has0_acc_2,82.5,\np,2,mosi,mult,MAE,71.2,printed x100\n"
                                   "p,2,mosi,almt,Has0_acc_2,83.0,\n")
    t = build_tables(summary, load_paper_results(tmp_path), ["tfn", "mult"])["mosi"]
    labels = [r[0] for r in t["rows"]]
    assert labels == ["tfn", "mult", "mult [p, Table 2]", "almt [p, Table 2]"]
    rows = {r[0]: r[2] for r in t["rows"]}
    assert rows["mult"]["Has0_acc_2"]["mean"] == pytest.approx(80.0)  # x100, as papers print
    assert rows["mult"]["MAE"]["mean"] == pytest.approx(0.75)  # raw
    assert rows["mult [p, Table 2]"]["Has0_acc_2"]["delta"] == pytest.approx(-2.5)
    assert rows["mult [p, Table 2]"]["MAE"]["delta"] == pytest.approx(0.75 - 0.712)  # 71.2 read as x100
    assert rows["almt [p, Table 2]"]["Has0_acc_2"]["delta"] is None  # not reproduced
    assert rows["mult"]["Has0_acc_2"]["best"] and not rows["tfn"]["Has0_acc_2"]["best"]
    assert rows["tfn"]["MAE"]["best"] and not rows["mult"]["MAE"]["best"]  # lower is better
    md = markdown_table(t)
    assert "| **80.0 ± 1.0** |" in md and "82.5 (Δ -2.5)" in md and "↳ almt [p, Table 2]" in md
    assert md.splitlines()[0].startswith("| method | Has0_acc_2 | Non0_acc_2 |")  # MOSI's reported columns
    tex = latex_table("mosi", t, "cap")
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\textbf{80.0 $\pm$ 1.0}", r"$\Delta$ -2.5"):
        assert token in tex


def test_an_aligned_releases_table_shows_its_originals_paper_rows_of_the_methods_run_on_it(tmp_path):
    """MFN run on mosi-aligned: its table has the papers' MOSI rows of MFN (with Δ against the aligned runs) and
    none of the methods not run there; the MOSI table keeps every paper row, unpaired with the aligned runs."""
    summary = summary_rows([("mfn", "mosi-aligned", "Has0_acc_2", 0.77, 0.01)])
    write_paper_csv(tmp_path, "p", "p,1,mosi,mfn,Has0_acc_2,77.4,\np,1,mosi,tfn,Has0_acc_2,80.8,\n")
    tables = build_tables(summary, load_paper_results(tmp_path))
    aligned = {r[0]: r[2] for r in tables["mosi-aligned"]["rows"]}
    assert list(aligned) == ["mfn", "mfn [p, Table 1]"]
    assert aligned["mfn [p, Table 1]"]["Has0_acc_2"]["delta"] == pytest.approx(-0.4)
    mosi = {r[0]: r[2] for r in tables["mosi"]["rows"]}
    assert list(mosi) == ["mfn [p, Table 1]", "tfn [p, Table 1]"] and not tables["mosi"]["reproduced"]
    assert mosi["mfn [p, Table 1]"]["Has0_acc_2"]["delta"] is None


def test_paper_only_dataset_marks_best_printed(tmp_path):
    write_paper_csv(tmp_path, "p", "p,1,sims,a,Mult_acc_2,78.0,\np,1,sims,b,Mult_acc_2,80.1,\n")
    t = build_tables(summary_rows([]), load_paper_results(tmp_path))["sims"]
    assert not t["reproduced"]
    assert t["columns"][0] == "Mult_acc_2"
    best = [r[0] for r in t["rows"] if r[2].get("Mult_acc_2", {}).get("best")]
    assert best == ["b [p, Table 1]"]


def test_write_reports(tmp_path):
    m = tmp_path / "metrics"
    m.mkdir()
    summary_rows([("tfn", "synth-mosi", "Has0_acc_2", 0.8, 0.01)]).to_csv(m / "summary.csv", index=False)
    pd.DataFrame(columns=["dataset", "method_a", "method_b", "metric", "seeds", "n_samples", "diff", "ci_low",
                          "ci_high", "p_value"]).to_csv(m / "paired.csv", index=False)
    pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.5], "valid_loss": [1.1, 0.7], "test_loss": [1.2, 0.8],
                  "method": "tfn", "dataset": "synth-mosi", "seed": 1}).to_csv(m / "curves.csv", index=False)
    write_paper_csv(tmp_path / "papers", "p", "p,1,mosi,tfn,Has0_acc_2,73.9,\n")
    written = write_reports(m, tmp_path / "papers", tmp_path / "reports", ["tfn"], {"commit": "abc123"})
    out = tmp_path / "reports"
    for f in ("tables/synth-mosi.md", "tables/synth-mosi.tex", "tables/mosi.md", "figures/curves_synth-mosi.png",
              "README.md"):
        assert (out / f) in written and (out / f).stat().st_size > 0
    readme = (out / "README.md").read_text()
    assert "abc123" in readme and "| tfn | synth-mosi | 1,2 |" in readme and "tables/mosi.md" in readme
    before = (out / "tables" / "synth-mosi.md").read_bytes()
    write_reports(m, tmp_path / "papers", out, ["tfn"], {"commit": "abc123"})
    assert (out / "tables" / "synth-mosi.md").read_bytes() == before  # deterministic


def test_paper_spellings_join_the_registered_methods_runs(tmp_path, monkeypatch):
    """The papers write self-mm and (for a method declaring it) bert_mag: their rows pair with the runs of the
    registered self_mm / lmf; a starred re-run (self-mm*) and unknown methods keep their names."""
    from msarepro.methods import get_method, paper_aliases
    from msarepro.report.tables import registered_names

    monkeypatch.setattr(get_method("lmf"), "paper_names", ("low-rank", "lmf-paper"))
    aliases = paper_aliases()
    assert aliases["self-mm"] == aliases["self_mm"] == "self_mm" and aliases["low-rank"] == "lmf"
    assert all(aliases[n] == n for n in ("tfn", "mult", "text_only"))
    m = tmp_path / "metrics"
    m.mkdir()
    summary_rows([("self_mm", "mosi", "Has0_acc_2", 0.80, 0.01),
                  ("lmf", "mosi", "Has0_acc_2", 0.78, 0.01)]).to_csv(m / "summary.csv", index=False)
    pd.DataFrame(columns=["dataset", "method_a", "method_b", "metric", "seeds", "n_samples", "diff", "ci_low",
                          "ci_high", "p_value"]).to_csv(m / "paired.csv", index=False)
    pd.DataFrame(columns=["epoch", "train_loss", "valid_loss", "test_loss", "method", "dataset", "seed"]).to_csv(
        m / "curves.csv", index=False)
    write_paper_csv(tmp_path / "papers", "p", "p,1,mosi,self-mm,Has0_acc_2,84.0,\np,1,mosi,low-rank,Has0_acc_2,"
                                              "76.0,\np,1,mosi,self-mm*,Has0_acc_2,83.0,\np,1,mosi,mfm,Has0_acc_2,77.0,\n")
    write_reports(m, tmp_path / "papers", tmp_path / "reports", ["self_mm", "lmf"])
    md = (tmp_path / "reports" / "tables" / "mosi.md").read_text()
    assert "self_mm [p, Table 1] | 84 (Δ -4.0)" in md and "lmf [p, Table 1] | 76 (Δ +2.0)" in md
    assert "self-mm* [p, Table 1] | 83 |" in md and "mfm [p, Table 1] | 77 |" in md
    paper = registered_names(load_paper_results(tmp_path / "papers"), aliases)
    assert list(paper["method"]) == ["self_mm", "lmf", "self-mm*", "mfm"]
    monkeypatch.setattr(get_method("tfn"), "paper_names", ("low-rank",))
    with pytest.raises(ValueError, match="low-rank"):
        paper_aliases()
