"""The training grid of the `sweep` stage: (method, dataset, seed) jobs, derived from params.yaml and the registries.

The grid is sweep.methods x sweep.datasets x sweep.seeds plus the ablation grid (`ablations:`: variants and their
full models x ablations.datasets x ablations.seeds). A job's `method` is the run's name: a registered method or a
variant (`variants:` in params.yaml); its runs live in runs/sweep/<name>/<dataset>/<seed>/.

Division of labour (docs/architecture.md): DVC decides whether the `sweep` stage is stale; inside it, this module
decides which *runs* are stale, and Snakemake (Snakefile) schedules the missing ones over CPU slots or GPUs.

A run is up to date when its `fingerprint.json` equals the fingerprint computed now from:
    the method's resolved Config for the dataset's preset, params.yaml's `data:` section, the seed, the runtime
    settings that can change numbers (`runtime.numerics()`: precision, tf32, compile; not pin_memory or load),
    the dataset files' SHA-256 (from its manifest), the pretrained encoders' hash (AE-MT only: the encoders.pt its
    resolved `pretrained` path names, one per pretraining setting),
    and a hash of the code the run executes: the package's static import closure (codedeps.py) of the training
    loop (TRAIN_MODULE) and of the method's own module, so a method's parent or building blocks count too.
So changing one method's learning rate (or editing one method's file) retrains the runs whose code includes it
(editing methods/mult.py retrains MulT's runs and AE-MT's, which builds on MulT); every
other run directory is kept (the stage's output is `persist: true` in dvc.yaml). Stale runs and runs that left
the grid are deleted before Snakemake starts; Snakemake then runs exactly the jobs whose metrics.json is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import codedeps
from .config import ConfigError, Params, to_jsonable

SWEEP_ROOT = Path("runs/sweep")
PRETRAIN_ROOT = Path("pretrain")


@dataclass(frozen=True)
class Job:
    method: str
    dataset: str
    seed: int

    def run_dir(self, root: Path = SWEEP_ROOT) -> Path:
        return Path(root) / self.method / self.dataset / str(self.seed)


def dataset_family(name: str) -> str:
    from .data import DATASETS
    if name not in DATASETS:
        raise ConfigError(f"sweep.datasets: {name!r} is not a registered dataset; registered: "
                          f"{', '.join(sorted(DATASETS))}")
    return DATASETS[name].family


def _jobs(params: Params, names, datasets, seeds) -> tuple[list[Job], list[tuple[str, str]]]:
    from .methods import get_method, method_of

    jobs, skipped = [], []
    for m in names:
        cls = get_method(method_of(params, m))
        for d in datasets:
            if dataset_family(d) not in cls.families:
                skipped.append((m, d))
                continue
            jobs += [Job(m, d, s) for s in seeds]
    return jobs, skipped


def ablation_grid(params: Params) -> tuple[list[Job], list[tuple[str, str]]]:
    """The `ablations:` grid: each variant, and the full model it is compared with, on every dataset of
    `ablations.datasets` its method handles, for every seed of `ablations.seeds`."""
    ab = params.ablations
    if not ab.variants:
        return [], []
    from .methods import method_of
    full = sorted({method_of(params, v) for v in ab.variants})
    return _jobs(params, [*ab.variants, *full], ab.datasets, ab.seeds)


def grid(params: Params) -> tuple[list[Job], list[tuple[str, str]]]:
    """The jobs of the `sweep` stage: sweep.methods x sweep.datasets x sweep.seeds, then the ablation grid (jobs
    already in the first are not repeated). -> (jobs, skipped (name, dataset) pairs whose dataset family the
    method does not handle)."""
    jobs, skipped = _jobs(params, params.sweep.methods, params.sweep.datasets, params.sweep.seeds)
    more, more_skipped = ablation_grid(params)
    seen = set(jobs)
    jobs += [j for j in more if not (j in seen or seen.add(j))]
    return jobs, skipped + [p for p in more_skipped if p not in skipped]


def prepared_datasets(params: Params) -> list[str]:
    """The datasets the download/features stages prepare (params.yaml `pipeline.datasets`)."""
    return list(params.pipeline.datasets)


def validate(params: Params) -> list[Job]:
    """Check the sweep before any job starts; -> the jobs. Raises ConfigError naming the offending key."""
    sw = params.sweep
    for key, values in (("methods", sw.methods), ("datasets", sw.datasets), ("seeds", sw.seeds)):
        if not values:
            raise ConfigError(f"sweep.{key}: empty; list at least one")
        if len(set(values)) != len(values):
            raise ConfigError(f"sweep.{key}: duplicates in {list(values)}")
    ab = params.ablations
    for key, values in (("variants", ab.variants), ("datasets", ab.datasets), ("seeds", ab.seeds)):
        if len(set(values)) != len(values):
            raise ConfigError(f"ablations.{key}: duplicates in {list(values)}")
    if ab.variants and not (ab.datasets and ab.seeds):
        raise ConfigError("ablations: variants are listed but datasets or seeds is empty; list at least one of each "
                          "(or empty ablations.variants to run no ablation)")
    prepared = prepared_datasets(params)
    for d in list(sw.datasets) + list(ab.datasets if ab.variants else ()) + [params.dataset]:
        dataset_family(d)
        if d not in prepared:
            raise ConfigError(f"dataset {d!r} is used (sweep.datasets, ablations.datasets or dataset) but is not in "
                              f"params.yaml's pipeline.datasets {prepared}, so no download stage prepares it; add it "
                              "there")
    jobs, _ = grid(params)
    if not jobs:
        raise ConfigError("sweep: no (method, dataset) pair is compatible (method families vs dataset families)")
    from .methods import method_config
    for name, d in dict.fromkeys((j.method, j.dataset) for j in jobs):  # every run's settings, before any job starts
        method_config(params, name, preset_of(d, _manifest(params, d)))
    return jobs


def pretrain_needs(params: Params) -> dict[str, list[str]]:
    """dataset -> the run names (methods or variants) whose runs load pretrained encoders there: the grid's (sweep
    and ablations) and the single experiment's (`model` on `dataset`); a run with `pretrained: ""` loads none."""
    from .methods import get_method, method_of

    needs: dict[str, set[str]] = {}
    jobs, _ = grid(params)
    single = [Job(params.model, params.dataset, params.seed)]
    for j in jobs + single:
        cls = get_method(method_of(params, j.method))
        if cls.uses_pretraining and dataset_family(j.dataset) in cls.families \
                and pretrained_encoders(params, j.method, j.dataset) is not None:  # pretrained: "" loads none
            needs.setdefault(j.dataset, set()).add(j.method)
    return {d: sorted(v) for d, v in sorted(needs.items())}


