"""The pipeline: the grid derived from params.yaml and the registries, per-run staleness, GPU slots, Snakemake
dry runs (local and SLURM), and one end-to-end `dvc repro` on a tiny copy of the project
(no-op second run, one method's change retrains only that method, `dvc exp run`, push/pull to a local remote)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from msarepro import config, sweep
from msarepro.config import ConfigError
from msarepro.data import DATASETS
from msarepro.methods import all_methods

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env(src: Path | None = None) -> dict:
    """The subprocesses' environment; with `src`, they import msarepro from that copy of the package (so that
    the code a test runs cannot change under it)."""
    extra = {"PYTHONPATH": str(src)} if src else {}
    return {**os.environ, **extra, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
            "OMP_NUM_THREADS": "1", "MSAREPRO_PROGRESS": "0", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    src = cwd / "src"
    r = subprocess.run(cmd, cwd=cwd, env=env(src if (src / "msarepro").is_dir() else None), capture_output=True,
                       text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def tiny_params(methods=("text_only", "lf_dnn"), seeds=(1111,), **extra) -> dict:
    raw = config.load_raw(ROOT / "params.yaml")
    raw["model"], raw["dataset"], raw["seed"] = methods[0], "synth-mosi", seeds[0]
    raw["data"]["synth_scale"] = 0.15
    raw["sweep"] = {"methods": list(methods), "datasets": ["synth-mosi"], "seeds": list(seeds)}
    raw["pipeline"] = {"datasets": ["synth-mosi"], "pretrain_seed": 1111}
    raw["evaluate"] = {"ci_level": 0.95, "bootstrap_resamples": 200, "bootstrap_seed": 0}
    for m in methods:
        raw["methods"][m]["max_epochs"] = 2
    raw.update(extra)
    return raw


def make_project(tmp: Path, raw: dict, git: bool = True) -> Path:
    """A copy of the project's pipeline files with a tiny params.yaml (the package itself is the installed one)."""
    p = tmp / "proj"
    p.mkdir(parents=True)
    for name in ("dvc.yaml", "Snakefile", ".dvcignore"):
        shutil.copy(ROOT / name, p / name)
    for name in ("workflow", "profiles", "reports/paper_results"):
        shutil.copytree(ROOT / name, p / name)
    shutil.copytree(ROOT / "src" / "msarepro", p / "src" / "msarepro", ignore=shutil.ignore_patterns("__pycache__"))
    (p / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    if git:
        sh(["git", "init", "-q"], p)
        sh([str(BIN / "dvc"), "init", "-q"], p)
        sh([str(BIN / "dvc"), "remote", "add", "-d", "local", str(tmp / "remote")], p)
        sh(["git", "add", "-A"], p)
        sh(["git", "commit", "-qm", "init"], p)
    return p


# ------------------------------------------------------------------------------------------------ the grid
def test_grid_comes_from_params_and_registries(params):
    jobs, skipped = sweep.grid(params)
    methods = all_methods()
    expect = {(m, d, s) for m in params.sweep.methods for d in params.sweep.datasets for s in params.sweep.seeds
              if DATASETS[d].family in methods[m].families}
    assert {(j.method, j.dataset, j.seed) for j in jobs} == expect
    assert set(skipped) == {(m, d) for m in params.sweep.methods for d in params.sweep.datasets
                            if DATASETS[d].family not in methods[m].families}
    assert sweep.validate(params) == jobs


def test_validate_names_the_bad_key():
    bad = tiny_params()
    bad["sweep"]["datasets"] = ["synth-sims"]  # not prepared by pipeline.datasets
    with pytest.raises(ConfigError, match="pipeline.datasets"):
        sweep.validate(config.from_dict(bad))
    dup = tiny_params(seeds=(1, 1))
    with pytest.raises(ConfigError, match="sweep.seeds: duplicates"):
        sweep.validate(config.from_dict(dup))
    unknown = tiny_params()
    unknown["sweep"]["datasets"] = ["nope"]
    with pytest.raises(ConfigError, match="not a registered dataset"):
        sweep.validate(config.from_dict(unknown))


def test_pretrain_only_where_aemt_runs():
    p = config.from_dict(tiny_params())
    assert sweep.pretrain_datasets(p) == []
    with_aemt = tiny_params(methods=("text_only", "aemt"))
    assert sweep.pretrain_datasets(config.from_dict(with_aemt)) == ["synth-mosi"]
    single = tiny_params()
    single["model"], single["dataset"] = "aemt", "synth-mosi"
    assert sweep.pretrain_datasets(config.from_dict(single)) == ["synth-mosi"]


def test_fingerprint_changes_only_for_the_changed_method(small_data):
    raw = tiny_params()
    raw["data"]["root"] = str(small_data["synth-mosi"].parent)
    before = config.from_dict(raw)
    after = config.from_dict(config.apply_overrides(raw, ["methods.lf_dnn.lr=0.005"]))
    a, b = sweep.Job("text_only", "synth-mosi", 1111), sweep.Job("lf_dnn", "synth-mosi", 1111)
    assert sweep.fingerprint(before, a) == sweep.fingerprint(after, a)
    fb, fa = sweep.fingerprint(before, b), sweep.fingerprint(after, b)
    assert fb != fa and fa["config"]["lr"] == 0.005
    assert sweep._changed(fb, fa) == "config.lr"
    assert fb["dataset_files"] and fb["dataset_files"] == json.loads(
        (small_data["synth-mosi"] / "manifest.json").read_text())["files"]
    assert sweep.code_hash("text_only") != sweep.code_hash("lf_dnn")  # each leaves out the other's module


def test_prepare_prunes_stale_and_foreign_runs(tmp_path, small_data):
    raw = tiny_params()
    raw["data"]["root"] = str(small_data["synth-mosi"].parent)
    p = config.from_dict(raw)
    root = tmp_path / "sweep"
    jobs, todo = sweep.prepare(p, root, log=lambda *_: None)
    assert todo == jobs and all((j.run_dir(root) / "fingerprint.json").exists() for j in jobs)
    for j in jobs:  # pretend they ran
        (j.run_dir(root) / "metrics.json").write_text("{}")
    foreign = root / "tfn" / "synth-mosi" / "1111"
    foreign.mkdir(parents=True)
    assert sweep.prepare(p, root, log=lambda *_: None)[1] == []
    assert not foreign.exists()
    changed = config.from_dict(config.apply_overrides(raw, ["methods.lf_dnn.lr=0.005"]))
    _, todo = sweep.prepare(changed, root, log=lambda *_: None)
    assert [j.method for j in todo] == ["lf_dnn"]
    assert not (todo[0].run_dir(root) / "metrics.json").exists()
    assert (sweep.Job("text_only", "synth-mosi", 1111).run_dir(root) / "metrics.json").exists()


# ----------------------------------------------------------------------------------------------- GPU slots
def test_gpu_slots_are_exclusive(tmp_path):
    from msarepro.gpuslot import acquire, main

    s0, l0 = acquire(2, tmp_path)
    s1, l1 = acquire(2, tmp_path)
    assert {s0, s1} == {0, 1}
    with pytest.raises(TimeoutError):
        acquire(2, tmp_path, poll_s=0.05, timeout_s=0.2)
    l0.close()
    s2, l2 = acquire(2, tmp_path, timeout_s=1)
    assert s2 == s0
    l1.close(), l2.close()
    out = tmp_path / "dev.txt"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))"
    assert main(["--gpus", "3", "--lockdir", str(tmp_path), "--", sys.executable, "-c", code]) == 0
    assert out.read_text() == "0"


