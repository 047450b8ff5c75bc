"""`msarepro check-regression`: a deterministic smoke run of the pipeline against committed expected metrics.

The smoke run (params.yaml `regression:`) trains every registered method on each listed embedded dataset its
family handles, generated at a small scale, for a few epochs (no early stop), with fixed seeds; AE-MT's encoders
are pretrained first with the same epoch cap. It goes through the same code as the pipeline (download of the
embedded data, pretraining, `train.run`, the evaluation's metrics) in a temporary directory.

Each TEST metric is compared with the committed value (`regression.expected`, ci/expected_metrics.json) under a
per-metric tolerance (`regression.tolerance`, absolute, on the 0-1 scale; `default` for the rest). A metric worse
than expected by more than its tolerance is a regression (exit status 1); a missing run is one too. Better by more
than the tolerance is reported (and fails with --strict): refresh the expected values if the change is intended:

    msarepro check-regression --update      # rewrites ci/expected_metrics.json from a fresh smoke run

The smoke run trains on the CPU with ONE intra-op thread (`SMOKE_THREADS`), whatever the machine's core count,
OMP_NUM_THREADS or the caller's `torch.set_num_threads`: torch splits reductions by thread count, so the float
rounding, and with it a run's metrics, depends on it. Most methods move by ~1e-7, but where the 2-epoch smoke run
leaves a near-constant predictor (CLGSI: test predictions with a spread of ~0.003 on the -3..3 scale, which the
head's BatchNorm then rescales) Corr moved from 0.196 (1 thread) to 0.162 (2, 3, 4, 8 and 16 threads). One thread
makes a run bit-identical on every machine with the same CPU kernels. The expected file records the thread count
with the smoke settings (refused when it differs) and torch's version and CPU capability (reported when they
differ, since other kernels may round differently).
"""
from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import metrics
from .config import ConfigError, Params, RegressionConfig, apply_overrides, from_dict, load_raw

SMOKE_THREADS = 1  # torch intra-op threads of the smoke run (see the module docstring)
SMOKE_DEVICE = "cpu"  # the expected values are CPU values, also on a machine with a GPU


def settings(params_path: str | Path = "params.yaml") -> RegressionConfig:
    """params.yaml's `regression:` section, after the whole file is validated."""
    from .methods import load_params
    return load_params(params_path).regression


def smoke_overrides(raw: dict, s: RegressionConfig, workdir: Path) -> list[str]:
    """Overrides that turn params.yaml into the smoke run's: small data in `workdir`, capped epochs."""
    from .methods import all_methods, pretraining_methods

    n = s.max_epochs
    never = 10**6  # patience: no early stopping (it must also exceed any method's own warm-up epochs)
    ov = [f"data.root={workdir / 'data'}", f"data.synth_scale={s.scale}"]
    for m in all_methods():
        ov += [f"methods.{m}.max_epochs={n}", f"methods.{m}.patience={never}"]
        for p, block in ((raw.get("methods", {}).get(m) or {}).get("presets") or {}).items():
            for key in ("max_epochs", "patience"):
                if block and key in block:
                    ov.append(f"methods.{m}.presets.{p}.{key}={n if key == 'max_epochs' else never}")
        if m in pretraining_methods():
            ov.append(f"methods.{m}.pretrained={workdir / 'pretrain'}/{{dataset}}")
    if "pretrain" in raw:
        ov.append(f"pretrain.epochs={s.pretrain_epochs}")
        for p, block in ((raw["pretrain"] or {}).get("presets") or {}).items():
            if block and "epochs" in block:
                ov.append(f"pretrain.presets.{p}.epochs={s.pretrain_epochs}")
    return ov


@dataclass(frozen=True)
class Finding:
    key: str
    metric: str
    expected: float | None
    actual: float | None
    tolerance: float
    status: str  # ok | regression | improved | missing | new


@contextmanager
def intra_op_threads(n: int):
    """Run the block with torch's intra-op thread count set to `n`; the caller's count is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def environment() -> dict:
    """What the smoke run's float rounding depends on besides the code: recorded with the expected values."""
    import torch

    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(), "threads": SMOKE_THREADS}


def smoke_run(params_path: str | Path = "params.yaml", methods: list[str] | None = None,
              workdir: Path | None = None, log=print) -> tuple[RegressionConfig, dict]:
    """Run the smoke grid; -> (settings, {"method/dataset/seed": {metric: value}})."""
    from .data import DATASETS
    from .methods import all_methods, pretraining_methods, validate_params

    raw = load_raw(params_path)
    s = validate_params(from_dict(raw)).regression  # the whole file is checked before anything runs
    own_tmp = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="msarepro-smoke-") if own_tmp else None
    workdir = Path(tmp.name if own_tmp else workdir)
    try:
        params: Params = validate_params(from_dict(apply_overrides(raw, smoke_overrides(raw, s, workdir))))
        registry = all_methods()
        chosen = sorted(methods or registry)
        for m in chosen:
            if m not in registry:
                raise ConfigError(f"--methods: {m!r} is not a registered method ({', '.join(sorted(registry))})")
        results: dict[str, dict[str, float]] = {}
        with intra_op_threads(SMOKE_THREADS):
            for m in chosen:
                for d in s.datasets:
                    if DATASETS[d].family not in registry[m].families:
                        continue
                    for seed in s.seeds:
                        results.update(_smoke_one(params, m, d, int(seed), workdir, m in pretraining_methods(), log))
        return s, results
    finally:
        if tmp is not None:
            tmp.cleanup()


