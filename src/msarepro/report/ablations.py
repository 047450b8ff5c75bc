"""Ablation tables and sensitivity figures: the papers' ablation studies beside our variant runs.

One table per paper table with `kind == ablation` rows in reports/paper_results/*.csv, in the paper's layout:
its rows in the paper's order (the full model first), and per paper dataset its metric columns.
    paper     the printed value and Δ = row − full model (the table's own full-model row, variant == method,
              if it prints one; else the same paper's `main` rows for that method and dataset)
    ours      per embedded dataset of the paper dataset's metric family on which the table's variants ran
              (synth-mosi for MOSI/MOSEI, synth-sims for CH-SIMS (v2), synth-mvsa for the image-text sets; when
              none of that metric family ran, those of the same modality family, e.g. synth-mosi for CH-SIMS,
              with the columns both compute):
              mean ± std over seeds (×100 except MAE/Corr, as the main tables), Δ = variant − full model and its
              two-sided p from the paired bootstrap (metrics/paired.csv: variant vs full model on their common
              seeds, which are listed). Metrics without a per-sample score (F1, Corr) get Δ of the means, no p.
A row whose variant is refused (params.yaml `variants.<name>.refused`) or has no run shows "–" and a footnote.
Our numbers are on embedded data, not the paper's dataset, so no Δ between ours and the paper's is printed.

Sensitivity figures (ALMT Figures 8-10, INFIG Figure 3): variants whose `rows` name `Figure N: ...` and whose
settings hold one key, the x axis. Reproduced mean ± std over seeds per metric, against x, the full model drawn
at its own x (its config for the dataset's preset) and starred.
Writes reports/tables/ablations/<paper>-table-<n>.md|.tex and reports/figures/ablations/<paper>-figure-<n>.png.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pandas as pd

from ..config import Params, VariantConfig, with_preset
from .tables import RAW_METRICS, _fmt, oriented_pair, scale, tex_escape

# Panels of a sensitivity figure per metric family, besides the metrics the paper's csv gives for the figure:
# ALMT's Figures 8-10 plot accuracy (Acc-5 on CH-SIMS) and MAE; INFIG's Figure 3 accuracy and F1.
FIGURE_METRICS = {"mosi": ["Has0_acc_2", "Mult_acc_5", "MAE"], "sims": ["Mult_acc_2", "Mult_acc_5", "MAE"],
                  "cls": ["Accuracy", "F1_score"]}
EMBEDDED_SOURCES = ("synth", "media")  # DatasetInfo.source of the generated datasets
DASH = "–"


def stem(paper: str, table: str) -> str:
    """("almt", "Table 4") -> "almt-table-4"."""
    return f"{paper}-" + re.sub(r"[^a-z0-9]+", "-", table.lower()).strip("-")


def family(dataset: str) -> str | None:
    from ..data import DATASETS

    return DATASETS[dataset].metric_family if dataset in DATASETS else None


def our_datasets(paper_dataset: str, ran: set[str]) -> list[str]:
    """Datasets whose runs stand in for `paper_dataset`: the embedded ones of its metric family (and the paper
    dataset itself, once it runs here), among those in `ran`; when none of that metric family ran, the embedded
    ones of its modality family (synth-mosi for a CH-SIMS table: the columns both compute, Acc-5, MAE and Corr,
    are filled, the others stay empty), so that the default pipeline's ablation grid fills every table."""
    from ..data import DATASETS

    fam = family(paper_dataset)
    same = [d for d in sorted(ran) if fam and family(d) == fam
            and (DATASETS[d].source in EMBEDDED_SOURCES or d == paper_dataset)]
    if same or paper_dataset not in DATASETS:
        return same
    kind = DATASETS[paper_dataset].family
    return [d for d in sorted(ran) if d in DATASETS and DATASETS[d].family == kind
            and DATASETS[d].source in EMBEDDED_SOURCES]


# ----------------------------------------------------------------------------------------------- tables
def _honest(summary: pd.DataFrame) -> dict[tuple[str, str, str], object]:
    s = summary[summary["protocol"] == "valid-selected"] if not summary.empty else summary
    return {(r.method, r.dataset, r.metric): r for r in s.itertuples()}


def _decimals(v: float) -> int:
    """Decimals of a transcribed value (34.4 -> 1, 0.7641 -> 4): the csv's text survives float's shortest repr."""
    text = repr(float(v))
    return min(len(text.split(".")[1]), 4) if "." in text and "e" not in text else 0


