"""Per-dataset result tables in the papers' layout: methods as rows, the metrics the papers report as columns.

For each dataset (every dataset that has reproduced runs or paper numbers) one table:
    <method>                 reproduced mean ± std over seeds (valid-selected protocol); best value in bold
    ↳ <paper> <table>        the number that paper printed for that method and dataset, and Δ = ours - paper
                             (the table of a word-aligned release, mosi-aligned, shows the papers' MOSI rows of the
                             methods run on it: the papers compare word-aligned baselines in their MOSI tables)
Values are printed as the papers print them: ×100 for accuracies and F1, raw for MAE and Corr. A paper value
of MAE or Corr above 2 is taken as printed ×100 (AE-MT's CH-SIMS v2 table) and divided by 100 for Δ; a paper
accuracy or F1 of at most 1 as printed as a fraction (INFIG's Table 2) and multiplied by 100 for Δ.
A second table lists the selection protocols side by side, a third the paired tests between methods.
A method whose runs loaded pretrained encoders (AE-MT) is marked † and footnoted with the pretraining pool and
its size, as the runs recorded them in config.json (the evaluate stage's run_inputs.csv), never assumed.
Ablation rows of the papers (`kind` ablation) and the runs of variants (params.yaml `variants:`) are left out
here: they go to the ablation tables (report/ablations.py). The paired tests shown are the compact set: each
method with its own paper against each baseline; metrics/paired.csv holds every pair.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import metrics

RAW_METRICS = ("MAE", "Corr")  # printed unscaled
DAGGER = "†"  # marks a row with a footnote (the pretraining pool)
PAPER_COLUMNS = ["paper", "table", "kind", "dataset", "method", "row", "variant", "metric", "value", "note"]
REQUIRED = ["paper", "table", "dataset", "method", "metric", "value"]
KINDS = ("main", "ablation")


def load_paper_results(folder: Path) -> pd.DataFrame:
    """Every reports/paper_results/*.csv (header paper,table,kind,dataset,method,row,variant,metric,value,note),
    concatenated in file and row order (the ablation tables keep the papers' row order). A file from before
    `kind`, `row` and `variant` existed reads as main rows with empty labels."""
    frames = []
    for f in sorted(Path(folder).glob("*.csv")):
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise ValueError(f"{f}: missing column(s) {missing}; expected header {','.join(PAPER_COLUMNS)}")
        for c, default in (("kind", "main"), ("row", ""), ("variant", "")):
            df[c] = df[c].str.strip() if c in df.columns else default
        bad = pd.to_numeric(df["value"], errors="coerce").isna()
        if bad.any():
            raise ValueError(f"{f}: non-numeric value(s) in rows {list(df.index[bad][:5] + 2)}")
        kinds = ~df["kind"].isin(KINDS)
        if kinds.any():
            raise ValueError(f"{f}: `kind` must be main or ablation; rows {list(df.index[kinds][:5] + 2)} say "
                             f"{sorted(set(df['kind'][kinds]))}")
        abl = df["kind"] == "ablation"
        unnamed = abl & ((df["row"] == "") | (df["variant"] == ""))
        if unnamed.any():
            raise ValueError(f"{f}: ablation rows {list(df.index[unnamed][:5] + 2)} need a `row` label and a "
                             f"`variant` (the params.yaml variants: name that reproduces them, refused ones too)")
        df["value"] = df["value"].astype(float)
        df["table"] = df["table"].map(lambda t: f"Table {t.strip()}" if t.strip().isdigit() else t.strip())
        frames.append(df[PAPER_COLUMNS[:-1]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PAPER_COLUMNS[:-1])


def registered_names(paper: pd.DataFrame, aliases: dict[str, str]) -> pd.DataFrame:
    """The papers' rows with each `method` as registered where the papers write another spelling of a registered
    method (aliases: methods.paper_aliases(), e.g. mag-bert, bert_mag -> mag_bert); other names (methods not
    reproduced here, a paper's starred re-runs like `self-mm*`) unchanged."""
    return paper.assign(method=paper["method"].map(lambda m: aliases.get(m, m)))


def variant_runs(run_inputs: pd.DataFrame | None) -> set[str]:
    """Run names that are variants (base_method differs from the name), from evaluate's run_inputs.csv."""
    if run_inputs is None or "base_method" not in run_inputs:
        return set()
    return set(run_inputs.loc[run_inputs["method"] != run_inputs["base_method"], "method"])


def scale(metric: str, value: float) -> float:
    """Our fraction -> the papers' printed unit."""
    return value if metric in RAW_METRICS else 100.0 * value


def paper_to_printed_unit(metric: str, value: float) -> float:
    """A paper's number -> the unit `scale` prints (see module docstring)."""
    if metric in RAW_METRICS and abs(value) > 2.0:
        return value / 100.0
    if metric not in RAW_METRICS and abs(value) <= 1.0:  # an accuracy or F1 printed as a fraction
        return 100.0 * value
    return value


def _fmt(metric: str, v: float) -> str:
    return f"{v:.3f}" if metric in RAW_METRICS else f"{v:.1f}"


def _columns(dataset: str, ours: pd.DataFrame, paper: pd.DataFrame) -> list[str]:
    from ..data import DATASETS

    fam = DATASETS[dataset].metric_family if dataset in DATASETS else None
    cols = list(metrics.REPORTED[fam]) if fam else []
    extra = set(paper["metric"]) - set(cols) if not paper.empty else set()
    if not cols:
        cols = sorted(set(ours["metric"]) | extra)
    return cols


def pool_notes(run_inputs: pd.DataFrame | None) -> dict[tuple[str, str], str]:
    """(dataset, method) -> "encoders pretrained on ..." from the runs' recorded pretraining pools; runs of one
    method that disagree are all listed (with their seeds), not merged."""
    notes = {}
    if run_inputs is None or run_inputs.empty:
        return notes
    pooled = run_inputs[run_inputs["pretrain_pool"].notna() & (run_inputs["pretrain_pool"].astype(str) != "")]
    for (d, m), g in pooled.groupby(["dataset", "method"], sort=True):
        kinds = g.groupby(["pretrain_pool", "pretrain_pool_size"], sort=True, dropna=False)["seed"]
        parts = [f"the `{pool}` pool ({int(size):,} clips)" if size == size else f"the `{pool}` pool"
                 for (pool, size), _ in kinds]
        if len(parts) > 1:
            parts = [f"{t} (seeds {', '.join(map(str, sorted(seeds)))})" for t, (_, seeds) in zip(parts, kinds)]
        notes[(d, m)] = f"{m}: encoders pretrained on {' and '.join(parts)}"
    return notes


def build_tables(summary: pd.DataFrame, paper: pd.DataFrame, method_order: list[str] | None = None,
                 run_inputs: pd.DataFrame | None = None, variants: set[str] | frozenset = frozenset()) -> dict[str, dict]:
    """-> {dataset: {"columns", "rows": [(label, kind, {metric: cell})], "notes": [text]}}; a cell is a dict
    with mean / std (ours) or value / delta (paper) and best (bool). `run_inputs` (evaluate's run_inputs.csv)
    gives the footnotes: a reproduced row whose runs used pretrained encoders gets a † label and a note.
    Paper rows of kind `ablation` and the runs named in `variants` (or marked as variants in run_inputs) are
    left out: the ablation tables show them."""
    notes = pool_notes(run_inputs)
    if summary.empty:
        summary = pd.DataFrame(columns=["method", "dataset", "protocol", "metric", "n", "mean", "std"])
    skip = set(variants) | variant_runs(run_inputs)
    summary = summary[~summary["method"].isin(skip)]
    if "kind" in paper:
        paper = paper[paper["kind"] == "main"]
    honest = summary[summary["protocol"] == "valid-selected"]
    datasets = sorted(set(honest["dataset"]) | set(paper["dataset"]))
    out = {}
    from ..data.registry import paper_dataset

    for d in datasets:
        ours = honest[honest["dataset"] == d]
        pap = paper[paper["dataset"] == d]
        if paper_dataset(d) != d:  # an aligned release: the papers' rows of its original, for the methods run on it
            pap = paper[(paper["dataset"] == paper_dataset(d)) & paper["method"].isin(set(ours["method"]))]
        cols = _columns(d, ours, pap)
        ran = [m for m in (method_order or sorted(set(ours["method"]))) if m in set(ours["method"])]
        ran += sorted(set(ours["method"]) - set(ran))
        methods = ran + sorted(set(pap["method"]) - set(ran))
        best: dict[str, float] = {}
        for k in cols:
            v = ours[ours["metric"] == k]["mean"]
            if len(v):
                best[k] = v.min() if k in metrics.LOWER_IS_BETTER else v.max()
        rows, table_notes = [], []
        for m in methods:
            mine = {r.metric: r for r in ours[ours["method"] == m].itertuples()}
            if mine:
                cells = {k: {"mean": scale(k, mine[k].mean), "std": scale(k, mine[k].std), "n": mine[k].n,
                             "best": math.isclose(mine[k].mean, best.get(k, math.nan))}
                         for k in cols if k in mine}
                note = notes.get((d, m))
                rows.append((f"{m} {DAGGER}" if note else m, "ours", cells))
                if note:
                    table_notes.append(f"{DAGGER} {note}.")
            for (p, t), g in pap[pap["method"] == m].groupby(["paper", "table"], sort=True):
                cells = {}
                for r in g.itertuples():
                    if r.metric not in cols:
                        continue
                    delta = None
                    if r.metric in mine:
                        delta = scale(r.metric, mine[r.metric].mean) - paper_to_printed_unit(r.metric, r.value)
                    cells[r.metric] = {"value": r.value, "delta": delta, "best": False}
                rows.append((f"{m} [{p}, {t}]", "paper", cells))
        if not best:  # paper numbers only: mark the best printed value per column
            for k in cols:
                vals = [c[k]["value"] for _, kind, c in rows if k in c]
                if vals:
                    b = min(vals) if k in metrics.LOWER_IS_BETTER else max(vals)
                    for _, _, c in rows:
                        if k in c and c[k]["value"] == b:
                            c[k]["best"] = True
        out[d] = {"columns": cols, "rows": rows, "reproduced": bool(len(ours)), "notes": table_notes}
    return out


def _cell_text(metric: str, cell: dict | None, tex: bool) -> str:
    if cell is None:
        return "–" if not tex else "--"
    if "mean" in cell:
        pm = r" $\pm$ " if tex else " ± "
        s = f"{_fmt(metric, cell['mean'])}{pm}{_fmt(metric, cell['std'])}"
    else:
        s = _fmt(metric, cell["value"]) if metric in RAW_METRICS else f"{cell['value']:g}"
        if cell["delta"] is not None:
            dl = r"$\Delta$" if tex else "Δ"
            s += f" ({dl} {cell['delta']:+.3f})" if metric in RAW_METRICS else f" ({dl} {cell['delta']:+.1f})"
    if cell.get("best"):
        s = rf"\textbf{{{s}}}" if tex else f"**{s}**"
    return s


def tex_escape(text: str) -> str:
    """Plain text (labels, notes, metric names) -> LaTeX: `\\ & % # $ _ ^ { } ~` escaped; ±, Δ, −, – and † as
    math or dashes; backticks (Markdown code) dropped. One pass, so no replacement is escaped again."""
    return "".join(TEX_CHARS.get(ch, ch) for ch in str(text))


TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$", "_": r"\_",
             "^": r"\^{}", "{": r"\{", "}": r"\}", "~": r"\~{}", "`": "", "±": r"$\pm$", "Δ": r"$\Delta$",
             "−": "$-$", "–": "--", DAGGER: r"$^\dagger$"}


_tex = tex_escape


def _label(label: str, kind: str, tex: bool) -> str:
    if kind == "ours":
        return _tex(label) if tex else label
    return (r"\quad " + _tex(label)) if tex else f"↳ {label}"


def markdown_table(table: dict) -> str:
    cols = table["columns"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, kind, cells in table["rows"]:
        lines.append(f"| {_label(label, kind, False)} | " + " | ".join(_cell_text(k, cells.get(k), False) for k in cols) + " |")
    notes = [f"\n{n}" for n in table.get("notes", [])]
    return "\n".join(lines) + "\n" + "\n".join(notes) + ("\n" if notes else "")


def latex_table(dataset: str, table: dict, caption: str) -> str:
    cols = table["columns"]
    head = " & ".join(["Method"] + [_tex(c) for c in cols]) + r" \\"
    body = []
    for i, (label, kind, cells) in enumerate(table["rows"]):
        if kind == "ours" and i > 0:
            body.append(r"\midrule")
        body.append(" & ".join([_label(label, kind, True)] + [_cell_text(k, cells.get(k), True) for k in cols]) + r" \\")
    return "\n".join([
        "% Generated by `msarepro tables` (the `tables` DVC stage); do not edit by hand.",
        r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
        rf"\label{{tab:{dataset}}}", r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule", head, r"\midrule",
        *body, r"\bottomrule", r"\end{tabular}",
        *[rf"\par\smallskip{{\footnotesize {_tex(n)}}}" for n in table.get("notes", [])], r"\end{table}", ""])


def protocol_table(summary: pd.DataFrame, dataset: str, cols: list[str]) -> str:
    """Methods x (metric, protocol): how much the optimistic protocols inflate each number."""
    from ..evaluate import PROTOCOLS

    s = summary[summary["dataset"] == dataset]
    if s.empty:
        return ""
    heads = [(k, p) for k in cols for p in PROTOCOLS if not s[(s["metric"] == k) & (s["protocol"] == p)].empty]
    lines = ["| method | " + " | ".join(f"{k} ({p})" for k, p in heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for m in sorted(set(s["method"])):
        cells = []
        for k, p in heads:
            r = s[(s["method"] == m) & (s["metric"] == k) & (s["protocol"] == p)]
            cells.append(_fmt(k, scale(k, float(r["mean"].iloc[0]))) if len(r) else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pair_fmt(metric: str, v: float) -> str:
    return f"{v:+.3f}" if metric in RAW_METRICS else f"{100 * v:+.1f}"


def oriented_pair(paired: pd.DataFrame, dataset: str, a: str, b: str) -> pd.DataFrame:
    """paired.csv's rows of A vs B on `dataset` as A − B, whichever order evaluate stored them in (a reversed
    row has its difference and CI negated; the two-sided p is the same)."""
    if paired.empty:
        return paired
    p = paired[paired["dataset"] == dataset]
    fwd = p[(p["method_a"] == a) & (p["method_b"] == b)]
    rev = p[(p["method_a"] == b) & (p["method_b"] == a)].copy()
    if len(rev):
        rev["diff"], rev["ci_low"], rev["ci_high"] = -rev["diff"], -rev["ci_high"], -rev["ci_low"]
        rev["method_a"], rev["method_b"] = a, b
    return pd.concat([fwd, rev], ignore_index=True) if len(rev) else fwd


def paired_table(paired: pd.DataFrame, dataset: str, methods: list[str] | set[str] | None = None,
                 skip: set[str] | frozenset = frozenset()) -> str:
    """The compact paired tests of one dataset: each method with its own paper (`methods`: those with a
    reports/paper_results/<m>.csv) against each baseline (every other method that ran there, not a variant in
    `skip` and not itself in `methods`); one row per pair, A − B and p per metric. None given: every pair of
    runs not in `skip`. metrics/paired.csv holds every pair with its CI and sample count."""
    p = paired[paired["dataset"] == dataset] if not paired.empty else paired
    p = p[~p["method_a"].isin(skip) & ~p["method_b"].isin(skip)] if not p.empty else p
    if p.empty:
        return ""
    ran = sorted(set(p["method_a"]) | set(p["method_b"]))
    if methods is None:
        pairs = sorted({(r.method_a, r.method_b) for r in p.itertuples()})
    else:
        baselines = [m for m in ran if m not in set(methods)]
        pairs = [(a, b) for a in ran if a in set(methods) for b in baselines]
    metric_cols = list(dict.fromkeys(p["metric"]))
    lines = ["| A | B | " + " | ".join(f"{k}: A − B (p)" for k in metric_cols) + " | seeds |",
             "|---" * (len(metric_cols) + 3) + "|"]
    for a, b in pairs:
        rows = {r.metric: r for r in oriented_pair(p, dataset, a, b).itertuples()}
        if not rows:
            continue
        cells = [f"{_pair_fmt(k, rows[k].diff)} ({rows[k].p_value:.3f})" if k in rows else "–" for k in metric_cols]
        seeds = " / ".join(dict.fromkeys(str(r.seeds) for r in rows.values()))
        lines.append(f"| {a} | {b} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""
