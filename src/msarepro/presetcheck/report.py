"""check-presets' outputs: the table it prints, and with --report the compute-cost table
reports/tables/compute.md and .tex (the analogue of ALMT's Table 8, for every method and real preset) from the
per-device result files reports/compute/<device>.json (cpu.json; cuda-<GPU>.json from a `--device cuda` run).

Every file is written atomically. None of them is a DVC output: timings differ from run to run and machine to
machine, so they stay out of `dvc repro`'s hashed outputs (docs/presets.md, "Checking the presets").
"""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

from . import RESULT_FIELDS, fmt_count, fmt_seconds

TABLE_FILES = ("compute.md", "compute.tex")  # under reports/tables/; the tables stage keeps them


def _mib(v) -> str:
    return "—" if v is None else f"{v:,.0f}"


def standin_name(used: str) -> str:
    """A stand-in's short name: packaged-minilm, or "local" for a folder built by presetcheck.encoders."""
    return "local" if Path(used).name.startswith("standin-") else Path(used).name


def _encoders(r: dict) -> str:
    """The stand-ins a pair trained with, e.g. "bert-base-uncased→packaged-minilm"; "" when none."""
    used = sorted((e["named"].split("/")[-1], standin_name(e["used"])) for e in (r.get("encoders") or {}).values()
                  if e["named"] != e["used"])
    return ", ".join(f"{a}→{b}" for a, b in used)


def render_text(results: list[dict]) -> str:
    """The table check-presets prints: one row per pair, failures with their message."""
    head = ["method", "dataset", "preset", "params", "trainable", "own", "run params", "s/step", "eval s",
            "peak MiB", "ckpt MiB", "stand-ins", "result"]
    rows = []
    for r in results:
        preset = r.get("preset", "") + ("" if r.get("in_params", True) else " (block)")
        res = "ok" if r["ok"] else f"FAILED ({r.get('phase')}): {r.get('error')}"
        rows.append([r["name"], r["dataset"], preset, fmt_count(r.get("params")), fmt_count(r.get("trainable")),
                     fmt_count(r.get("own")), fmt_count(r.get("params_run")), fmt_seconds(r.get("s_per_step")),
                     fmt_seconds(r.get("eval_s")), _mib(r.get("peak_mib")), _mib(r.get("checkpoint_mib")),
                     _encoders(r), res])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    widths[-1] = 0  # the last column is not padded
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    failed = sum(not r["ok"] for r in results)
    return "\n".join([line(head), *map(line, rows),
                      f"check-presets: {len(results) - failed} ok, {failed} failed, of {len(results)} pairs"])


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_key(m: dict) -> str:
    """The result file's name for a machine record: cpu, or cuda-<GPU name>."""
    if m["device"] != "cuda":
        return m["device"]
    return "cuda-" + re.sub(r"[^A-Za-z0-9]+", "-", m.get("gpu", "gpu")).strip("-").lower()


def write_results(results: list[dict], machine: dict, settings: dict, root: Path) -> Path:
    """reports/compute/<device>.json: this run's pairs (RESULT_FIELDS, each with this run's date and commit), the
    machine, the settings. Pairs of an earlier run on the same machine (same CPU or GPU, torch, threads, steps) that
    this run did not check are kept with their own date and commit, so a partial run (e.g. --methods text_only)
    updates its rows only; on another machine or settings the file is replaced."""
    from ..io import write_json

    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit != "unknown" else None
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pairs = [{**{k: r.get(k) for k in (*RESULT_FIELDS, "in_params")}, "date": date, "commit": commit, "dirty": dirty}
             for r in results]
    path = Path(root) / "compute" / f"{device_key(machine)}.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("machine") == machine and old.get("settings") == settings:
            new = {(q["name"], q["dataset"]): q for q in pairs}
            kept = [{"date": old.get("date"), "commit": old.get("commit"), "dirty": old.get("dirty"), **q}
                    for q in old["pairs"] if (q["name"], q["dataset"]) not in new]
            order = [(q["name"], q["dataset"]) for q in old["pairs"]]
            pairs = sorted(kept + pairs, key=lambda q: (order.index((q["name"], q["dataset"]))
                                                        if (q["name"], q["dataset"]) in order else len(order)))
    doc = {"machine": machine, "date": date, "commit": commit, "dirty": dirty, "settings": settings, "pairs": pairs}
    write_json(path, doc)
    return path


def load_results(root: Path) -> dict[str, dict]:
    """Every reports/compute/*.json, keyed by device (cpu first)."""
    files = sorted((Path(root) / "compute").glob("*.json"), key=lambda p: (p.stem != "cpu", p.stem))
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in files}


def _machine_line(key: str, doc: dict) -> str:
    m, s = doc["machine"], doc.get("settings", {})
    what = m.get("gpu") or m.get("cpu", "?")
    runs = sorted({(q.get("date") or doc["date"], str(q.get("commit") or doc.get("commit", "?"))[:10],
                    bool(q.get("dirty", doc.get("dirty")))) for q in doc["pairs"]}, reverse=True)
    when = "; ".join(f"{d}, commit {c}{' (with local changes)' if dirty else ''}" for d, c, dirty in runs)
    if len(runs) > 1:
        when = f"pairs from {len(runs)} runs: {when}"
    return (f"{key}: {what} ({m.get('cpu_count')} CPU cores, torch {m.get('torch')}, {m.get('capability', '')}), "
            f"{s.get('threads', '?')} torch thread(s), {s.get('steps', '?')} steps per training stage, {when}")