def _table_rows(tab: pd.DataFrame) -> list[dict]:
    """The table's rows in the paper's order, its full-model rows (variant == method) moved first; a method
    whose full row the table does not print gets one whose paper values come from the main rows."""
    rows = [{"label": r, "variant": v, "method": m, "full": v == m, "notes": []}
            for r, v, m in dict.fromkeys(zip(tab["row"], tab["variant"], tab["method"]))]
    missing = [m for m in dict.fromkeys(tab["method"]) if not any(r["full"] and r["method"] == m for r in rows)]
    return ([r for r in rows if r["full"]]
            + [{"label": f"{m} (full model)", "variant": m, "method": m, "full": True, "notes": [], "from_main": True}
               for m in missing]
            + [r for r in rows if not r["full"]])


def _paper_side(td: pd.DataFrame, main: pd.DataFrame, rows: list[dict], metrics: list[str]) -> list[dict]:
    """Per row, {metric: (value, Δ to the full model)} in the paper's own units (no Δ for the full rows)."""
    def values(r):
        src = (main[main["method"] == r["method"]] if r.get("from_main")
               else td[(td["row"] == r["label"]) & (td["variant"] == r["variant"])])
        return {k: float(src.loc[src["metric"] == k, "value"].iloc[0]) if (src["metric"] == k).any() else None
                for k in metrics}
    full = {r["method"]: values(r) for r in rows if r["full"]}
    out = []
    for r in rows:
        vals = values(r)
        f = full.get(r["method"], {})
        out.append({k: (v, None if r["full"] or v is None or f.get(k) is None else v - f[k]) for k, v in vals.items()})
    return out


def build_ablation_tables(summary: pd.DataFrame, paired: pd.DataFrame, paper: pd.DataFrame,
                          variants: dict[str, VariantConfig]) -> list[dict]:
    """-> one dict per paper ablation table: paper, table, stem, rows [{label, variant, method, full, notes}],
    blocks [{dataset, metrics, decimals, ours, cells: [{paper: {k: (value, delta)}, ours: {e: {k: cell}},
    seeds: {e}}]}], notes [text] (a row's `notes` index into them, numbered in row order)."""
    if paper.empty or "kind" not in paper:
        return []
    ours = _honest(summary)
    ran = {(m, d) for m, d, _ in ours}
    out = []
    for (p, t), tab in paper[paper["kind"] == "ablation"].groupby(["paper", "table"], sort=False):
        rows, notes = _table_rows(tab), []

        def note(row: dict, text: str) -> None:
            notes.append(text) if text not in notes else None
            row["notes"] += [] if notes.index(text) in row["notes"] else [notes.index(text)]

        for r in rows:
            cfg = variants.get(r["variant"])
            if not r["full"] and cfg is not None and cfg.refused.strip():
                r["refused"] = cfg.refused.strip()
                note(r, f"{r['label']} (`{r['variant']}`) is not reproduced here: {r['refused']}")
            elif not r["full"] and cfg is None:
                note(r, f"{r['label']}: `{r['variant']}` is not defined in params.yaml `variants:`")
            elif r.get("from_main"):
                main = paper[(paper["kind"] == "main") & (paper["paper"] == p) & (paper["method"] == r["method"])]
                src = "; ".join(f"{d}: {', '.join(dict.fromkeys(main.loc[main['dataset'] == d, 'table'])) or 'none'}"
                                for d in dict.fromkeys(tab["dataset"]))
                note(r, f"{p} {t} prints no {r['method']} row: its values are {p}'s main results ({src}), and the "
                        "paper Δs are to those")
        runnable = {r["variant"] for r in rows if not r["full"] and not r.get("refused")}
        blocks = []
        for d in dict.fromkeys(tab["dataset"]):
            td = tab[tab["dataset"] == d]
            metrics = list(dict.fromkeys(td["metric"]))
            main = paper[(paper["kind"] == "main") & (paper["paper"] == p) & (paper["dataset"] == d)]
            es = our_datasets(d, {e for v in runnable for (m, e) in ran if m == v})
            cells = [{"paper": pap, "ours": {}, "seeds": {}} for pap in _paper_side(td, main, rows, metrics)]
            for r, c in zip(rows, cells):
                for e in es:
                    c["ours"][e], c["seeds"][e] = _our_cells(r, e, metrics, ours, paired)
                    if c["ours"][e] is None and r["full"]:
                        note(r, f"{r['method']} (the full model) has no run on {e}")
                    elif c["ours"][e] is None and r["variant"] in runnable:
                        note(r, f"{r['label']}: `{r['variant']}` has no finished run on {e} (add it to params.yaml "
                                f"`ablations:` and rerun the sweep)")
            decimals = {k: max([_decimals(c["paper"][k][0]) for c in cells if c["paper"][k][0] is not None] or [0])
                        for k in metrics}
            blocks.append({"dataset": d, "metrics": metrics, "decimals": decimals, "ours": es, "cells": cells,
                           "why_none": "" if es else ("every variant of this table is refused" if not runnable else
                                                      "no run of this table's variants on a dataset of this family yet")})
        order = list(dict.fromkeys(n for r in rows for n in sorted(r["notes"])))  # number notes in row order
        for r in rows:
            r["notes"] = sorted(order.index(n) for n in r["notes"])
        out.append({"paper": p, "table": t, "stem": stem(p, t), "rows": rows, "blocks": blocks,
                    "notes": [notes[n] for n in order]})
    return out


