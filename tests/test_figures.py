"""The papers' figures live in report/ and the `figures` stage: `msarepro figures` on a tiny sweep writes SFTTR's
t-SNE, ALMT's attention maps and INFIG's word attention; the method files import no plotting code."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import msarepro

from .conftest import ROOT, fast_params

PACKAGE = Path(msarepro.__file__).resolve().parent
PNG = b"\x89PNG\r\n\x1a\n"
TINY_SWEEP = {"sfttr": "synth-sims", "almt": "synth-mosi", "infig": "synth-mvsa"}


@pytest.fixture(scope="module")
def tiny_sweep(small_data, tmp_path_factory):
    """runs/sweep/<method>/<dataset>/<seed>/ of one-epoch runs (a second, unfinished seed dir holds no best.pt)."""
    from msarepro.train import RunSpec, run

    root = tmp_path_factory.mktemp("runs") / "sweep"
    params = fast_params(max_epochs=1)
    for method, dataset in TINY_SWEEP.items():
        d = root / method / dataset
        run(params, RunSpec(method, str(small_data[dataset]), 1111, d / "1111", progress=False))
        (d / "1112").mkdir()
    return root


def test_figures_command_draws_every_paper_figure(tiny_sweep, tmp_path, capsys):
    from msarepro.cli import main

    out = tmp_path / "paper_figures"
    (out / "stale").mkdir(parents=True)  # the folder is rebuilt whole
    assert main(["figures", "--sweep", str(tiny_sweep), "--out", str(out), "--params", str(ROOT / "params.yaml")]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["almt/synth-mosi/almt_attention_test.npz", "almt/synth-mosi/almt_attention_test.png",
                     "infig/synth-mvsa/infig_word_attention_test.png",
                     "sfttr/synth-sims/sfttr_cosine_test.json", "sfttr/synth-sims/sfttr_features_test.npz",
                     "sfttr/synth-sims/sfttr_tsne_test.png"]
    assert f"wrote {len(files)} files" in capsys.readouterr().out
    assert all((out / f).read_bytes()[:8] == PNG for f in files if f.endswith(".png"))
    with np.load(out / "sfttr/synth-sims/sfttr_features_test.npz") as z:
        assert z["trained"].shape[1] == 6 and not np.array_equal(z["trained"], z["initialised"])
    assert set(json.loads((out / "sfttr/synth-sims/sfttr_cosine_test.json").read_text())) == {"initialised", "trained"}
    with np.load(out / "almt/synth-mosi/almt_attention_test.npz") as z:
        assert any(k.startswith("alpha_layer") for k in z.files)


def test_attention_figures_are_byte_identical_run_to_run(tiny_sweep, tmp_path):
    from msarepro.report.figures_papers import almt_attention, infig_word_attention

    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        almt_attention(tiny_sweep / "almt" / "synth-mosi" / "1111", out)
        infig_word_attention(tiny_sweep / "infig" / "synth-mvsa" / "1111", out)
    assert {p.name: p.read_bytes() for p in a.iterdir()} == {p.name: p.read_bytes() for p in b.iterdir()}


def test_method_files_import_no_plotting_code():
    plotting = ("matplotlib", "sklearn.manifold", "msarepro.report")
    found = {}
    for path in sorted((PACKAGE / "methods").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            names += ["msarepro.report"] if isinstance(node, ast.ImportFrom) and node.level and \
                (node.module or "").startswith("report") else []
            bad = [n for n in names if any(n == p or n.startswith(p + ".") for p in plotting)]
            if bad:
                found.setdefault(path.name, []).extend(bad)
    assert found == {}


def test_the_figures_stage_owns_its_own_output_folder():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    fig = stages["figures"]
    assert fig["cmd"].startswith("msarepro figures") and "runs/sweep" in fig["deps"]
    (out,) = [next(iter(o)) if isinstance(o, dict) else o for o in fig["outs"]]
    assert out == "reports/paper_figures"
    others = [next(iter(o)) if isinstance(o, dict) else o for name, s in stages.items() if name != "figures"
              for key in ("outs", "plots", "metrics") for o in s.get(key, [])]
    assert not [o for o in others if out.startswith(o.rstrip("/") + "/") or o.startswith(out + "/")]
