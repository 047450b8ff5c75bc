"""The metric regression check (`msarepro check-regression`): the comparison logic, the smoke run's independence
from the machine's thread count, and the real check of every registered method against ci/expected_metrics.json
(one test per method, so a failure names the method). After an intended change of a method's numbers:
`msarepro check-regression --update && git add ci/expected_metrics.json`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from msarepro import config, metrics, regression
from msarepro.config import ConfigError
from msarepro.methods import all_methods

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
BIN = Path(sys.executable).parent
# The longest smoke runs, measured on a shared 2-core machine (MulT 3.8-7.1 s, INFIG 4.0-6.5 s; the others 0.5-3.5 s);
# the README's test section lists them. `pytest -m "not slow"` skips them.
SLOW_SMOKE = {"infig", "mult"}


def committed() -> Path:
    return ROOT / regression.settings(PARAMS).expected


def test_compare_and_render():
    exp = {"m/d/1": {"Has0_acc_2": 0.80, "MAE": 0.70}, "gone/d/1": {"Has0_acc_2": 0.5}}
    act = {"m/d/1": {"Has0_acc_2": 0.77, "MAE": 0.69}, "new/d/1": {"Has0_acc_2": 0.6}}
    f = {(x.key, x.metric): x.status for x in regression.compare(exp, act, {"default": 0.02, "MAE": 0.03})}
    assert f[("m/d/1", "Has0_acc_2")] == "regression"  # 0.03 worse > 0.02
    assert f[("m/d/1", "MAE")] == "ok"  # 0.01 better, within 0.03
    assert f[("gone/d/1", "Has0_acc_2")] == "missing" and f[("new/d/1", "Has0_acc_2")] == "new"
    f2 = {x.metric: x.status for x in regression.compare({"k": {"MAE": 0.70}}, {"k": {"MAE": 0.60}}, {"default": 0.02})}
    assert f2 == {"MAE": "improved"}  # lower MAE is better
    text = regression.render(regression.compare(exp, act, {"default": 0.02}))
    assert "REGRESSION" in text and "-0.0300" in text and "1 regression" in text


def test_compare_flags_every_doctored_committed_value():
    """Against the committed values themselves, moving any one metric of any run past its tolerance is caught."""
    exp = json.loads(committed().read_text())["metrics"]
    tol = regression.settings(PARAMS).tolerance
    assert all(x.status == "ok" for x in regression.compare(exp, exp, tol))
    for key, ms in exp.items():
        for metric, v in ms.items():
            t = float(tol.get(metric, tol["default"]))
            for step, status in ((1.5 * t, "improved"), (-1.5 * t, "regression"), (0.5 * t, "ok")):
                sign = -1 if metric in metrics.LOWER_IS_BETTER else 1
                doctored = {key: {**ms, metric: v + sign * step}}
                f = {x.metric: x.status for x in regression.compare({key: ms}, doctored, tol)}
                assert f[metric] == status, (key, metric, step)


def test_expected_file_covers_every_registered_method():
    keys = json.loads(committed().read_text())["metrics"]
    assert {k.split("/")[0] for k in keys} == set(all_methods()), "refresh: msarepro check-regression --update"


def test_smoke_run_trains_on_one_cpu_thread_whatever_the_caller_set(monkeypatch):
    """The smoke run's metrics depend on torch's intra-op thread count (CLGSI's Corr 0.196 on 1 thread, 0.162 on
    2 to 16): it pins its own, on the CPU, and gives the caller's back."""
    import msarepro.train

    seen = []

    def fake_run(params, spec):
        seen.append((torch.get_num_threads(), spec.device))
        return {"test": {"Corr": 0.0}}

    monkeypatch.setattr(msarepro.train, "run", fake_run)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        regression.smoke_run(PARAMS, ["text_only"], log=lambda *a: None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and all(x == (regression.SMOKE_THREADS, "cpu") for x in seen), seen
    assert regression.SMOKE_THREADS == 1


def test_clgsi_smoke_run_is_bit_identical_under_any_caller_thread_count():
    """The method whose smoke metrics moved with the thread count: same bits under 1 and 2 caller threads."""
    before, out = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(regression.smoke_run(PARAMS, ["clgsi"], log=lambda *a: None)[1])
    finally:
        torch.set_num_threads(before)
    assert out[0] == out[1]


def test_expected_file_with_other_settings_is_refused(tmp_path):
    exp = json.loads(committed().read_text())
    exp["settings"]["threads"] = 4
    stale = tmp_path / "expected.json"
    stale.write_text(json.dumps(exp))
    with pytest.raises(ConfigError, match="refresh with `msarepro check-regression --update`"):
        regression.run_and_compare(PARAMS, stale, ["text_only"])
    with pytest.raises(ConfigError, match="without --methods"):  # a partial refresh would mix two settings
        regression.check(PARAMS, str(stale), update=True, methods=["text_only"])
    assert json.loads(stale.read_text()) == exp


@pytest.mark.slow  # a subprocess that imports the package and runs a smoke run: 8-14 s
def test_check_regression_cli_exits_1_on_a_pushed_value(tmp_path):
    exp = json.loads(committed().read_text())
    key = next(k for k in exp["metrics"] if k.startswith("text_only/synth-mosi/"))
    exp["metrics"][key]["Has0_acc_2"] += 0.1  # expected better than we get: a regression
    pushed = tmp_path / "expected.json"
    pushed.write_text(json.dumps(exp))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MSAREPRO_PROGRESS": "0"}
    r = subprocess.run([str(BIN / "msarepro"), "check-regression", "--methods", "text_only", "--expected",
                        str(pushed)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REGRESSION" in r.stdout and key in r.stdout and "Has0_acc_2" in r.stdout


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_SMOKE else m
                                    for m in sorted(all_methods())])
def test_smoke_metrics_match_expected(method):
    """Every registered method's smoke run reproduces its committed test metrics within `regression.tolerance`;
    an improvement beyond tolerance fails too (the expected file is stale: refresh it)."""
    exp, findings = regression.run_and_compare(PARAMS, None, [method])
    assert findings, f"{method}: no smoke run and no expected values"
    note = regression.environment_note(exp) or ""
    assert all(x.status == "ok" for x in findings), (
        f"\n{regression.render(findings)}\n{note}\nif intended: msarepro check-regression --update")