def _our_cells(row: dict, e: str, metrics: list[str], ours: dict, paired: pd.DataFrame):
    """Our side of one row on dataset e -> ({metric: {mean, std, delta, p}}, seeds) or (None, "")."""
    name, full = row["variant"], row["method"]
    if row.get("refused") or not any((name, e, k) in ours for k in metrics):
        return None, ""
    pairs = {} if row["full"] else {r.metric: r for r in oriented_pair(paired, e, name, full).itertuples()}
    cells = {}
    for k in metrics:
        r = ours.get((name, e, k))
        if r is None:
            continue
        c = {"mean": scale(k, r.mean), "std": scale(k, r.std), "delta": None, "p": None}
        if k in pairs:
            c["delta"], c["p"] = scale(k, pairs[k].diff), float(pairs[k].p_value)
        elif not row["full"] and (full, e, k) in ours:  # no per-sample test for this metric: difference of means
            c["delta"] = scale(k, r.mean) - scale(k, ours[(full, e, k)].mean)
        cells[k] = c
    seeds = (next(iter(pairs.values())).seeds if pairs
             else next(ours[(name, e, k)].seeds for k in metrics if (name, e, k) in ours))
    return cells, str(seeds)


# ------------------------------------------------------------------------------------------- rendering
def _delta_text(k: str, d: float | None) -> str:
    if d is None:
        return DASH
    return f"{d:+.3f}" if k in RAW_METRICS else f"{d:+.1f}"


def _paper_text(value, delta, decimals: int) -> str:
    """A paper value at its column's printed precision, with Δ to the full model in the same units."""
    if value is None:
        return DASH
    return f"{value:.{decimals}f}" + (f" (Δ {delta:+.{decimals}f})" if delta is not None else "")


def block_grid(table: dict, block: dict) -> tuple[list[str], list[list[str]]]:
    """One paper dataset's part of a table as plain text: (header, rows)."""
    ks, es = block["metrics"], block["ours"]
    head = ["row"] + [f"{k} (paper)" for k in ks]
    for e in es:
        for k in ks:
            head += [f"{k} {e}", "Δ", "p"]
        head.append(f"seeds {e}")
    body = []
    for r, c in zip(table["rows"], block["cells"]):
        marks = "".join(f" [{i + 1}]" for i in r["notes"])
        line = [r["label"] + marks] + [_paper_text(*c["paper"][k], block["decimals"][k]) for k in ks]
        for e in es:
            mine = c["ours"].get(e)
            for k in ks:
                x = (mine or {}).get(k)
                line += ([f"{_fmt(k, x['mean'])} ± {_fmt(k, x['std'])}", _delta_text(k, x["delta"]),
                          DASH if x["p"] is None else f"{x['p']:.3f}"] if x else [DASH] * 3)
            line.append(c["seeds"].get(e) or DASH)
        body.append(line)
    return head, body


def _intro(table: dict) -> str:
    return (f"Paper: {table['paper']} {table['table']} as printed (its units and precision), Δ = row − full model "
            "in the same units. Ours: mean ± std "
            "over seeds on embedded data of the same metric family (valid-selected checkpoint; ×100 except MAE and "
            "Corr), Δ = variant − full model and p from the paired bootstrap over test samples on the seeds listed "
            "(`reports/metrics/paired.csv`); F1 and Corr have no per-sample test: Δ of the means, no p. Our data are "
            "not the paper's, so compare the direction and size of the Δs, not the values.")