def compute_tables(docs: dict[str, dict]) -> tuple[str, str]:
    """-> (compute.md, compute.tex) from the per-device result documents."""
    base_key = "cpu" if "cpu" in docs else next(iter(docs))
    base = docs[base_key]
    others = [k for k in docs if k != base_key]
    by = {k: {(p["name"], p["dataset"]): p for p in d["pairs"]} for k, d in docs.items()}
    dev_name = {k: (docs[k]["machine"].get("gpu") or k) for k in docs}
    cols = ["method", "dataset (preset)", "parameters", "trainable", "outside encoders", "batch",
            f"{base_key.upper()} s/step", f"{base_key.upper()} peak MiB"]
    for k in others:
        cols += [f"{dev_name[k]} s/step", f"{dev_name[k]} peak MiB"]
    cols.append("status")
    rows, standins = [], {}
    for p in base["pairs"]:
        key = (p["name"], p["dataset"])
        for e in (p.get("encoders") or {}).values():
            if e["named"] != e["used"]:
                standins[e["named"]] = standin_name(e["used"])
        preset = p.get("preset") or ""
        cells = [p["name"], f"{p['dataset']} ({preset}{'' if p.get('in_params', True) else ', block values'})",
                 fmt_count(p.get("params")), fmt_count(p.get("trainable")), fmt_count(p.get("own")),
                 str(p.get("batch_size") or "—"), fmt_seconds(p.get("s_per_step")), _mib(p.get("peak_mib"))]
        for k in others:
            q = by[k].get(key) or {}
            cells += [fmt_seconds(q.get("s_per_step")), _mib(q.get("peak_mib"))]
        bad = [k for k in docs if key in by[k] and not by[k][key]["ok"]]
        cells.append("ok" if not bad else "; ".join(f"{k}: failed ({by[k][key].get('phase')}): "
                                                      f"{by[k][key].get('error')}" for k in bad))
        rows.append(cells)
    notes = [
        "Parameters: the model built with the real pretrained encoders' architectures (their configurations, "
        "weights never loaded); trainable: of those, the ones that require gradients; outside encoders: the "
        "parameters outside the pretrained (Hugging Face) models, the count ALMT's Table 8 reports.",
        "s/step: mean wall-clock seconds of one optimisation step (forward, losses, backward, clipping, optimizer "
        "and schedule; train.train_step) on full batches of the synthetic data in the real dataset's shapes "
        "(synth-like-<dataset>), each training stage's first step left out; peak MiB: memory above what the "
        "process held before the model was built, over the steps, one evaluation and a checkpoint's "
        "serialisation (CPU: resident set size; CUDA: allocated memory).",
        "(block values): the method has no preset for that dataset; its params.yaml block's own values apply, "
        "as in a run on it.",
    ]
    if standins:
        notes.append("Timings used stand-ins for pretrained models whose weights were not available offline "
                     "(local: a small model of the same family built by check-presets): "
                     + ", ".join(f"{a} → {b}" for a, b in sorted(standins.items()))
                     + " (docs/presets.md, \"Checking the presets\"); the parameter counts are the real models'.")
    machines = [_machine_line(k, d) for k, d in docs.items()]
    md = ["# Compute cost per method and real preset", "",
          "<!-- Generated by `msarepro check-presets --report`; not a DVC output; do not edit by hand. -->", "",
          "The analogue of ALMT's Table 8 for every method: parameters per real preset and the cost of a training "
          "step on synthetic data in the real dataset's shapes. Measured on:", "",
          *[f"- {x}" for x in machines], "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
          *["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows], "",
          *[f"- {n}" for n in notes], ""]
    tex_rows = [" & ".join(_tex(c) for c in cells[:-1]) + r" \\" for cells in rows]
    tex = ["% Generated by `msarepro check-presets --report`; not a DVC output; do not edit by hand.",
           r"\begin{table}[t]", r"\centering", r"\scriptsize",
           r"\caption{Compute cost per method and real preset (synthetic data in the real datasets' shapes). "
           + _tex("; ".join(machines)) + "}", r"\label{tab:compute}",
           r"\begin{tabular}{ll" + "r" * (len(cols) - 3) + "}", r"\toprule",
           " & ".join(_tex(c) for c in cols[:-1]) + r" \\", r"\midrule", *tex_rows, r"\bottomrule",
           r"\end{tabular}", *[rf"\par\smallskip{{\footnotesize {_tex(n)}}}" for n in notes], r"\end{table}", ""]
    return "\n".join(md), "\n".join(tex)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
        "}": r"\}", "~": r"\~{}", "^": r"\^{}", "→": r"$\rightarrow$", "—": "--", "±": r"$\pm$"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in str(s))


def write_report(results: list[dict], machine: dict, settings: dict, root: str | Path = "reports") -> list[Path]:
    """This run's reports/compute/<device>.json, then reports/tables/compute.md and .tex from every device's file."""
    from ..io import write_text

    root = Path(root)
    written = [write_results(results, machine, settings, root)]
    md, tex = compute_tables(load_results(root))
    for name, text in zip(TABLE_FILES, (md, tex)):
        write_text(root / "tables" / name, text)
        written.append(root / "tables" / name)
    return written