# -------------------------------------------------------------------------------------------- Snakemake
def test_snakemake_dry_runs_list_one_job_per_run(tmp_path):
    raw = tiny_params(methods=("text_only", "lf_dnn", "infig"), seeds=(1111, 1112))
    raw["sweep"]["datasets"] = ["synth-mosi", "synth-mvsa"]
    raw["pipeline"]["datasets"] = ["synth-mosi", "synth-mvsa"]
    p = make_project(tmp_path, raw, git=False)
    n_jobs = len(sweep.validate(config.from_dict(raw)))
    assert n_jobs >= 6  # text_only on both datasets, lf_dnn on synth-mosi, infig on synth-mvsa; x 2 seeds
    for profile in ("profiles/local-cpu", "profiles/local-gpu", "profiles/slurm"):
        r = sh([str(BIN / "snakemake"), "--profile", profile, "-n", "--quiet", "rules"], p)
        counts = dict(line.split()[:2] for line in r.stdout.splitlines() if line.split()[:1] in (["train"], ["download"]))
        assert counts == {"train": str(n_jobs), "download": "2"}, r.stdout
    r = sh([str(BIN / "snakemake"), "--lint"], p)
    assert "good condition" in r.stdout + r.stderr
    bad = dict(raw, sweep={**raw["sweep"], "methods": ["nope"]})
    (p / "params.yaml").write_text(yaml.safe_dump(bad))
    r = sh([str(BIN / "snakemake"), "-n"], p, check=False)
    assert r.returncode != 0 and "unknown method 'nope'" in r.stdout + r.stderr


