"""`msarepro check-presets` (msarepro.presetcheck): real presets built and trained for a few steps on synthetic data
in the real datasets' shapes, the real encoders' parameter counts, the compute-cost table and that the tables
stage keeps it. The full grid is a benchmark (docs/presets.md), not a test."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from msarepro.cli import main
from msarepro.presetcheck import encoders, plan
from msarepro.presetcheck.report import compute_tables
from msarepro.report.stage import KEPT, remove_stale

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, params", [
    ("bert-base-uncased", 109_482_240),  # BertModel with its pooler: the model card's 110M
    ("bert-base-chinese", 102_267_648),  # the same with a 21,128-token vocabulary
    ("microsoft/resnet-50", 23_508_032),  # ResNet-50 without its 1000-class head (25,557,032 with it)
    ("openai/clip-vit-base-patch32", 151_277_313),
    ("microsoft/deberta-v3-base", 183_831_552),  # 86M backbone + 98M embeddings (the model card)
])
def test_real_encoder_parameter_counts_from_their_configs(name, params):
    assert encoders.reference_count(name) == params


def test_mult_sims_preset_passes_and_the_report_holds_machine_and_date(tmp_path, capsys):
    """One trimodal method with its CH-SIMS preset on synth-like-sims, in this process (its MOSI preset takes
    11 s a step here): it passes, reports parameters, seconds per step and peak memory, and --report writes the
    JSON and both tables."""
    out = tmp_path / "reports"
    code = main(["check-presets", "--methods", "mult", "--datasets", "sims", "--steps", "1", "--in-process",
                 "--report", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    doc = json.loads((out / "compute" / "cpu.json").read_text())
    (r,) = doc["pairs"]
    assert (r["name"], r["dataset"], r["preset"], r["ok"], r["in_params"]) == ("mult", "sims", "sims", True, True)
    assert r["batch_size"] == 16 and r["stages"] == 1  # MulT's CH-SIMS preset (MMSA's batch 16), not its block's 32
    assert r["params"] == r["params_run"] == r["own"] > 0 and r["trainable"] == r["params"]  # no encoders
    assert r["s_per_step"] > 0 and r["peak_mib"] > 0 and r["checkpoint_mib"] > 0
    assert "mult" in printed and "1 ok, 0 failed" in printed
    md, tex = (out / "tables" / "compute.md").read_text(), (out / "tables" / "compute.tex").read_text()
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    for text in (md, tex):
        assert today in text and doc["machine"]["cpu"].split()[0] in text
    assert "| mult | sims (sims) |" in md and r"\begin{tabular}" in tex


def test_a_preset_that_real_shapes_break_fails_with_its_message_and_exit_1(capsys):
    """INFIG's top_j must not exceed the patches of the ResNet's last grid: 7 x 7 = 49 at the real image-text sets'
    224 pixels. top_j = 50 passes params.yaml's checks but not the method's check on MVSA's shapes; the pair,
    checked in a process of its own (the default), fails with the method's message and the command exits 1. (Head
    counts that a feature width does not divide no longer fail: they are fitted, see test_presets_shapes.py.)"""
    code = main(["check-presets", "--methods", "infig", "--datasets", "mvsa-single", "--steps", "1",
                 "-S", "methods.infig.presets.mvsa-single.top_j=50"])
    out = capsys.readouterr()
    assert code == 1
    row = next(line for line in out.out.splitlines() if line.startswith("infig"))
    assert "FAILED" in row and "7 x 7 grid" in row and "top_j = 50" in row, row
    assert "0 ok, 1 failed" in out.out


def test_pairs_cover_every_real_dataset_of_each_family(params):
    """Default pairs: every method with every real dataset its family handles, marked when the block's own
    values apply (no preset of that name)."""
    pairs = plan(params, ["mult", "infig", "tfn"])
    got = {(p.name, p.label): p.in_params for p in pairs}
    assert got == {**{("mult", d): True for d in ("mosi", "mosei", "sims", "simsv2")},
                   **{("tfn", d): False for d in ("mosi", "mosei", "sims", "simsv2")},
                   **{("infig", d): True for d in ("mvsa-single", "mvsa-multiple", "hfm", "tumemo")}}
    assert {p.dataset for p in pairs if p.label == "mosi"} == {"synth-like-mosi"}


def test_the_compute_table_names_each_device_and_its_figures():
    pair = {"name": "almt", "dataset": "mosi", "preset": "mosi", "ok": True, "params": 112_000_000,
            "trainable": 112_000_000, "own": 2_500_000, "batch_size": 64, "s_per_step": 1.5, "peak_mib": 900.0,
            "encoders": {"text_encoder": {"named": "bert-base-uncased", "used": "packaged-minilm"}}}
    machine = {"device": "cpu", "cpu": "Some CPU", "cpu_count": 2, "torch": "2.13.0", "capability": "AVX512"}
    docs = {"cpu": {"machine": machine, "date": "2026-12-07 08:00 UTC", "settings": {"steps": 3, "threads": 1},
                    "pairs": [pair]},
            "cuda-nvidia-h100": {"machine": {**machine, "device": "cuda", "gpu": "NVIDIA H100"},
                                 "date": "2026-12-07 09:00 UTC", "settings": {"steps": 3, "threads": 1},
                                 "pairs": [{**pair, "s_per_step": 0.05, "peak_mib": 2100.0}]}}
    md, tex = compute_tables(docs)
    assert "NVIDIA H100 s/step" in md and "| almt | mosi (mosi) | 112.00M | 112.00M | 2.50M | 64 | 1.5 | 900 | 0.05 | 2,100 |" in md
    assert "bert-base-uncased → packaged-minilm" in md and "Some CPU" in md and "2026-12-07 09:00 UTC" in md
    assert r"bert-base-uncased $\rightarrow$ packaged-minilm" in tex and "NVIDIA H100" in tex


def test_the_tables_stage_keeps_the_compute_table_and_drops_its_own_stale_files(tmp_path):
    """reports/tables persists between DVC runs (so DVC no longer empties it): `msarepro tables` removes the files
    it did not write, except the compute table, which .dvcignore leaves out of the stage's hash."""
    tables = tmp_path / "tables"
    (tables / "ablations").mkdir(parents=True)
    for f in ("synth-mosi.md", "gone.md", "compute.md", "compute.tex", "ablations/old.tex"):
        (tables / f).write_text("x")
    gone = remove_stale(tables, [tables / "synth-mosi.md"])
    assert sorted(p.name for p in gone) == ["gone.md", "old.tex"]
    assert sorted(p.name for p in tables.glob("*.*")) == ["compute.md", "compute.tex", "synth-mosi.md"]
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["tables"]
    out = next(o["reports/tables"] for o in stage["outs"] if isinstance(o, dict) and "reports/tables" in o)
    assert out == {"cache": False, "persist": True}
    ignored = (ROOT / ".dvcignore").read_text().splitlines()
    assert all(f"reports/tables/{k}" in ignored for k in KEPT)


