"""The `robustness` DVC stage (robustness_eval/stage.py) and its tables (report/stage.py): from the sweep's runs to
reports/robustness/<dataset>.csv, the tables and plots; the grid from params.yaml's `robustness:`."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from msarepro import config
from msarepro.config import ConfigError
from msarepro.methods import validate_params
from msarepro.train import RunSpec, run
from tests.conftest import fast_params
from tests.test_pipeline import tiny_params


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory, small_data):
    """A two-method, one-seed sweep on small synth-mosi under runs/sweep/<method>/synth-mosi/1111."""
    import torch
    root = tmp_path_factory.mktemp("sweep")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep's jobs train (workflow/rules/train.smk), and the stage scores
    try:
        for m in ("text_only", "lf_dnn", "tfn"):
            run(fast_params(2), RunSpec(m, str(small_data["synth-mosi"]), 1111, root / m / "synth-mosi" / "1111",
                                        progress=False))
    finally:
        torch.set_num_threads(threads)
    return root


def _params(**robustness):
    raw = tiny_params(methods=("text_only", "lf_dnn", "tfn"))
    raw["robustness"] = {**raw["robustness"], **robustness}
    return validate_params(config.from_dict(raw))


def test_stage_scores_every_run_of_the_grid_and_keeps_the_oracle(sweep_runs, tmp_path):
    from msarepro.robustness_eval.stage import run_stage
    out = tmp_path / "robustness"
    (out).mkdir()
    (out / "gone.csv").write_text("stale")  # a dataset no longer in the grid
    written = run_stage(_params(perturbations=["random_drop", "remove@AV"], rates=[0.0, 0.5]), sweep_runs, out)
    assert sorted(p.name for p in written) == ["README.md", "synth-mosi.csv", "synth-mosi.dataset.json"]
    assert not (out / "gone.csv").exists()
    df = pd.read_csv(out / "synth-mosi.csv")
    assert set(df["method"]) == {"text_only", "lf_dnn", "tfn"}
    assert set(zip(df["perturbation"], df["severity"])) == {("random_drop", 0.0), ("random_drop", 0.5),
                                                             ("remove", 1.0)}
    for m in ("text_only", "lf_dnn", "tfn"):  # rate 0 is the run's own test score, bit for bit (TFN: only with
        # the thread count it trained with)
        clean = json.loads((sweep_runs / m / "synth-mosi" / "1111" / "metrics.json").read_text())["test"]
        got = df[(df.method == m) & (df.perturbation == "random_drop") & (df.severity == 0.0)]
        assert dict(zip(got.metric, got.value)) == pytest.approx(clean, abs=0, rel=0)
    info = json.loads((out / "synth-mosi.dataset.json").read_text())
    assert info["metric_family"] == "mosi" and "oracle_without" in info["provenance"]["reference"]


def test_tables_stage_writes_the_robustness_tables_and_links_them(sweep_runs, tmp_path):
    from msarepro.report.robustness import write_robustness_reports
    from msarepro.robustness_eval.stage import run_stage
    out = tmp_path / "robustness"
    run_stage(_params(perturbations=["random_drop", "remove"], rates=[0.0, 0.3, 0.6]), sweep_runs, out)
    written = write_robustness_reports(out, tmp_path / "tables", tmp_path / "figures",
                                       {"synth-mosi": out / "synth-mosi.dataset.json"})
    md = (tmp_path / "tables" / "synth-mosi.md").read_text()
    assert "oracle" in md and "lf_dnn" in md and "text_only" in md
    assert (tmp_path / "figures" / "synth-mosi.png").stat().st_size > 0 and len(written) == 3


def test_disabled_stage_writes_only_its_note(sweep_runs, tmp_path):
    from msarepro.robustness_eval.stage import run_stage
    written = run_stage(_params(enabled=False), sweep_runs, tmp_path / "r")
    assert [p.name for p in written] == ["README.md"] and "disabled" in written[0].read_text()


def test_a_method_outside_the_sweep_or_an_untrained_run_is_refused(sweep_runs, tmp_path):
    from msarepro.robustness_eval.stage import stage_runs
    with pytest.raises(ConfigError, match="mult"):
        stage_runs(_params(methods=["mult"]), sweep_runs)
    with pytest.raises(ConfigError, match="no best.pt"):
        stage_runs(_params(), tmp_path / "empty-sweep")
    with pytest.raises(ConfigError, match="rates"):
        _params(rates=[1.5])


def test_stage_scores_with_the_sweep_jobs_thread_count_and_restores_it(sweep_runs, tmp_path, monkeypatch):
    """On full-size data TFN's clean scores differ in the last digits when scored with another torch thread count
    than the single-threaded sweep job that trained it; the stage scores each run with one thread (one process,
    here), then the count is as before."""
    import torch

    from msarepro.robustness_eval import evaluate, stage
    seen = []
    real = evaluate.evaluate_run

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)

    monkeypatch.setattr(evaluate, "evaluate_run", spy)
    monkeypatch.setattr(stage, "stage_workers", lambda: 1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stage.run_stage(_params(perturbations=["random_drop@0"]), sweep_runs, tmp_path / "r")
        assert seen == [stage.SWEEP_JOB_THREADS] * 3 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_runs_scored_in_worker_processes_give_the_same_table(sweep_runs, tmp_path):
    """Two worker processes (the stage's choice on a 2-core CPU) give the rows of one process, in the same order;
    the clean scores equal the runs' metrics.json."""
    from msarepro.robustness_eval.evaluate import evaluate_runs

    dirs = [sweep_runs / m / "synth-mosi" / "1111" for m in ("lf_dnn", "tfn")]
    kw = dict(items=["random_drop", "remove@TA"], rates=(0.0,), progress=False, threads=1)
    one = evaluate_runs(dirs, tmp_path / "one.csv", workers=1, **kw)
    two = evaluate_runs(dirs, tmp_path / "two.csv", workers=2, **kw)
    pd.testing.assert_frame_equal(one, two)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    clean = one[(one["perturbation"] == "random_drop") & (one["severity"] == 0.0)]
    for d in dirs:
        test = json.loads((d / "metrics.json").read_text())["test"]
        got = clean[clean["run"].str.endswith(str(d.relative_to(sweep_runs)))].set_index("metric")["value"]
        assert {k: got[k] for k in test} == test