# ----------------------------------------------------------------------------------------- dvc end to end
@pytest.mark.slow
def test_dvc_pipeline_end_to_end(tmp_path):
    p = make_project(tmp_path, tiny_params())
    dvc = str(BIN / "dvc")
    sh([dvc, "repro"], p)
    for f in ("reports/tables/synth-mosi.md", "reports/tables/synth-mosi.tex", "reports/README.md",
              "reports/metrics/metrics.json", "runs/train/metrics.json", "pretrain/synth-mosi/skipped.json"):
        assert (p / f).exists(), f
    md = (p / "reports/tables/synth-mosi.md").read_text()
    assert "| text_only |" in md and "| lf_dnn |" in md
    assert "Data and pipelines are up to date" in sh([dvc, "repro"], p).stdout

    text_run = p / "runs/sweep/text_only/synth-mosi/1111/metrics.json"
    stamp = text_run.stat().st_mtime_ns
    raw = yaml.safe_load((p / "params.yaml").read_text())
    raw["methods"]["lf_dnn"]["lr"] = 0.002
    (p / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = sh([dvc, "repro"], p).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"sweep", "evaluate", "tables"}, out
    said = [line for line in out.splitlines() if line.startswith(("sweep:", "runs/sweep"))]
    assert said[-1].endswith("2 jobs in the grid, 1 to run, 1 up to date"), said
    assert any("lf_dnn" in line and "(config.lr)" in line for line in said), said
    assert text_run.stat().st_mtime_ns == stamp  # the other method's run was not retrained

    sh(["git", "add", "-A"], p)
    sh(["git", "commit", "-qm", "baseline"], p)
    out = sh([dvc, "exp", "run", "-n", "other-model", "-S", "model=lf_dnn"], p).stdout
    assert "Running stage 'train'" in out and "Running stage 'sweep'" not in out
    shown = json.loads(sh([dvc, "exp", "show", "--json"], p).stdout)
    assert "other-model" in json.dumps(shown)
    assert "Has0_acc_2" in sh([dvc, "metrics", "show"], p).stdout

    sh([dvc, "push"], p)
    shutil.rmtree(p / ".dvc" / "cache")
    shutil.rmtree(p / "data" / "synth-mosi")
    shutil.rmtree(p / "runs" / "sweep")
    sh([dvc, "pull"], p)
    assert (p / "data/synth-mosi/manifest.json").exists() and text_run.exists()
    assert "Data and pipelines are up to date" in sh([dvc, "status"], p).stdout
