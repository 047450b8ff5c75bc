"""The pipeline: the grid derived from params.yaml and the registries, per-run staleness, GPU slots, Snakemake
dry runs (local and SLURM), and one end-to-end `dvc repro` on a tiny copy of the project with a variant in its
ablation grid (no-op second run, a method's change retrains that method and its variant, a variant's change only
the variant, `dvc exp run` of a method and of a variant, push/pull to a local remote, a fresh clone's repro clean)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from msarepro import config, sweep
from msarepro.config import ConfigError
from msarepro.data import DATASETS
from msarepro.methods import all_methods, load_params, method_of

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


# A variant of the tiny projects (params.yaml's own variants are replaced: the tests choose theirs).
TINY_VARIANTS = {"lf_dnn-lr2": {"method": "lf_dnn", "settings": {"lr": 0.002}, "rows": []}}


def tiny_params(methods=("text_only", "lf_dnn"), seeds=(1111,), ablate=(), **extra) -> dict:
    """params.yaml cut down to synth-mosi at scale 0.15, `methods` x `seeds` in the sweep, 2 epochs each; the
    variants are TINY_VARIANTS and the ablation grid runs `ablate` (none by default) on synth-mosi, first seed."""
    raw = config.load_raw(ROOT / "params.yaml")
    raw["model"], raw["dataset"], raw["seed"] = methods[0], "synth-mosi", seeds[0]
    raw["data"]["synth_scale"] = 0.15
    raw["sweep"] = {"methods": list(methods), "datasets": ["synth-mosi"], "seeds": list(seeds)}
    raw["pipeline"] = {"datasets": ["synth-mosi"], "pretrain_seed": 1111}
    raw["variants"] = json.loads(json.dumps(TINY_VARIANTS))
    raw["ablations"] = {"variants": list(ablate), "datasets": ["synth-mosi"], "seeds": [seeds[0]]}
    raw["evaluate"] = {"ci_level": 0.95, "bootstrap_resamples": 200, "bootstrap_seed": 0}
    for m in methods:
        raw["methods"][m]["max_epochs"] = 2
    raw.update(extra)
    return raw


def make_project(tmp: Path, raw: dict, git: bool = True) -> Path:
    """A copy of the project's pipeline files with a tiny params.yaml (the package itself is the installed one)."""
    p = tmp / "proj"
    p.mkdir(parents=True)
    for name in ("dvc.yaml", "Snakefile", ".dvcignore", ".gitignore"):
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
    """params.yaml's grid: sweep.methods x sweep.datasets x sweep.seeds, then each ablation variant and its full
    model on ablations.datasets x ablations.seeds, wherever the (variant's) method handles the dataset's family;
    each job once."""
    jobs, skipped = sweep.grid(params)
    methods = all_methods()
    ab = params.ablations
    ablated = [*ab.variants, *sorted({method_of(params, v) for v in ab.variants})]
    pairs = ([(m, d, params.sweep.seeds) for m in params.sweep.methods for d in params.sweep.datasets]
             + [(m, d, ab.seeds) for m in ablated for d in ab.datasets])
    handles = {(m, d): DATASETS[d].family in methods[method_of(params, m)].families for m, d, _ in pairs}
    expect = {(m, d, s) for m, d, seeds in pairs if handles[m, d] for s in seeds}
    got = [(j.method, j.dataset, j.seed) for j in jobs]
    assert set(got) == expect and len(got) == len(expect)
    assert set(skipped) == {(m, d) for m, d, _ in pairs if not handles[m, d]}
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
    # the runs load pretrain/<dataset>/<key>/, the key naming the pretraining settings (pretrain/stage.py)
    from msarepro.methods import pretrain_settings
    p = config.from_dict(with_aemt)
    key = pretrain_settings(p, "aemt", "synth-mosi")[1]
    assert sweep.pretrained_encoders(p, "aemt", "synth-mosi") == Path("pretrain/synth-mosi", key, "encoders.pt")
    assert sweep.pretrained_encoders(p, "text_only", "synth-mosi") is None


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


