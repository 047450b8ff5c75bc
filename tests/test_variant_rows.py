"""Every ablation row the papers print maps to a named variant that lists it (reports/paper_results/*.csv against
params.yaml `variants:`), and docs/methods' variant tables are generated from that section. No training."""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
import yaml

from msarepro.methods import all_methods
from msarepro.report import variant_docs
from msarepro.report.variant_docs import SCHEMA, render_block, row_problems

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT / "reports" / "paper_results"
TABLE_ID = re.compile(r"(Table|Figure) [1-9][0-9]*")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def paper_rows(folder: Path = PAPERS) -> dict[str, list[dict[str, str]]]:
    out = {}
    for f in sorted(folder.glob("*.csv")):
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            assert reader.fieldnames == SCHEMA, f"{f.name}: header {reader.fieldnames}"
            out[f.stem] = list(reader)
    return out


def test_csvs_have_the_schema_and_normalised_table_ids():
    rows = paper_rows()
    assert set(rows) == {"aemt", "almt", "clgsi", "infig", "sfttr"}
    for paper, rs in rows.items():
        for r in rs:
            assert TABLE_ID.fullmatch(r["table"]), (paper, r["table"])
            assert r["kind"] in ("main", "ablation"), (paper, r)
            assert r["paper"] == paper


def test_every_ablation_row_maps_to_a_variant_that_lists_it(raw):
    variants = raw["variants"]
    registered = set(all_methods())
    distinct = set()
    for paper, rs in paper_rows().items():
        for r in (r for r in rs if r["kind"] == "ablation"):
            assert r["row"] and r["variant"], (paper, r)
            if r["variant"] == r["method"]:  # the full model's own row in the ablation table
                assert r["method"] in registered
                continue
            v = variants[r["variant"]]
            assert v["method"] == r["method"], (paper, r)
            assert f"{r['table']}: {r['row']}" in v["rows"], (paper, r)
            distinct.add((paper, r["table"], r["row"]))
    assert len(distinct) == 43  # ALMT 3-7 (21), SFTTR 3 (3), CLGSI 3-5, 8 (12), AE-MT 5 (3), INFIG 3 (4)


def test_main_rows_name_our_methods_only(raw):
    """A main row names its method as registered in `variant` (the papers' spellings read through paper_aliases:
    mag-bert, bert_mag -> mag_bert), and nothing for a method not reproduced here."""
    from msarepro.methods import paper_aliases

    registered, aliases = set(all_methods()), paper_aliases()
    for paper, rs in paper_rows().items():
        for r in (r for r in rs if r["kind"] == "main"):
            ours = aliases.get(r["method"], r["method"])
            assert r["variant"] == (ours if ours in registered else ""), (paper, r)
    spelled = {r["method"] for rs in paper_rows().values() for r in rs if r["variant"] == "mag_bert"}
    assert spelled == {"mag-bert", "bert_mag"}


def test_every_table_row_a_variant_lists_exists_and_methods_are_registered(raw):
    printed = {(p, r["table"], r["row"]) for p, rs in paper_rows().items() for r in rs if r["kind"] == "ablation"}
    registered = set(all_methods())
    for name, v in raw["variants"].items():
        assert v["method"] in registered and name not in registered, name
        assert v["rows"], name
        for ref in v["rows"]:
            table, label = ref.split(": ", 1)
            assert TABLE_ID.fullmatch(table), (name, ref)
            if table.startswith("Table"):
                assert (v.get("paper") or v["method"], table, label) in printed, (name, ref)


def test_refused_rows_say_why(raw):
    refused = {n: v["refused"] for n, v in raw["variants"].items() if v.get("refused")}
    assert set(refused) == {"almt-query-hyper"}
    assert "audio or vision" in refused["almt-query-hyper"]


def test_the_checker_passes_the_repository(raw):
    assert row_problems(raw, PAPERS, all_methods()) == []


