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
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import metrics
from .config import ConfigError, Params, apply_overrides, from_dict, load_raw

DEFAULTS = {"expected": "ci/expected_metrics.json", "datasets": ["synth-mosi", "synth-mvsa"], "seeds": [1111],
            "scale": 0.15, "max_epochs": 2, "pretrain_epochs": 2, "tolerance": {"default": 0.02}}


def settings(raw: dict) -> dict:
    sec = dict(raw.get("regression") or {})
    unknown = sorted(set(sec) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"regression: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **sec}


def smoke_overrides(raw: dict, s: dict, workdir: Path) -> list[str]:
    """Overrides that turn params.yaml into the smoke run's: small data in `workdir`, capped epochs."""
    from .methods import all_methods, pretraining_methods

    n = int(s["max_epochs"])
    never = 10**6  # patience: no early stopping (it must also exceed any method's own warm-up epochs)
    ov = [f"data.root={workdir / 'data'}", f"data.synth_scale={s['scale']}"]
    for m in all_methods():
        ov += [f"methods.{m}.max_epochs={n}", f"methods.{m}.patience={never}"]
        for p, block in ((raw.get("methods", {}).get(m) or {}).get("presets") or {}).items():
            for key in ("max_epochs", "patience"):
                if block and key in block:
                    ov.append(f"methods.{m}.presets.{p}.{key}={n if key == 'max_epochs' else never}")
        if m in pretraining_methods():
            ov.append(f"methods.{m}.pretrained={workdir / 'pretrain'}/{{dataset}}")
    if "pretrain" in raw:
        ov.append(f"pretrain.epochs={int(s['pretrain_epochs'])}")
        for p, block in ((raw["pretrain"] or {}).get("presets") or {}).items():
            if block and "epochs" in block:
                ov.append(f"pretrain.presets.{p}.epochs={int(s['pretrain_epochs'])}")
    return ov


@dataclass(frozen=True)
class Finding:
    key: str
    metric: str
    expected: float | None
    actual: float | None
    tolerance: float
    status: str  # ok | regression | improved | missing | new


def smoke_run(params_path: str | Path = "params.yaml", methods: list[str] | None = None,
              workdir: Path | None = None, log=print) -> tuple[dict, dict]:
    """Run the smoke grid; -> (settings, {"method/dataset/seed": {metric: value}})."""
    from .data import DATASETS
    from .methods import all_methods, pretraining_methods
    from .train import RunSpec, run

    raw = load_raw(params_path)
    s = settings(raw)
    own_tmp = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="msarepro-smoke-") if own_tmp else None
    workdir = Path(tmp.name if own_tmp else workdir)
    try:
        params: Params = from_dict(apply_overrides(raw, smoke_overrides(raw, s, workdir)))
        registry = all_methods()
        chosen = sorted(methods or registry)
        for m in chosen:
            if m not in registry:
                raise ConfigError(f"--methods: {m!r} is not a registered method ({', '.join(sorted(registry))})")
        results: dict[str, dict[str, float]] = {}
        for m in chosen:
            for d in s["datasets"]:
                if DATASETS[d].family not in registry[m].families:
                    continue
                for seed in s["seeds"]:
                    if m in pretraining_methods() and not (workdir / "pretrain" / d / "encoders.pt").exists():
                        from .pretrain.run import run_pretraining
                        log(f"smoke: pretraining {m}'s encoders on {d}")
                        run_pretraining(params, d, int(seed), workdir / "pretrain" / d, progress=False)
                    log(f"smoke: {m} / {d} / {seed}")
                    r = run(params, RunSpec(m, d, int(seed), workdir / "runs" / m / d / str(seed), progress=False))
                    results[f"{m}/{d}/{seed}"] = {k: float(v) for k, v in sorted(r["test"].items())}
        return s, results
    finally:
        if tmp is not None:
            tmp.cleanup()


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


def check(params_path: str | Path = "params.yaml", expected_path: str | None = None, update: bool = False,
          strict: bool = False, methods: list[str] | None = None, verbose: bool = False) -> int:
    """-> exit status: 0 pass, 1 regression (or, with strict, an improvement beyond tolerance)."""
    from .io import write_json

    s, actual = smoke_run(params_path, methods)
    path = Path(expected_path or s["expected"])
    recorded = {k: s[k] for k in ("datasets", "seeds", "scale", "max_epochs", "pretrain_epochs")}
    if update:
        old = json.loads(path.read_text())["metrics"] if path.exists() and methods else {}
        write_json(path, {"settings": recorded, "metrics": {**old, **actual},
                          "refresh": "msarepro check-regression --update"})
        print(f"wrote {path}: {len(actual)} runs")
        return 0
    if not path.exists():
        raise FileNotFoundError(f"{path}: no expected metrics; create them with `msarepro check-regression --update`")
    exp = json.loads(path.read_text())
    if exp.get("settings") != recorded:
        raise ConfigError(f"{path} was recorded with smoke settings {exp.get('settings')}, params.yaml's "
                          f"regression section now says {recorded}; refresh with `msarepro check-regression --update`")
    findings = compare(exp["metrics"], actual, s["tolerance"], methods)
    print(render(findings, verbose))
    bad = {"regression", "missing"} | ({"improved"} if strict else set())
    return 1 if any(x.status in bad for x in findings) else 0