def test_a_run_depends_on_the_modules_it_imports(tmp_path, monkeypatch):
    """Editing methods/mult.py changes MulT's and AE-MT's code hash (AE-MT builds on MulT), not TFN's; editing
    methods/blocks.py changes the pretraining's; editing another method's file or the reports changes none."""
    from msarepro import codedeps

    pkg = tmp_path / "msarepro"
    shutil.copytree(codedeps.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codedeps, "PACKAGE_DIR", pkg)
    methods = ("mult", "aemt", "tfn", "text_only")

    def hashes():
        return {m: sweep.code_hash(m) for m in methods} | {"pretrain": sweep.pretrain_code_hash()}

    before = hashes()
    assert len(set(before.values())) == len(before)
    with open(pkg / "methods" / "mult.py", "a") as f:
        f.write("# edited\n")
    after = hashes()
    assert {k for k in before if before[k] != after[k]} == {"mult", "aemt", "pretrain"}
    with open(pkg / "methods" / "blocks.py", "a") as f:
        f.write("# edited\n")
    blocks = hashes()
    assert blocks["pretrain"] != after["pretrain"] and blocks["tfn"] != after["tfn"]
    for name in ("methods/infig.py", "report/tables.py", "evaluate.py"):
        with open(pkg / name, "a") as f:
            f.write("# edited\n")
    assert hashes() == blocks