def test_a_partial_report_replaces_its_own_rows_and_keeps_the_others(tmp_path, monkeypatch):
    """--report of some pairs on the same machine and settings updates those rows only (each row keeps the date of
    the run that measured it); another machine starts the file anew."""
    from msarepro.presetcheck import report

    dates = iter(["2026-12-01 10:00 UTC", "2026-12-02 11:00 UTC", "2026-12-03 12:00 UTC"])

    class Clock:
        @staticmethod
        def now(tz=None):
            class D:
                strftime = staticmethod(lambda fmt: next(dates))
            return D()

    monkeypatch.setattr(report.dt, "datetime", Clock)
    machine = {"device": "cpu", "cpu": "X", "cpu_count": 2, "torch": "2.13.0", "capability": "AVX2"}
    settings = {"steps": 3, "threads": 1, "scale": None}

    def pair(name, dataset, ok, s):
        return {"name": name, "dataset": dataset, "preset": dataset, "ok": ok, "s_per_step": s, "params": 10,
                "error": None if ok else "boom", "phase": None if ok else "tokens"}

    report.write_report([pair("a", "mosi", True, 1.0), pair("b", "hfm", False, None)], machine, settings, tmp_path)
    report.write_report([pair("b", "hfm", True, 2.0)], machine, settings, tmp_path)
    doc = json.loads((tmp_path / "compute" / "cpu.json").read_text())
    assert [(q["name"], q["ok"], q["date"]) for q in doc["pairs"]] == [
        ("a", True, "2026-12-01 10:00 UTC"), ("b", True, "2026-12-02 11:00 UTC")]
    md = (tmp_path / "tables" / "compute.md").read_text()
    assert "pairs from 2 runs" in md and "boom" not in md
    report.write_report([pair("b", "hfm", True, 3.0)], {**machine, "cpu": "Y"}, settings, tmp_path)
    doc = json.loads((tmp_path / "compute" / "cpu.json").read_text())
    assert [q["name"] for q in doc["pairs"]] == ["b"]