def pretrain_datasets(params: Params) -> list[str]:
    """Datasets whose pretrained encoders the `pretrain` stage must produce (pretrain_needs)."""
    return list(pretrain_needs(params))


# The modules whose import closures are the code of a training run (plus the method's module) and of AE-MT's
# encoder pretraining. Everything else follows from what these import (codedeps.py).
TRAIN_MODULE = "msarepro.train"
PRETRAIN_MODULE = "msarepro.pretrain.run"


def method_module(method: str) -> str:
    """The module that defines a registered method's class (a variant's: its method's; see run_code_modules)."""
    from .methods import get_method
    return get_method(method).__module__


def run_code_modules(method: str) -> set[str]:
    """The package modules a training run of `method` executes: the training loop's import closure and the
    method module's. The registry's discovery of the other method modules is not an import (codedeps.py)."""
    return codedeps.closure([TRAIN_MODULE, method_module(method)])


def _hash_modules(modules: set[str]) -> str:
    files = codedeps.module_files()
    h = hashlib.sha256()
    for name in sorted(modules):
        p = files[name]
        h.update(p.relative_to(codedeps.PACKAGE_DIR).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def code_hash(method: str) -> str:
    """SHA-256 over the sources a run of `method` executes (run_code_modules). Editing the reports, the
    evaluation or another method's module therefore retrains nothing; editing a module the method imports
    (AE-MT imports MulT) retrains it."""
    return _hash_modules(run_code_modules(method))


def pretrain_code_hash() -> str:
    """SHA-256 over the sources AE-MT's encoder pretraining executes (the closure of PRETRAIN_MODULE)."""
    return _hash_modules(codedeps.closure([PRETRAIN_MODULE]))


def preset_of(dataset: str, man: dict) -> str:
    """The dataset's preset (data.registry.preset_of: its manifest's, or the registry's before the manifest exists)."""
    from .data.registry import preset_of as registered
    return registered(dataset, man)


def _manifest(params: Params, dataset: str) -> dict:
    p = Path(params.data.root) / dataset / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else {}


def pretrained_encoders(params: Params, name: str, dataset: str) -> Path | None:
    """The encoders.pt a run of `name` (method or variant) on `dataset` loads; None when it loads none."""
    from .methods import get_method, method_config, method_of

    cls = get_method(method_of(params, name))
    if not cls.uses_pretraining:
        return None
    man = _manifest(params, dataset)
    cfg = method_config(params, name, preset_of(dataset, man))
    return Path(cfg.pretrained.format(dataset=man.get("name") or dataset)) / "encoders.pt" if cfg.pretrained else None


def fingerprint(params: Params, job: Job) -> dict:
    """Everything a run's result depends on (see module docstring), as a JSON-able dict. `job.method` is the
    run's name (a method or a variant): its resolved Config holds the variant's settings, so editing a variant
    retrains its runs only and editing the method's block retrains the method and all its variants."""
    from .methods import method_config, method_of

    man = _manifest(params, job.dataset)
    preset = preset_of(job.dataset, man)
    method = method_of(params, job.method)
    fp = {"method": job.method, "dataset": job.dataset, "seed": job.seed, "preset": preset,
          "config": to_jsonable(method_config(params, job.method, preset)), "data": to_jsonable(params.data),
          "runtime": params.runtime.numerics(), "dataset_files": man.get("files", {}), "code": code_hash(method)}
    if job.method != method:
        fp["variant_of"] = method
    enc = pretrained_encoders(params, job.method, job.dataset)
    if enc is not None:
        fp["pretrained"] = _sha256(enc) if enc.exists() else None
    return fp


def experiment_record(params: Params) -> dict:
    """The single experiment of the `train` stage (`model` on `dataset` with `seed`), resolved: its name, method,
    dataset preset, Config (a variant's settings applied), data settings and dataset files. The `resolve` DVC stage
    writes it and the `train` stage depends on the file, so that the single experiment retrains exactly when what
    it runs changes, whether `model` names a method or a variant (DVC's params cannot follow `variants.<model>.method`)."""
    fp = fingerprint(params, Job(params.model, params.dataset, params.seed))
    fp.pop("code")  # the train stage lists its code itself
    fp.pop("pretrained", None)  # and depends on the pretrain stage's output
    return fp


def _sha256(path: Path) -> str:
    from .io import sha256_file
    return sha256_file(path)


def prepare(params: Params, root: Path = SWEEP_ROOT, log=print) -> tuple[list[Job], list[Job]]:
    """Delete stale runs and runs outside the grid; write each job's fingerprint. -> (all jobs, jobs to run)."""
    from .io import write_json

    jobs = validate(params)
    root = Path(root)
    wanted = {j.run_dir(root) for j in jobs}
    if root.exists():  # runs that left the grid
        for d in sorted(root.glob("*/*/*")):
            if d.is_dir() and d not in wanted:
                log(f"removing {d}: no longer in the sweep")
                shutil.rmtree(d)
    todo = []
    for j in jobs:
        d = j.run_dir(root)
        fp = fingerprint(params, j)
        old = d / "fingerprint.json"
        if old.exists() and json.loads(old.read_text()) != fp:
            log(f"{d}: inputs changed since it ran ({_changed(json.loads(old.read_text()), fp)}); retraining")
            shutil.rmtree(d)
        if not (d / "metrics.json").exists() or not old.exists():
            todo.append(j)
            if d.exists():
                shutil.rmtree(d)
            write_json(old, fp)
    return jobs, todo


def _changed(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if "config" in keys and isinstance(a.get("config"), dict):
        sub = sorted(k for k in set(a["config"]) | set(b["config"]) if a["config"].get(k) != b["config"].get(k))
        keys = [k for k in keys if k != "config"] + [f"config.{k}" for k in sub]
    return ", ".join(keys)


def snakemake_command(params_file: str, profile: str | None, cores: int | None, dry_run: bool,
                      extra: list[str] | None = None) -> list[str]:
    exe = Path(sys.executable).parent / "snakemake"
    cmd = [str(exe) if exe.exists() else "snakemake", "--snakefile", "Snakefile", "--configfile", params_file]
    if profile:
        cmd += ["--profile", profile]
    if cores:
        cmd += ["--cores", str(cores)]
    if dry_run:
        cmd += ["--dry-run"]
    return cmd + list(extra or [])


def run(params_file: str = "params.yaml", overrides: list[str] | None = None, profile: str | None = None,
        cores: int | None = None, dry_run: bool = False, extra: list[str] | None = None) -> int:
    """The `sweep` stage: prune stale runs, then let Snakemake run the missing jobs. -> exit status."""
    from .methods import load_params

    if overrides:
        raise ConfigError("msarepro sweep takes no -S overrides: Snakemake's jobs read the params file itself. "
                          "Write the overrides into a params file and pass --params FILE.")
    params = load_params(params_file)
    profile = profile or os.environ.get("MSAREPRO_PROFILE") or "profiles/local-cpu"
    if dry_run:
        jobs = validate(params)
        print(f"sweep: {len(jobs)} jobs (dry run: nothing pruned)")
    else:
        jobs, todo = prepare(params)
        print(f"sweep: {len(jobs)} jobs in the grid, {len(todo)} to run, {len(jobs) - len(todo)} up to date")
    cmd = snakemake_command(params_file, profile, cores, dry_run, extra)
    print("+ " + " ".join(cmd), flush=True)
    # The jobs call `msarepro`: make this interpreter's scripts folder (the project's venv) come first.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    return subprocess.call(cmd, env=env)


# ---- the train stage reusing a sweep run --------------------------------------------------------------------

RUN_FILES = ("metrics.json", "predictions.csv", "history.csv", "config.json", "best.pt", "checkpoint.pt",
             "timing.json")


def reusable_run(params: Params, job: Job, device_type: str, root: Path = SWEEP_ROOT) -> Path | None:
    """The sweep's finished run of `job` when it is exactly the run that training `job` here would produce: its
    fingerprint.json equals the fingerprint computed now (settings, data, seed, code, pretrained encoders), its
    metrics.json exists, and it trained on the same device type (timing.json's `device`; CPU runs are bit for bit
    reproducible, a GPU's are not those of a CPU). Else None."""
    d = job.run_dir(Path(root))
    try:
        fp = json.loads((d / "fingerprint.json").read_text())
        timing = json.loads((d / "timing.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if timing.get("device") != device_type or not all((d / f).exists() for f in RUN_FILES):
        return None
    return d if fp == fingerprint(params, job) else None


def copy_run(src: Path, out: Path) -> None:
    """Copy a run directory's outputs (RUN_FILES and epochs/) into `out`, each file atomically."""
    from .io import atomic_path

    src, out = Path(src), Path(out)
    files = [Path(f) for f in RUN_FILES] + sorted(p.relative_to(src) for p in (src / "epochs").rglob("*") if p.is_file())
    for rel in files:
        with atomic_path(out / rel) as tmp:
            shutil.copyfile(src / rel, tmp)