def _broken_copy(tmp_path: Path, raw: dict, edit_csv=None, edit_raw=None) -> tuple[dict, Path]:
    folder = tmp_path / "paper_results"
    shutil.copytree(PAPERS, folder)
    if edit_csv:
        f = folder / "almt.csv"
        f.write_text(edit_csv(f.read_text(encoding="utf-8")), encoding="utf-8")
    new = yaml.safe_load(yaml.safe_dump(raw))
    if edit_raw:
        edit_raw(new)
    return new, folder


def test_the_checker_finds_an_ablation_row_without_variant(tmp_path, raw):
    line = "almt,Table 4,ablation,mosi,almt,w/o AHL,almt-wo-ahl,"
    new, folder = _broken_copy(tmp_path, raw, edit_csv=lambda t: t.replace(line, line.replace("almt-wo-ahl,", ",")))
    probs = row_problems(new, folder, all_methods())
    assert any("almt.csv" in p and "variant=''" in p for p in probs), probs


def test_the_checker_finds_a_variant_naming_a_missing_row(tmp_path, raw):
    def edit(r):
        r["variants"]["almt-wo-ahl"]["rows"] = ["Table 4: w/o AHL", "Table 6: none", "Table 6: nothing"]
    new, folder = _broken_copy(tmp_path, raw, edit_raw=edit)
    probs = row_problems(new, folder, all_methods())
    assert probs == ["params.yaml variants.almt-wo-ahl.rows: 'Table 6: nothing' is no ablation row of "
                     "paper_results/almt.csv"]


def test_the_checker_finds_unlisted_rows_unknown_methods_and_old_table_ids(tmp_path, raw):
    def edit(r):
        r["variants"]["almt-wo-ahl"]["rows"] = ["Table 4: w/o AHL"]  # Table 6's "none" no longer listed
        r["variants"]["clgsi-gk"]["method"] = "glfk"
    new, folder = _broken_copy(tmp_path, raw, edit_raw=edit,
                               edit_csv=lambda t: t.replace("almt,Table 1,main,", "almt,1,main,", 1))
    probs = "\n".join(row_problems(new, folder, all_methods()))
    assert "does not list this row" in probs and "'glfk' is not a registered method" in probs
    assert "table '1'" in probs


def test_docs_blocks_are_up_to_date():
    assert variant_docs.main(["--params", str(ROOT / "params.yaml"), "--papers", str(PAPERS),
                              "--docs", str(ROOT / "docs" / "methods"), "--check"]) == 0


def test_docs_check_names_a_stale_page(tmp_path, raw, capsys):
    docs = tmp_path / "methods"
    shutil.copytree(ROOT / "docs" / "methods", docs)
    page = docs / "sfttr.md"
    page.write_text(page.read_text(encoding="utf-8").replace("`methods.sfttr.contrastive: false`", "`x`"),
                    encoding="utf-8")
    args = ["--params", str(ROOT / "params.yaml"), "--papers", str(PAPERS), "--docs", str(docs)]
    assert variant_docs.main([*args, "--check"]) == 1
    assert "sfttr.md" in capsys.readouterr().err
    assert variant_docs.main(args) == 0 and variant_docs.main([*args, "--check"]) == 0
    assert "`methods.sfttr.contrastive: false`" in page.read_text(encoding="utf-8")


def test_render_block_lists_settings_pretraining_and_refusals(raw):
    blocks = render_block(raw, PAPERS)
    assert set(blocks) == {"aemt", "almt", "clgsi", "infig", "sfttr"}
    assert "| `aemt-wo-mcd` | Table 5: AE-MT w/o MCD | `pretrain.consistency_weight: 0` | simsv2 |" in blocks["aemt"]
    assert "Table 4: w/o AHL<br>Table 6: none | `methods.almt.ahl_guidance: []`" in blocks["almt"]
    assert "**refused**" in blocks["almt"] and "`methods.almt.fusion_query: hyper`" in blocks["almt"]
    assert "msarepro train --model" in blocks["almt"] and "dvc exp run -S model=" in blocks["almt"]
    assert "| `infig` (full model) | Table 3: INFIG |" in blocks["infig"]
    assert "figure only" in blocks["infig"]