def _smoke_one(params: Params, m: str, d: str, seed: int, workdir: Path, pretrain: bool, log) -> dict:
    from .train import RunSpec, run

    if pretrain and not (workdir / "pretrain" / d / "encoders.pt").exists():
        from .pretrain.run import run_pretraining
        log(f"smoke: pretraining {m}'s encoders on {d}")
        run_pretraining(params, d, seed, workdir / "pretrain" / d, device=SMOKE_DEVICE, progress=False)
    log(f"smoke: {m} / {d} / {seed}")
    r = run(params, RunSpec(m, d, seed, workdir / "runs" / m / d / str(seed), device=SMOKE_DEVICE, progress=False))
    return {f"{m}/{d}/{seed}": {k: float(v) for k, v in sorted(r["test"].items())}}


def compare(expected: dict, actual: dict, tolerance: dict, only_methods: list[str] | None = None) -> list[Finding]:
    out = []
    keys = sorted(set(expected) | set(actual))
    if only_methods:
        keys = [k for k in keys if k.split("/")[0] in only_methods]
    for key in keys:
        e, a = expected.get(key), actual.get(key)
        for metric in sorted(set(e or {}) | set(a or {})):
            tol = float(tolerance.get(metric, tolerance.get("default", 0.02)))
            ev = None if e is None else e.get(metric)
            av = None if a is None else a.get(metric)
            if ev is None:
                status = "new"
            elif av is None:
                status = "missing"
            else:
                gain = (ev - av) if metric in metrics.LOWER_IS_BETTER else (av - ev)
                status = "regression" if gain < -tol else "improved" if gain > tol else "ok"
            out.append(Finding(key, metric, ev, av, tol, status))
    return out


def render(findings: list[Finding], verbose: bool = False) -> str:
    def f(v):
        return "—" if v is None else f"{v:.4f}"

    shown = [x for x in findings if verbose or x.status != "ok"]
    lines = []
    if shown:
        w = max(len(x.key) for x in shown)
        lines.append(f"{'run':{w}s}  {'metric':14s} {'expected':>9s} {'actual':>9s} {'diff':>8s} {'tol':>6s}  status")
        for x in shown:
            diff = "" if x.expected is None or x.actual is None else f"{x.actual - x.expected:+.4f}"
            mark = {"regression": "REGRESSION", "missing": "MISSING", "improved": "improved (refresh?)",
                    "new": "new (no expected value)"}.get(x.status, "ok")
            lines.append(f"{x.key:{w}s}  {x.metric:14s} {f(x.expected):>9s} {f(x.actual):>9s} {diff:>8s} "
                         f"{x.tolerance:6.3f}  {mark}")
    counts = {s: sum(x.status == s for x in findings) for s in ("ok", "regression", "missing", "improved", "new")}
    lines.append("check-regression: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)


def recorded_settings(s: RegressionConfig) -> dict:
    """The smoke settings an expected file must have been recorded with to be comparable."""
    return {**s.recorded(), "threads": SMOKE_THREADS}


def load_expected(path: Path, s: RegressionConfig) -> dict:
    """The expected file's content, refused (one-line ConfigError) when missing or recorded with other settings."""
    if not path.exists():
        raise ConfigError(f"{path}: no expected metrics; create them with `msarepro check-regression --update`")
    exp = json.loads(path.read_text())
    if exp.get("settings") != recorded_settings(s):
        raise ConfigError(f"{path} was recorded with smoke settings {exp.get('settings')}, but this smoke run uses "
                          f"{recorded_settings(s)} (params.yaml `regression:` and {SMOKE_THREADS} torch thread(s)); "
                          "refresh with `msarepro check-regression --update`")
    return exp


def environment_note(exp: dict) -> str | None:
    """A line when the expected values come from another torch build or CPU capability (rounding may differ)."""
    rec, now = exp.get("environment"), environment()
    if rec == now:
        return None
    return (f"note: expected values recorded with {rec}, this machine has {now}; "
            "CPU kernels may round differently, so a near-constant predictor's Corr can move")


def run_and_compare(params_path: str | Path = "params.yaml", expected_path: str | Path | None = None,
                    methods: list[str] | None = None) -> tuple[dict, list[Finding]]:
    """Smoke-run `methods` (default: all) and compare with the expected file; -> (expected file, findings)."""
    s = settings(params_path)
    exp = load_expected(Path(expected_path or s.expected), s)  # refused before a smoke run is spent on it
    s, actual = smoke_run(params_path, methods)
    return exp, compare(exp["metrics"], actual, s.tolerance, methods)


def check(params_path: str | Path = "params.yaml", expected_path: str | None = None, update: bool = False,
          strict: bool = False, methods: list[str] | None = None, verbose: bool = False) -> int:
    """-> exit status: 0 pass, 1 regression (or, with strict, an improvement beyond tolerance)."""
    from .io import write_json

    if update:
        s = settings(params_path)
        path = Path(expected_path or s.expected)
        old = {}
        if methods and path.exists():  # a partial refresh keeps the other methods' values: same settings only
            if json.loads(path.read_text()).get("settings") != recorded_settings(s):
                raise ConfigError(f"{path} was recorded with other smoke settings; refresh every method: "
                                  "`msarepro check-regression --update` (without --methods)")
            old = json.loads(path.read_text())["metrics"]
        s, actual = smoke_run(params_path, methods)
        write_json(path, {"settings": recorded_settings(s), "environment": environment(),
                          "metrics": {**old, **actual}, "refresh": "msarepro check-regression --update"})
        print(f"wrote {path}: {len(actual)} runs")
        return 0
    exp, findings = run_and_compare(params_path, expected_path, methods)
    note = environment_note(exp)
    print(render(findings, verbose) + (f"\n{note}" if note else ""))
    bad = {"regression", "missing"} | ({"improved"} if strict else set())
    return 1 if any(x.status in bad for x in findings) else 0
