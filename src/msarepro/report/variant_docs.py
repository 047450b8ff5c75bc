"""The variant tables of docs/methods/<method>.md, generated from params.yaml `variants:`, and the check that
every ablation row of reports/paper_results/*.csv maps to a variant that lists it.

Each page holds one block between the markers BEGIN and END (below): a table of the method's full-model rows
and its variants, each with the paper row(s) it reproduces ("<Table|Figure N>: <row label>"), the settings it
applies (`methods.<method>.<key>: value`, `pretrain.<key>: value`) and, for a refused variant, why the row
cannot be reproduced here. params.yaml is read with plain yaml.safe_load: this module needs no config types.

    python -m msarepro.report.variant_docs           rewrite the blocks of docs/methods/*.md
    python -m msarepro.report.variant_docs --check   exit 1, naming the stale pages (or the rows that map to no
                                                     variant), without writing
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

BEGIN = "<!-- >>> variants (generated: python -m msarepro.report.variant_docs) -->"
END = "<!-- <<< variants -->"
SCHEMA = ["paper", "table", "kind", "dataset", "method", "row", "variant", "metric", "value", "note"]
TABLE_ID = re.compile(r"(Table|Figure) [1-9][0-9]*")
ROW_REF = re.compile(r"(?P<table>(?:Table|Figure) [1-9][0-9]*): (?P<row>.+)")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
KINDS = ("main", "ablation")
_BLOCK = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)


# -- reading ----------------------------------------------------------------------------------------------------
def read_papers(paper_dir: Path) -> dict[str, tuple[list[str], list[dict[str, str]]]]:
    """paper id (the file's stem) -> (its header, its rows as read, all strings)."""
    out = {}
    for f in sorted(Path(paper_dir).glob("*.csv")):
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            out[f.stem] = (list(reader.fieldnames or []), list(reader))
    return out


def read_paper_rows(paper_dir: Path) -> dict[str, list[dict[str, str]]]:
    """paper id -> its rows."""
    return {paper: rows for paper, (_, rows) in read_papers(paper_dir).items()}


def variants_of(params_raw: dict) -> dict[str, dict]:
    section = params_raw.get("variants") or {}
    if not isinstance(section, dict):
        raise ValueError(f"params.yaml variants: expected a mapping of name -> variant, got {section!r}")
    return section


def paper_of(v: dict) -> str:
    """The paper whose csv holds the variant's rows ("" = the method's own paper)."""
    return v.get("paper") or v.get("method") or ""


# -- the check --------------------------------------------------------------------------------------------------
def row_problems(params_raw: dict, paper_dir: Path, registered: Iterable[str] | None = None) -> list[str]:
    """Every way the paper csvs and `variants:` disagree (empty: they agree). `registered`: the registered
    method names (None skips the checks that need them); a main row's `method` is read as registered through
    the papers' spellings (methods.paper_aliases: mag-bert -> mag_bert)."""
    aliases: dict[str, str] = {}
    if registered is not None:
        from ..methods import paper_aliases
        registered = set(registered)
        aliases = paper_aliases()
    variants = variants_of(params_raw)
    probs, printed = _csv_problems(paper_dir, variants, registered, aliases)
    return probs + _variant_problems(variants, printed, Path(paper_dir).name, registered)


def _csv_problems(paper_dir: Path, variants: dict[str, dict], registered: set[str] | None,
                  aliases: dict[str, str]) -> tuple[list[str], dict[str, set[tuple[str, str]]]]:
    """The csvs' own problems and each row's against its variant -> (problems, paper -> {(table, row)} of its
    ablation rows)."""
    probs: list[str] = []
    printed: dict[str, set[tuple[str, str]]] = {}
    for paper, (header, rows) in read_papers(paper_dir).items():
        where = f"{Path(paper_dir).name}/{paper}.csv"
        if header != SCHEMA:
            probs.append(f"{where}: header {','.join(header)!r}; expected {','.join(SCHEMA)}")
            continue
        for i, r in enumerate(rows, start=2):
            at = f"{where}:{i}"
            if not TABLE_ID.fullmatch(r["table"]):
                probs.append(f"{at}: table {r['table']!r}; expected 'Table N' or 'Figure N'")
            if r["kind"] not in KINDS:
                probs.append(f"{at}: kind {r['kind']!r}; expected one of {', '.join(KINDS)}")
            method, label, name = r["method"], r["row"], r["variant"]
            if registered is not None and name and name not in registered and name not in variants:
                probs.append(f"{at}: variant {name!r} is neither a registered method nor in params.yaml variants:")
            if r["kind"] == "main":
                if name and name != aliases.get(method, method):
                    probs.append(f"{at}: a main row's variant must be its method {aliases.get(method, method)!r} or "
                                 f"empty, got {name!r}")
                continue
            if not label or not name:
                probs.append(f"{at}: an ablation row needs its printed label (row) and the variant that "
                             f"reproduces it (variant); got row={label!r}, variant={name!r}")
                continue
            printed.setdefault(paper, set()).add((r["table"], label))
            if name == method:
                continue  # the full model's own row inside the ablation table
            v = variants.get(name)
            if v is None:
                probs.append(f"{at}: variant {name!r} is not in params.yaml variants:")
                continue
            if v.get("method") != method:
                probs.append(f"{at}: row of method {method!r}, but variant {name!r} is of {v.get('method')!r}")
            if paper_of(v) != paper:
                probs.append(f"{at}: variant {name!r} points at paper {paper_of(v)!r}, not {paper!r}")
            if f"{r['table']}: {label}" not in (v.get("rows") or []):
                probs.append(f"{at}: variant {name!r} does not list this row; add \"{r['table']}: {label}\" to "
                             f"variants.{name}.rows")
    return probs, printed


def _variant_problems(variants: dict[str, dict], printed: dict[str, set[tuple[str, str]]], folder: str,
                      registered: set[str] | None) -> list[str]:
    """Each variant's own problems, and the Table rows it lists that its paper's csv lacks."""
    probs: list[str] = []
    for name, v in variants.items():
        where = f"params.yaml variants.{name}"
        if not isinstance(v, dict):
            probs.append(f"{where}: expected a mapping (method, settings, rows, ...)")
            continue
        if not NAME.fullmatch(str(name)):
            probs.append(f"{where}: names are lowercase letters, digits, '-' and '_' (starting with a letter or digit)")
        if registered is not None:
            if name in registered:
                probs.append(f"{where}: a variant cannot take a registered method's name")
            if v.get("method") not in registered:
                probs.append(f"{where}.method: {v.get('method')!r} is not a registered method "
                             f"({', '.join(sorted(registered))})")
        for key in ("settings", "pretrain"):
            if not isinstance(v.get(key) or {}, dict):
                probs.append(f"{where}.{key}: expected a mapping of Config keys -> values")
        if not isinstance(v.get("refused") or "", str):
            probs.append(f"{where}.refused: expected a string (the reason), got {v.get('refused')!r}")
        rows = v.get("rows") or []
        if not isinstance(rows, list) or not rows:
            probs.append(f"{where}.rows: expected a non-empty list of \"<table id>: <row label>\", got {rows!r}")
            continue
        paper = paper_of(v)
        for ref in rows:
            m = ROW_REF.fullmatch(str(ref))
            if m is None:
                probs.append(f"{where}.rows: {ref!r}; expected \"Table N: <row label>\" or \"Figure N: <label>\"")
            elif m["table"].startswith("Table") and (m["table"], m["row"]) not in printed.get(paper, set()):
                probs.append(f"{where}.rows: {ref!r} is no ablation row of {folder}/{paper}.csv")
    return probs


# -- rendering --------------------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A setting's value as YAML flow text: false, [text, vision], concat, 0."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in value.items()) + "}"
    if isinstance(value, str):
        try:
            plain = bool(value) and yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain = False
        return value if plain else f'"{value}"'
    return str(value)


def setting_lines(method: str, v: dict) -> list[str]:
    """`methods.<method>.<key>: value` for each setting (a variant's own preset: "(on <preset>)"), then
    `pretrain.<key>: value`."""
    out = []
    for key, value in (v.get("settings") or {}).items():
        if key == "presets" and isinstance(value, dict):
            out += [f"`methods.{method}.{k}: {fmt(x)}` (on {p})" for p, block in value.items()
                    for k, x in (block or {}).items()]
        else:
            out.append(f"`methods.{method}.{key}: {fmt(value)}`")
    out += [f"`pretrain.{k}: {fmt(x)}`" for k, x in (v.get("pretrain") or {}).items()]
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _datasets(rows: list[dict[str, str]], table: str, label: str) -> list[str]:
    return sorted({r["dataset"] for r in rows if r.get("table") == table and r.get("row") == label
                   and r.get("kind") == "ablation"})


def _numbers_on(refs: list[str], rows: list[dict[str, str]]) -> str:
    out = []
    for ref in refs:
        m = ROW_REF.fullmatch(ref)
        if m is None:
            continue
        if m["table"].startswith("Figure"):
            out.append("figure only")
        else:
            out.append(", ".join(_datasets(rows, m["table"], m["row"])) or "–")
    return "<br>".join(dict.fromkeys(out)) or "–"


def render_block(params_raw: dict, paper_dir: Path) -> dict[str, str]:
    """method -> the markdown between the markers of docs/methods/<method>.md (markers excluded)."""
    papers = read_paper_rows(paper_dir)
    by_method: dict[str, list[tuple[str, dict]]] = {}
    for name, v in variants_of(params_raw).items():
        by_method.setdefault(v.get("method", ""), []).append((name, v))
    out = {}
    for method, items in sorted(by_method.items()):
        example = next((n for n, v in items if not v.get("refused")), items[0][0])
        lines = [
            f"Each ablation or sensitivity row of the paper is a named variant in `params.yaml` (`variants:`): "
            f"`{method}` with the settings below applied over `methods.{method}` after the dataset's preset. "
            f"Run one under its name like a method: `msarepro train --model {example}`, "
            f"`dvc exp run -S model={example}`, or list it under `ablations: variants:` in `params.yaml`, so that "
            f"the `sweep` stage runs it, and the full model, on the ablation datasets and seeds. "
            f"The paper's numbers are in `reports/paper_results/` (its `variant` column names these variants).",
            ""]
        if any(v.get("pretrain") for _, v in items):
            lines += ["A variant that changes the pretraining settings (`pretrain.*`) or the encoders pretrains its "
                      "own encoders (`pretrain/<dataset>/<key>/`, the key a hash of those settings); the others "
                      "load the full model's.", ""]
        lines += ["| variant | paper row(s) | settings | paper numbers on |", "| --- | --- | --- | --- |"]
        full: dict[str, list[str]] = {}
        for paper in sorted({paper_of(v) for _, v in items}):
            for r in papers.get(paper, []):
                if r.get("kind") == "ablation" and r.get("variant") == method:
                    full.setdefault(f"{r['table']}: {r['row']}", []).append(r["dataset"])
        if full:
            refs = "<br>".join(_cell(ref) for ref in full)
            on = "<br>".join(", ".join(sorted(set(ds))) for ds in full.values())
            lines.append(f"| `{method}` (full model) | {refs} | the preset as it is | {on} |")
        else:  # the ablation tables' full-model numbers are the paper's main rows for the method
            main = {}
            for paper in sorted({paper_of(v) for _, v in items}):
                for r in papers.get(paper, []):
                    if r.get("kind") == "main" and r.get("variant") == method:
                        main.setdefault(r["table"], set()).add(r["dataset"])
            if main:
                lines.append(f"| `{method}` (full model) | its main results: {', '.join(main)} | the preset as it is "
                             f"| {', '.join(sorted(set().union(*main.values())))} |")
        for name, v in items:
            refs = [str(r) for r in v.get("rows") or []]
            settings = "<br>".join(setting_lines(method, v)) or "none"
            if v.get("refused"):
                settings = f"**refused**: {_cell(str(v['refused']).strip())} (it would set {settings})"
            rows = papers.get(paper_of(v), [])
            lines.append(f"| `{name}` | {'<br>'.join(_cell(r) for r in refs)} | {settings} | "
                         f"{_numbers_on(refs, rows)} |")
        out[method] = "\n".join(lines)
    return out


def render_page(text: str, block: str, page: str) -> str:
    """The page's text with its marked block replaced by `block`; ValueError when the page has no markers."""
    found = _BLOCK.findall(text)
    if len(found) != 1:
        raise ValueError(f"{page}: expected one '{BEGIN}' ... '{END}' block, found {len(found)}; add the two "
                         f"marker lines to its 'Ablation rows' section")
    return _BLOCK.sub(lambda _: f"{BEGIN}\n{block}\n\n{END}", text)


def pages(params_raw: dict, paper_dir: Path, docs_dir: Path) -> dict[Path, tuple[str, str]]:
    """docs page -> (its text now, its text with the block regenerated), for every method with variants and
    every page that carries the markers (a page whose method has no variant left gets an empty table's note)."""
    blocks = render_block(params_raw, paper_dir)
    targets = {Path(docs_dir) / f"{m}.md" for m in blocks}
    targets |= {p for p in Path(docs_dir).glob("*.md") if BEGIN in p.read_text(encoding="utf-8")}
    out = {}
    for page in sorted(targets):
        if not page.is_file():
            raise ValueError(f"{page}: no such page for method {page.stem!r} (variants name it)")
        text = page.read_text(encoding="utf-8")
        block = blocks.get(page.stem, f"No variant in `params.yaml` names `{page.stem}`.")
        out[page] = (text, render_page(text, block, str(page)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m msarepro.report.variant_docs", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml", type=Path)
    ap.add_argument("--papers", default="reports/paper_results", type=Path)
    ap.add_argument("--docs", default="docs/methods", type=Path)
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when a page is out of date")
    args = ap.parse_args(argv)
    from ..methods import all_methods

    prog = "msarepro.report.variant_docs"
    try:
        raw = yaml.safe_load(args.params.read_text(encoding="utf-8")) or {}
        probs = row_problems(raw, args.papers, all_methods())
        if probs:
            print(f"{prog}: the paper rows and {args.params} variants: disagree:\n  " + "\n  ".join(probs),
                  file=sys.stderr)
            return 1
        todo = pages(raw, args.papers, args.docs)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"{prog}: error: {e}; run from the project root", file=sys.stderr)
        return 2
    stale = [p for p, (old, new) in todo.items() if old != new]
    if not stale:
        print(f"{args.docs}: variant tables up to date")
        return 0
    if args.check:
        print(f"{prog}: out of date: {', '.join(map(str, stale))}; run: python -m {prog}", file=sys.stderr)
        return 1
    from ..io import write_text
    for p in stale:
        write_text(p, todo[p][1])
        print(f"{p}: variant table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