def markdown_ablation(table: dict) -> str:
    out = [f"# {table['paper']} {table['table']} (ablation)\n\n",
           "<!-- Generated by `msarepro tables` (the `tables` DVC stage); do not edit by hand. -->\n\n",
           _intro(table), "\n"]
    for b in table["blocks"]:
        head, body = block_grid(table, b)
        ours = ", ".join(b["ours"]) or b["why_none"]
        out += [f"\n## {b['dataset']} (ours: {ours})\n\n", "| " + " | ".join(head) + " |\n",
                "|---" * len(head) + "|\n", *("| " + " | ".join(r) + " |\n" for r in body)]
    if table["notes"]:
        out += ["\n"] + [f"[{i + 1}] {n}.\n\n" for i, n in enumerate(table["notes"])]
    return "".join(out).rstrip("\n") + "\n"


def latex_ablation(table: dict) -> str:
    """booktabs, as tables.latex_table: one tabular per paper dataset, stacked in one table float."""
    lines = ["% Generated by `msarepro tables` (the `tables` DVC stage); do not edit by hand.",
             r"\begin{table}[t]", r"\centering", r"\scriptsize",
             rf"\caption{{{tex_escape(table['paper'])} {tex_escape(table['table'])} (ablation): published values "
             r"($\Delta$ = row $-$ full model) and our variants on embedded data (mean $\pm$ std; $\Delta$ = variant "
             r"$-$ full model, paired bootstrap $p$).}",
             rf"\label{{tab:{table['stem']}}}"]
    for i, b in enumerate(table["blocks"]):
        head, body = block_grid(table, b)
        body = [[re.sub(r" \[(\d+)\]", r"$^{\1}$", tex_escape(r[0]))] +
                [tex_escape(x) for x in r[1:]] for r in body]
        lines += ([r"\medskip"] if i else []) + [
            rf"\textbf{{{tex_escape(b['dataset'])}}} (ours: {tex_escape(', '.join(b['ours']) or b['why_none'])})\par",
            r"\begin{tabular}{l" + "c" * (len(head) - 1) + "}", r"\toprule",
            " & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule",
            *(" & ".join(r) + r" \\" for r in body), r"\bottomrule", r"\end{tabular}\par"]
    lines += [rf"\par\smallskip{{\footnotesize $^{{{i + 1}}}$ {tex_escape(n)}.}}" for i, n in enumerate(table["notes"])]
    return "\n".join(lines + [r"\end{table}", ""])