def test_dvc_yaml_code_deps_are_the_import_closures():
    """Every stage of dvc.yaml lists exactly the source files of its import closure (`python -m msarepro.dvcdeps`
    writes them); the old hand lists missed e.g. methods/blocks.py for pretrain."""
    from msarepro import dvcdeps

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(dvcdeps.stage_modules()) == set(stages)  # no stage keeps a hand list
    listed = {}
    for name in stages:
        st = stages[name].get("do", stages[name])
        listed[name] = sorted(d for d in st["deps"] if d.startswith("src/"))
    assert listed == dvcdeps.stage_code_deps()
    assert "src/msarepro/methods/blocks.py" in listed["pretrain"]
    r = subprocess.run([sys.executable, "-m", "msarepro.dvcdeps", "--check"], cwd=ROOT, env=env(ROOT / "src"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dvcdeps_rewrites_and_checks_the_marked_blocks(tmp_path):
    from msarepro import dvcdeps

    text = (ROOT / "dvc.yaml").read_text()
    deps = dvcdeps.stage_code_deps()
    assert dvcdeps.render(text, deps) == text
    stale = text.replace("      - src/msarepro/train.py\n", "", 1)
    assert stale != text and dvcdeps.render(stale, deps) == text
    f = tmp_path / "dvc.yaml"
    f.write_text(stale)
    assert dvcdeps.main(["--dvc-yaml", str(f), "--check"]) == 1 and f.read_text() == stale
    assert dvcdeps.main(["--dvc-yaml", str(f)]) == 0 and f.read_text() == text
    with pytest.raises(ValueError, match="sweep"):
        dvcdeps.render(text.replace("# >>> code deps of sweep", "# sweep"), deps)


def _stage_outputs() -> dict[str, bool]:
    """Every output path of dvc.yaml (foreach items and ${dataset} filled in) -> whether DVC caches it."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for st in stages.values():
        body = st.get("do", st)
        for kind in ("outs", "metrics", "plots"):
            for o in body.get(kind) or []:
                path, opts = (o, {}) if isinstance(o, str) else next(iter(o.items()))
                path = path.replace("${item}", "synth-mosi").replace("${dataset}", "synth-mosi")
                out[path] = opts.get("cache", True)
    return out


def _git_ignored(paths: list[str]) -> set[str]:
    r = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(paths),
                       capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    return set(r.stdout.split())


def test_gitignore_covers_cached_outputs_and_commits_uncached_ones():
    """After `dvc repro` on a fresh clone git sees nothing new: every cached output (and anything inside one) is
    git-ignored, every uncached metric/plot is not (so that experiments commit it), and timings are ignored."""
    outs = _stage_outputs()
    cached = [p for p, c in outs.items() if c]
    inside = [f"{p}/x/y.json" for p in cached if not Path(p).suffix]
    assert {"checks/synth-mosi.json", "pretrain/synth-mosi", "runs/sweep", "runs/train/best.pt"} <= set(cached)
    timings = ["runs/train/timing.json", "runs/sweep/tfn/synth-mosi/1111/timing.json", "pretrain/synth-mosi/0123456789ab/timing.json"]
    ignored = _git_ignored(cached + inside + timings + [p for p, c in outs.items() if not c])
    assert set(cached + inside + timings) <= ignored
    assert {"runs/train/metrics.json", "runs/train/history.csv"} <= {p for p, c in outs.items() if not c}
    assert not {p for p, c in outs.items() if not c} & ignored


def test_timings_stay_out_of_dvc_hashes(tmp_path):
    """A stage whose output directory holds a timing.json that differs on every run: with the project's
    .dvcignore, `dvc repro -f` leaves dvc.lock unchanged."""
    p = tmp_path / "proj"
    p.mkdir()
    shutil.copy(ROOT / ".dvcignore", p / ".dvcignore")
    code = ("import json, os, time; os.makedirs('out/run', exist_ok=True); "
            "open('out/run/metrics.json', 'w').write('{}'); "
            "json.dump({'seconds': time.perf_counter_ns()}, open('out/run/timing.json', 'w'))")
    (p / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": f'{sys.executable} -c "{code}"',
                                                                 "outs": [{"out": {"persist": True}}]}}}))
    sh(["git", "init", "-q"], p)
    sh([str(BIN / "dvc"), "init", "-q"], p)
    sh([str(BIN / "dvc"), "repro"], p)
    lock, timing = (p / "dvc.lock").read_text(), (p / "out/run/timing.json").read_text()
    sh([str(BIN / "dvc"), "repro", "-f"], p)
    assert (p / "out/run/timing.json").read_text() != timing
    assert (p / "dvc.lock").read_text() == lock
    assert "nfiles: 1" in lock  # metrics.json only


def test_timings_are_the_only_difference_between_identical_runs(tmp_path, small_data):
    """Two runs of the same inputs write byte-identical files apart from timing.json, for a training run and for
    AE-MT's pretraining (whose metrics.json held `seconds`)."""
    from msarepro.pretrain.run import run_pretraining
    from msarepro.train import RunSpec, run

    from .conftest import fast_params

    params = fast_params(1)
    pre = config.from_dict(config.apply_overrides(config.load_raw(ROOT / "params.yaml"),
                                                  ["pretrain.presets.synth-sims.epochs=1"]))
    for name in ("a", "b"):
        run(params, RunSpec("text_only", str(small_data["synth-mosi"]), 1111, tmp_path / name / "run",
                            progress=False))
        run_pretraining(pre, str(small_data["synth-sims"]), 1111, tmp_path / name / "pre", progress=False)
    for kind in ("run", "pre"):
        a, b = tmp_path / "a" / kind, tmp_path / "b" / kind
        files = sorted(f.relative_to(a).as_posix() for f in a.rglob("*") if f.is_file())
        assert "timing.json" in files
        assert files == sorted(f.relative_to(b).as_posix() for f in b.rglob("*") if f.is_file())
        differ = [f for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
        assert set(differ) <= {"timing.json"}, differ
    assert "seconds" not in json.loads((tmp_path / "a/pre/metrics.json").read_text())


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
    raw = tiny_params(methods=("text_only", "lf_dnn", "infig"), seeds=(1111, 1112), ablate=("lf_dnn-lr2",))
    raw["sweep"]["datasets"] = ["synth-mosi", "synth-mvsa"]
    raw["pipeline"]["datasets"] = ["synth-mosi", "synth-mvsa"]
    p = make_project(tmp_path, raw, git=False)
    n_jobs = len(sweep.validate(config.from_dict(raw)))
    assert n_jobs >= 7  # text_only on both datasets, lf_dnn on synth-mosi, infig on synth-mvsa; x 2 seeds; a variant
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
# One tiny project serves every end-to-end test: a cold `dvc repro` costs minutes on 2 cores, so it runs once (the
# module-scoped fixture) and each test then works on its own state: the project itself, or a fresh clone of the
# fixture's commit (branch `results`), whatever ran before.
DVC = str(BIN / "dvc")
E2E_RUNS = ("text_only", "lf_dnn", "lf_dnn-lr2")  # the sweep's two methods and the ablation grid's variant


def ran_stages(out: str) -> set[str]:
    """`dvc repro` / `dvc exp run` output -> the stages it ran."""
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def sweep_log(out: str) -> list[str]:
    """The lines `msarepro sweep` printed: the runs it retrains and why, then its `sweep: N jobs ...` summary."""
    return [line for line in out.splitlines() if line.startswith(("sweep:", "runs/sweep"))]


def edit_params(p: Path, *overrides: str) -> None:
    """Change params.yaml as a user does (`-S`-style keys)."""
    raw = config.apply_overrides(yaml.safe_load((p / "params.yaml").read_text()), list(overrides))
    (p / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def run_stamps(p: Path) -> dict[str, int]:
    """run name -> its sweep run's metrics.json mtime (ns): a run retrained by the last repro has a new one."""
    return {n: (p / f"runs/sweep/{n}/synth-mosi/1111/metrics.json").stat().st_mtime_ns for n in E2E_RUNS}


@dataclass
class E2E:
    project: Path
    cold: str  # the cold `dvc repro`'s stdout
    clone: Path | None  # a fresh clone of the `results` commit, its own cold `dvc repro` running in the background
    clone_repro: subprocess.Popen | None
    clone_log: Path


@pytest.fixture(scope="module")
def e2e(request, tmp_path_factory):
    """The tiny project after one cold `dvc repro`, its results committed (branch `results` marks that commit):
    text_only and lf_dnn in the sweep, the variant lf_dnn-lr2 in the ablation grid, synth-mosi, 1 seed, 1 epoch.
    When the fresh-clone test is selected, its clone's cold repro starts at once in the background: it then runs
    beside the other test's mostly single-core sequence (on 2 cores that saves most of its minute)."""
    raw = tiny_params(ablate=("lf_dnn-lr2",))
    for m in ("text_only", "lf_dnn"):
        raw["methods"][m]["max_epochs"] = 1
    tmp = tmp_path_factory.mktemp("e2e")
    p = make_project(tmp, raw)
    out = sh([DVC, "repro"], p).stdout
    sh(["git", "add", "-A"], p)
    sh(["git", "commit", "-qm", "results"], p)
    sh(["git", "branch", "results"], p)
    clone, proc, log = None, None, tmp / "clone-repro.log"
    if any(getattr(item, "originalname", "") == "test_fresh_clone_repro_is_clean" for item in request.session.items):
        clone = tmp / "clone"
        sh(["git", "clone", "-q", "-b", "results", str(p), str(clone)], tmp)
        with open(log, "w") as f:
            proc = subprocess.Popen([DVC, "repro"], cwd=clone, env=env(clone / "src"), stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    yield E2E(p, out, clone, proc, log)
    if proc is not None and proc.poll() is None:  # the clone's test did not run to the end: stop its repro
        os.killpg(proc.pid, signal.SIGTERM)  # the repro's own process group (its stages and Snakemake's jobs)
        proc.wait()


@pytest.mark.slow
def test_dvc_pipeline_end_to_end(e2e):
    """The cold repro ran the sweep and the ablation grid; a second repro does nothing. A method's change retrains
    its runs and its variant's (except a setting the variant overrides) and leaves the single experiment of another
    model up to date. `dvc exp run -S model=` runs only the single experiment, for a method or a variant, and the
    experiments compare in `dvc exp show`, `dvc metrics diff` and `dvc plots diff`. push/pull to a local remote. A
    variant's change retrains that variant's runs only."""
    p, cold = e2e.project, e2e.cold
    for f in ("reports/tables/synth-mosi.md", "reports/tables/synth-mosi.tex", "reports/README.md",
              "reports/metrics/metrics.json", "runs/train/metrics.json", "runs/train/resolved.json",
              "pretrain/synth-mosi/skipped.json", "reports/robustness/synth-mosi.csv",
              "reports/tables/robustness/synth-mosi.md", "reports/figures/robustness/synth-mosi.png"):
        assert (p / f).exists(), f
    robust = pd.read_csv(p / "reports/robustness/synth-mosi.csv")  # the sweep's methods, not the ablation's variant
    assert set(robust["method"]) == {"text_only", "lf_dnn"} and "robustness/synth-mosi.md" in (
        p / "reports/README.md").read_text()
    md = (p / "reports/tables/synth-mosi.md").read_text()
    assert "| text_only |" in md and "| lf_dnn |" in md
    assert sweep_log(cold)[-1].endswith("3 jobs in the grid, 3 to run, 0 up to date"), sweep_log(cold)
    assert all((p / f"runs/sweep/{n}/synth-mosi/1111/metrics.json").exists() for n in E2E_RUNS)  # with the ablation
    variant_run = json.loads((p / "runs/sweep/lf_dnn-lr2/synth-mosi/1111/config.json").read_text())
    assert variant_run["model"] == "lf_dnn-lr2" and variant_run["method"]["lr"] == 0.002
    assert variant_run["variant"] == {"name": "lf_dnn-lr2", "method": "lf_dnn", "settings": {"lr": 0.002},
                                      "pretrain": {}}
    assert "Data and pipelines are up to date" in sh([DVC, "repro"], p).stdout

    # The method's block: lf_dnn and its variant retrain (the variant keeps its own lr), text_only does not. Neither
    # that nor another method's (tfn's) change retrains the single experiment (text_only): `resolve` reruns (DVC
    # cannot tell which block a `model` reads) and writes the same record, so `train` stays up to date.
    stamps = run_stamps(p)
    edit_params(p, "methods.lf_dnn.lr=0.003", "methods.lf_dnn.weight_decay=0.01", "methods.tfn.lr=0.01")
    out = sh([DVC, "repro"], p).stdout
    assert ran_stages(out) == {"resolve", "sweep", "robustness", "evaluate", "tables", "figures"}, out
    said = sweep_log(out)
    assert said[-1].endswith("3 jobs in the grid, 2 to run, 1 up to date"), said
    assert any(line.startswith("runs/sweep/lf_dnn/") and "(config.lr, config.weight_decay)" in line for line in said)
    assert any(line.startswith("runs/sweep/lf_dnn-lr2/") and "(config.weight_decay)" in line for line in said), said
    now = run_stamps(p)
    assert {n for n in E2E_RUNS if now[n] != stamps[n]} == {"lf_dnn", "lf_dnn-lr2"}

    # Single experiments: a method, then a variant (with another seed); neither runs the sweep.
    sh(["git", "add", "-A"], p)
    sh(["git", "commit", "-qm", "baseline"], p)
    out = sh([DVC, "exp", "run", "-n", "other-model", "-S", "model=lf_dnn"], p).stdout
    assert "Running stage 'train'" in out and "Running stage 'sweep'" not in out
    out = sh([DVC, "exp", "run", "-n", "variant", "-S", "model=lf_dnn-lr2", "-S", "seed=1112"], p).stdout
    assert {"resolve", "train"} <= ran_stages(out) and "sweep" not in ran_stages(out), out
    single = json.loads((p / "runs/train/config.json").read_text())
    assert single["model"] == "lf_dnn-lr2" and single["seed"] == 1112 and single["method"]["lr"] == 0.002
    assert single["variant"] == {"name": "lf_dnn-lr2", "method": "lf_dnn", "settings": {"lr": 0.002}, "pretrain": {}}
    assert json.loads((p / "runs/train/resolved.json").read_text())["variant_of"] == "lf_dnn"
    shown = json.loads(sh([DVC, "exp", "show", "--json"], p).stdout)
    rows = _exp_rows(shown)
    assert {"other-model", "variant"} <= set(rows), rows
    lf, var = rows["other-model"], rows["variant"]
    assert lf["model"] == "lf_dnn" and var["model"] == "lf_dnn-lr2" and var["seed"] == 1112
    assert isinstance(lf["test"]["Has0_acc_2"], float) and isinstance(var["test"]["Has0_acc_2"], float)
    assert "Has0_acc_2" in sh([DVC, "metrics", "show"], p).stdout
    diff = json.loads(sh([DVC, "metrics", "diff", "other-model", "variant", "--json"], p).stdout)
    mae = diff["runs/train/metrics.json"]["test.MAE"]
    assert mae["old"] == lf["test"]["MAE"] and mae["new"] == var["test"]["MAE"]
    plots = json.loads(sh([DVC, "plots", "diff", "other-model", "variant", "--json"], p).stdout)["data"]
    curve = plots["dvc.yaml::runs/train/history.csv"][0]["content"]["data"]["values"]
    assert {row["rev"] for row in curve} == {"other-model", "variant"}

    # push, lose the cache and the outputs, pull: everything is back and up to date.
    text_run = p / "runs/sweep/text_only/synth-mosi/1111/metrics.json"
    sh([DVC, "push"], p)
    shutil.rmtree(p / ".dvc" / "cache")
    shutil.rmtree(p / "data" / "synth-mosi")
    shutil.rmtree(p / "runs" / "sweep")
    sh([DVC, "pull"], p)
    assert (p / "data/synth-mosi/manifest.json").exists() and text_run.exists()
    assert "Data and pipelines are up to date" in sh([DVC, "status"], p).stdout

    # The variant's override: that variant's sweep runs only. (`dvc repro sweep`: the stages after it would only
    # repeat what the first change showed.)
    stamps = run_stamps(p)
    edit_params(p, "variants.lf_dnn-lr2.settings.lr=0.005")
    out = sh([DVC, "repro", "sweep"], p).stdout
    assert "sweep" in ran_stages(out) and "train" not in ran_stages(out), out
    said = sweep_log(out)
    assert said[-1].endswith("3 jobs in the grid, 1 to run, 2 up to date"), said
    assert [line.split(":")[0] for line in said[:-1]] == ["runs/sweep/lf_dnn-lr2/synth-mosi/1111"], said
    assert "(config.lr)" in said[0]
    now = run_stamps(p)
    assert {n for n in E2E_RUNS if now[n] != stamps[n]} == {"lf_dnn-lr2"}


def _exp_rows(shown) -> dict[str, dict]:
    """`dvc exp show --json` -> {experiment name or 'workspace'/branch: its runs/train/metrics.json data}."""
    rows = {}

    def walk(node):
        if isinstance(node, dict):
            metrics = ((node.get("data") or {}).get("metrics") or {}).get("runs/train/metrics.json")
            if "rev" in node and metrics is not None:
                rows[node.get("name") or node["rev"]] = metrics.get("data")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(shown)
    return rows


@pytest.mark.slow
def test_fresh_clone_repro_is_clean(e2e):
    """A fresh clone of the tiny project's committed results: git holds the uncached metrics and plots and no
    cached output; its `dvc repro` (no cache, no remote: every stage runs again, the ablation grid too) leaves
    `git status` clean and dvc.lock unchanged."""
    clone = e2e.clone
    tracked = sh(["git", "ls-files"], clone).stdout.split()
    assert {"runs/train/metrics.json", "runs/train/history.csv", "runs/train/resolved.json"} <= set(tracked)
    assert not [f for f in tracked if f.startswith(("data/", "checks/", "pretrain/", "runs/sweep/"))], tracked
    rc = e2e.clone_repro.wait(timeout=1200)
    out = e2e.clone_log.read_text()
    assert rc == 0, f"dvc repro in the clone failed ({rc}):\n{out[-3000:]}"
    assert sweep_log(out)[-1].endswith("3 jobs in the grid, 3 to run, 0 up to date"), out
    assert sh(["git", "status", "--porcelain"], clone).stdout == ""


def test_preset_of_a_synth_like_set_before_its_manifest_exists(tmp_path):
    """Before synth-like-mosi is generated, the sweep already resolves it as MOSI (its manifest will say so): the
    pretraining key and encoders path are the MOSI preset's, not the block defaults' (issue 17's review)."""
    from msarepro.data.registry import preset_of
    from msarepro.methods import pretrain_settings
    assert preset_of("synth-like-mosi") == "mosi" and preset_of("synth-mosi") == "synth-mosi"
    assert preset_of("synth-like-mosi", {"preset": "sims"}) == "sims"  # the manifest wins once it exists
    raw = tiny_params(methods=("aemt",))
    raw["data"] = {"root": str(tmp_path / "nothing-here")}
    p = config.from_dict(raw)
    key = pretrain_settings(p, "aemt", "mosi")[1]
    assert key != pretrain_settings(p, "aemt", "synth-like-mosi")[1]  # else the test could not tell them apart
    assert sweep.pretrained_encoders(p, "aemt", "synth-like-mosi") == Path("pretrain/synth-like-mosi", key,
                                                                          "encoders.pt")