# --------------------------------------------------------------------------------- sensitivity figures
def figure_groups(variants: dict[str, VariantConfig]) -> dict[tuple[str, str], list[str]]:
    """(paper, "Figure N") -> the variant names whose `rows` name that figure (refused ones left out)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, cfg in sorted(variants.items()):
        if cfg.refused.strip():
            continue
        for paper, fig, _ in cfg.row_refs():
            if re.fullmatch(r"Figure \d+", fig) and name not in groups.get((paper, fig), []):
                groups.setdefault((paper, fig), []).append(name)
    return groups


def x_setting(name: str, cfg: VariantConfig, dataset: str) -> tuple[str, object]:
    """The one setting a sensitivity variant changes (its settings after its own preset for `dataset`)."""
    s = with_preset(cfg.settings, dataset)
    if len(s) != 1:
        raise ValueError(f"params.yaml variants.{name}: a sensitivity-figure variant (rows name a Figure) must "
                         f"change exactly one setting, its x axis; it sets {sorted(s) or 'none'}")
    return next(iter(s.items()))


def params_setting(params: Params) -> Callable[[str, str, str], object]:
    """-> f(method, dataset, key): the method's `key` as its runs on `dataset` resolve it (methods.<method>, then
    the dataset's preset, over the Config defaults: methods.method_config; an embedded dataset's preset is its
    name)."""
    def setting(method: str, dataset: str, key: str):
        from ..methods import method_config

        return getattr(method_config(params, method, dataset), key)
    return setting


def sensitivity_points(summary: pd.DataFrame, variants: dict[str, VariantConfig], names: list[str], dataset: str,
                       metric: str, setting: Callable | None) -> list[dict]:
    """[{x, mean, std, full}] sorted by x: the figure's variants on `dataset`, plus the full model at its own x
    (a variant at that x has the full model's settings: the full model's runs, on more seeds, stand there)."""
    ours = _honest(summary)
    pts, key, method = [], None, None
    for n in names:
        key, x = x_setting(n, variants[n], dataset)
        method = variants[n].method
        r = ours.get((n, dataset, metric))
        if r is not None:
            pts.append({"x": x, "mean": scale(metric, r.mean), "std": scale(metric, r.std), "full": False})
    r = ours.get((method, dataset, metric)) if method else None
    if r is not None and setting is not None and pts:
        x = setting(method, dataset, key)
        pts = [p for p in pts if p["x"] != x]
        pts.append({"x": x, "mean": scale(metric, r.mean), "std": scale(metric, r.std), "full": True})
    return sorted(pts, key=lambda p: (not isinstance(p["x"], (int, float)), p["x"] if isinstance(p["x"], (int, float))
                                      else 0, str(p["x"])))


def plot_sensitivity(summary: pd.DataFrame, paper: pd.DataFrame, variants: dict[str, VariantConfig], out_dir: Path,
                     setting: Callable | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    ours = _honest(summary)
    written = []
    for (p, fig_id), names in sorted(figure_groups(variants).items(), key=lambda kv: (kv[0][0], int(kv[0][1][7:]))):
        es = sorted({e for n in names for (m, e, _) in ours if m == n})
        if not es:
            continue
        printed = list(paper.loc[(paper["paper"] == p) & (paper["table"] == fig_id), "metric"]) if not paper.empty else []
        metrics = [k for k in dict.fromkeys(printed + [k for e in es for k in FIGURE_METRICS.get(family(e), [])])
                   if any((n, e, k) in ours for n in names for e in es)]
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.0), squeeze=False)
        key = None
        for ax, k in zip(axes[0], metrics):
            for e in es:
                pts = sensitivity_points(summary, variants, names, e, k, setting)
                if not pts:
                    continue
                key = x_setting(names[0], variants[names[0]], e)[0]
                numeric = all(isinstance(q["x"], (int, float)) and not isinstance(q["x"], bool) for q in pts)
                xs = [q["x"] if numeric else i for i, q in enumerate(pts)]
                ax.errorbar(xs, [q["mean"] for q in pts], yerr=[q["std"] for q in pts], marker="o", capsize=3, label=e)
                full = [(x, q["mean"]) for x, q in zip(xs, pts) if q["full"]]
                if full:
                    ax.plot(*zip(*full), marker="*", markersize=13, linestyle="none", color="black",
                            label=f"full model ({e})")
                ax.set_xticks(xs, [str(q["x"]) for q in pts])  # the settings run, not a uniform grid
            ax.set_title(f"{k}" + (" (×100)" if k not in RAW_METRICS else ""))
            ax.set_xlabel(key or "setting")
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"{p} {fig_id}: reproduced on embedded data (mean ± std over seeds)", fontsize=9)
        fig.tight_layout()
        path = Path(out_dir) / f"{stem(p, fig_id)}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------- the stage
def write_ablations(summary: pd.DataFrame, paired: pd.DataFrame, paper: pd.DataFrame, params: Params | None,
                    out_dir: Path, setting: Callable | None = None) -> dict[str, list]:
    """Write the ablation tables and sensitivity figures under out_dir (params: `variants:`, and `methods:` for
    the full model's x unless `setting` is given); files there from an earlier run that this one does not
    write are removed. -> {"tables": paths, "figures": paths, "built": table dicts}."""
    from ..io import write_text

    out_dir = Path(out_dir)
    tdir, fdir = out_dir / "tables" / "ablations", out_dir / "figures" / "ablations"
    variants = params.variants if params is not None else {}
    built = build_ablation_tables(summary, paired, paper, variants)
    tables = []
    for t in built:
        for ext, text in (("md", markdown_ablation(t)), ("tex", latex_ablation(t))):
            write_text(tdir / f"{t['stem']}.{ext}", text)
            tables.append(tdir / f"{t['stem']}.{ext}")
    if setting is None and params is not None:
        setting = params_setting(params)
    figures = plot_sensitivity(summary, paper, variants, fdir, setting)
    for folder, keep, exts in ((tdir, tables, ("*.md", "*.tex")), (fdir, figures, ("*.png",))):
        for pattern in exts:
            for f in folder.glob(pattern) if folder.exists() else ():
                if f not in keep:
                    f.unlink()
    return {"tables": tables, "figures": figures, "built": built}

