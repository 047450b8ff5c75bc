"""Named variants (params.yaml `variants:`) and the ablation grid (`ablations:`), without the pipeline: how a
variant resolves (the method's block, its dataset preset, then the variant's settings), what is refused and where,
the grid and fingerprints of the sweep, a variant's training run record, and `msarepro list` / `msarepro resolve`.
The end-to-end behaviour under `dvc repro` is in tests/test_pipeline.py."""
from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from msarepro import config, sweep
from msarepro.cli import main
from msarepro.config import ConfigError, VariantConfig
from msarepro.methods import method_config, method_of, validate_params

from .conftest import ROOT, fast_params


def raw_params(variants: dict | None = None, ablations: dict | None = None, **top) -> dict:
    """params.yaml with the given variants and ablation grid only (none of the file's own), a small sweep on
    synth-mosi and synth-mvsa."""
    raw = config.load_raw(ROOT / "params.yaml")
    raw["variants"] = variants or {}
    raw["ablations"] = ablations or {"variants": [], "datasets": [], "seeds": [1111]}
    raw["sweep"] = {"methods": ["text_only", "lf_dnn"], "datasets": ["synth-mosi"], "seeds": [1111, 1112]}
    raw["pipeline"] = {"datasets": ["synth-mosi", "synth-mvsa"], "pretrain_seed": 1111}
    raw["model"], raw["dataset"], raw["seed"] = "text_only", "synth-mosi", 1111
    raw.update(top)
    return raw


def load(raw: dict, overrides: list[str] = ()) -> config.Params:
    return validate_params(config.from_dict(config.apply_overrides(raw, list(overrides))))


# --------------------------------------------------------------------------------------------- resolution
@pytest.mark.parametrize("method,preset,settings", [
    ("lf_dnn", "", {"lr": 0.005}),
    ("text_only", "synth-mvsa", {"lr": 0.005, "batch_size": 8}),  # over the method's synth-mvsa preset
    ("mult", "mosi", {"levels": 1, "out_dropout": 0.0}),         # MMSA's mosi preset, then the variant
    ("almt", "synth-mosi", {"ahl_guidance": [], "fusion_depth": 2}),
    ("infig", "synth-mvsa", {"use_gam": False, "top_j": 1}),
])
def test_a_variant_is_its_method_with_its_settings_over_the_preset(method, preset, settings):
    p = load(raw_params({"v": {"method": method, "settings": settings}}))
    full, var = method_config(p, method, preset), method_config(p, "v", preset)
    assert method_of(p, "v") == method and method_of(p, method) == method
    assert type(var) is type(full)
    assert config.to_jsonable(var) == {**config.to_jsonable(full), **settings}
    assert var != full  # the settings took effect


def test_a_variant_may_hold_presets_of_its_own():
    """`presets:` inside a variant's settings apply per dataset preset, after the method's preset."""
    settings = {"lr": 0.005, "presets": {"mosi": {"batch_size": 4}, "synth-mosi": {"levels": 1}}}
    p = load(raw_params({"v": {"method": "mult", "settings": settings}}))
    mosi, synth, other = (method_config(p, "v", s) for s in ("mosi", "synth-mosi", "synth-sims"))
    assert mosi.batch_size == 4 and mosi.lr == 0.005  # the variant's preset over MMSA's mosi preset (16) and lr
    assert mosi.dim == method_config(p, "mult", "mosi").dim  # the method's preset still applies beneath
    assert synth.levels == 1 and synth.batch_size == method_config(p, "mult", "synth-mosi").batch_size
    assert other.levels == method_config(p, "mult", "synth-sims").levels and other.lr == 0.005


def test_an_unknown_setting_is_an_error_naming_the_variant():
    with pytest.raises(ConfigError, match=r"variants\.v\.settings\.nope"):
        load(raw_params({"v": {"method": "lf_dnn", "settings": {"nope": 1}}}))
    with pytest.raises(ConfigError, match=r"variants\.v\.settings\.(presets\.mosi\.)?nope"):  # in a preset too
        load(raw_params({"v": {"method": "lf_dnn", "settings": {"presets": {"mosi": {"nope": 1}}}}}))
    with pytest.raises(ConfigError, match=r"variants\.v\.method: 'nope' is not a registered method"):
        load(raw_params({"v": {"method": "nope"}}))
    with pytest.raises(ConfigError, match=r"variants\.v\.pretrain: lf_dnn does not pretrain"):
        load(raw_params({"v": {"method": "lf_dnn", "pretrain": {"epochs": 1}}}))
    with pytest.raises(ConfigError, match=r"variants\.v\.rows"):
        load(raw_params({"v": {"method": "lf_dnn", "rows": ["w/o everything"]}}))


def test_a_variant_cannot_take_a_method_name_or_an_odd_name():
    with pytest.raises(ConfigError, match=r"variants\.tfn: a registered method has this name"):
        load(raw_params({"tfn": {"method": "lf_dnn"}}))
    with pytest.raises(ConfigError, match=r"variants\.Big Name: a variant name is lowercase"):
        load(raw_params({"Big Name": {"method": "lf_dnn"}}))


REFUSED = {"v-no": {"method": "lf_dnn", "refused": "the paper's row needs the authors' private features"},
           "v-ok": {"method": "lf_dnn", "settings": {"lr": 0.005}}}


@pytest.mark.parametrize("where", ["model", "sweep.methods", "ablations.variants"])
def test_a_refused_variant_never_runs_and_the_error_says_why(where):
    raw = raw_params(REFUSED)
    if where == "model":
        raw["model"] = "v-no"
    elif where == "sweep.methods":
        raw["sweep"]["methods"] = ["text_only", "v-no"]
    else:
        raw["ablations"] = {"variants": ["v-ok", "v-no"], "datasets": ["synth-mosi"], "seeds": [1111]}
    with pytest.raises(ConfigError, match=rf"{where}: .*'v-no' cannot run: the paper's row needs the authors'"):
        load(raw)
    p = load(raw_params(REFUSED))  # listed nowhere: the file is valid, and the variant still cannot be resolved
    with pytest.raises(ConfigError, match="cannot run: the paper's row"):
        method_config(p, "v-no", "synth-mosi")
    assert method_config(p, "v-ok", "synth-mosi").lr == 0.005


def test_unknown_names_in_the_grid_are_errors():
    raw = raw_params(REFUSED, {"variants": ["lf_dnn"], "datasets": ["synth-mosi"], "seeds": [1111]})
    with pytest.raises(ConfigError, match=r"ablations.variants: 'lf_dnn' is not a variant"):
        load(raw)
    raw = raw_params(REFUSED, model="nope")
    with pytest.raises(ConfigError, match=r"model: unknown method 'nope'.*variants: v-no, v-ok"):
        load(raw)


def test_overrides_reach_a_variants_settings():
    """`-S variants.v.settings.lr=...` (DVC's syntax) sets a variant's setting, new keys included."""
    raw = raw_params({"v": {"method": "lf_dnn", "settings": {"lr": 0.005}}})
    p = load(raw, ["variants.v.settings.lr=0.01", "variants.v.settings.batch_size=8"])
    cfg = method_config(p, "v", "synth-mosi")
    assert (cfg.lr, cfg.batch_size) == (0.01, 8)
    assert method_config(load(raw), "v", "synth-mosi").batch_size != 8
    with pytest.raises(ConfigError, match=r"variants\.v\.settings\.nope"):
        load(raw, ["variants.v.settings.nope=1"])
    with pytest.raises(ConfigError, match=r"no key 'variants.w'"):
        load(raw, ["variants.w.method=lf_dnn"])


# ---------------------------------------------------------------------------------------------- the grid
GRID_VARIANTS = {"lf-a": {"method": "lf_dnn", "settings": {"lr": 0.005}},
                 "mult-a": {"method": "mult", "settings": {"levels": 1}},
                 "infig-a": {"method": "infig", "settings": {"use_gam": False}}}


def test_the_grid_adds_the_ablations_and_their_full_models():
    """Each ablation variant runs on the ablation datasets its method handles (INFIG's: the image-text one only),
    beside its full model on the same datasets and seeds; jobs already in the main sweep are not repeated."""
    ab = {"variants": ["lf-a", "mult-a", "infig-a"], "datasets": ["synth-mosi", "synth-mvsa"], "seeds": [1111, 1113]}
    p = load(raw_params(GRID_VARIANTS, ab))
    jobs, skipped = sweep.grid(p)
    J = lambda m, d, seeds: {(m, d, s) for s in seeds}  # noqa: E731
    main_sweep = J("text_only", "synth-mosi", (1111, 1112)) | J("lf_dnn", "synth-mosi", (1111, 1112))
    ablation = (J("lf-a", "synth-mosi", (1111, 1113)) | J("mult-a", "synth-mosi", (1111, 1113))
                | J("infig-a", "synth-mvsa", (1111, 1113)))
    full = J("lf_dnn", "synth-mosi", (1111, 1113)) | J("mult", "synth-mosi", (1111, 1113)) | J("infig", "synth-mvsa", (1111, 1113))
    got = [(j.method, j.dataset, j.seed) for j in jobs]
    assert len(got) == len(set(got))  # lf_dnn/synth-mosi/1111 is in both the sweep and the ablation grid: once
    assert set(got) == main_sweep | ablation | full
    assert got[:4] == [("text_only", "synth-mosi", 1111), ("text_only", "synth-mosi", 1112),  # the main sweep first
                       ("lf_dnn", "synth-mosi", 1111), ("lf_dnn", "synth-mosi", 1112)]
    assert {("infig-a", "synth-mosi"), ("infig", "synth-mosi"), ("lf-a", "synth-mvsa"), ("mult-a", "synth-mvsa"),
            ("mult", "synth-mvsa"), ("lf_dnn", "synth-mvsa")} == set(skipped)
    assert sweep.Job("lf-a", "synth-mosi", 1111).run_dir().as_posix() == "runs/sweep/lf-a/synth-mosi/1111"
    assert sweep.validate(p) == jobs
    # the switch: no ablation variants, no ablation jobs
    off = load(raw_params(GRID_VARIANTS, {**ab, "variants": []}))
    assert {(j.method, j.dataset, j.seed) for j in sweep.grid(off)[0]} == main_sweep


def test_the_ablation_datasets_must_be_prepared():
    ab = {"variants": ["lf-a"], "datasets": ["synth-sims"], "seeds": [1111]}
    with pytest.raises(ConfigError, match=r"'synth-sims' is used .*ablations.datasets.*pipeline.datasets"):
        sweep.validate(load(raw_params(GRID_VARIANTS, ab)))
    with pytest.raises(ConfigError, match="ablations: variants are listed but datasets or seeds is empty"):
        sweep.validate(load(raw_params(GRID_VARIANTS, {**ab, "datasets": []})))


def test_fingerprints_follow_the_variant_and_its_method(small_data):
    """Editing a variant's settings changes only that variant's fingerprints; editing its method's block changes
    the method's and all its variants' (a setting the variant overrides excepted); other methods never move."""
    raw = raw_params({"lf-a": {"method": "lf_dnn", "settings": {"lr": 0.005}},
                      "lf-b": {"method": "lf_dnn", "settings": {"batch_size": 8}}},
                     data={**config.load_raw(ROOT / "params.yaml")["data"],
                           "root": str(small_data["synth-mosi"].parent)})
    names = ("text_only", "lf_dnn", "lf-a", "lf-b")

    def fps(*overrides):
        p = load(raw, overrides)
        return {n: sweep.fingerprint(p, sweep.Job(n, "synth-mosi", 1111)) for n in names}

    def moved(a, b):
        return {n for n in names if a[n] != b[n]}

    base = fps()
    assert base["lf-a"]["variant_of"] == "lf_dnn" and "variant_of" not in base["lf_dnn"]
    assert base["lf-a"]["code"] == base["lf_dnn"]["code"]  # a variant runs its method's code
    assert base["lf-a"]["config"]["lr"] == 0.005 and base["lf_dnn"]["config"]["lr"] == 1e-3
    assert len({json.dumps(f, sort_keys=True) for f in base.values()}) == 4
    edited = fps("variants.lf-a.settings.lr=0.004")
    assert moved(base, edited) == {"lf-a"} and sweep._changed(base["lf-a"], edited["lf-a"]) == "config.lr"
    assert moved(base, fps("methods.lf_dnn.weight_decay=0.01")) == {"lf_dnn", "lf-a", "lf-b"}
    assert moved(base, fps("methods.lf_dnn.lr=0.002")) == {"lf_dnn", "lf-b"}  # lf-a sets its own lr
    assert moved(base, fps("methods.tfn.lr=0.002")) == set()


def test_a_variant_run_records_the_variant_and_trains_with_its_settings(tmp_path, small_data):
    from msarepro.train import RunSpec, run

    base = fast_params(1)
    p = validate_params(dataclasses.replace(base, variants={"lf-fast": VariantConfig("lf_dnn", {"lr": 0.005})},
                                            ablations=config.AblationsConfig()))
    for name in ("lf-fast", "lf_dnn"):
        run(p, RunSpec(name, str(small_data["synth-mosi"]), 1111, tmp_path / name, progress=False))
    var, full = (json.loads((tmp_path / n / "config.json").read_text()) for n in ("lf-fast", "lf_dnn"))
    assert var["model"] == "lf-fast" and full["model"] == "lf_dnn"
    assert var["variant"] == {"name": "lf-fast", "method": "lf_dnn", "settings": {"lr": 0.005}, "pretrain": {}}
    assert "variant" not in full
    assert var["method"]["lr"] == 0.005 and full["method"]["lr"] == base.methods["lf_dnn"]["lr"]
    assert {k: v for k, v in var["method"].items() if k != "lr"} == {k: v for k, v in full["method"].items() if k != "lr"}
    assert json.loads((tmp_path / "lf-fast" / "metrics.json").read_text())["model"] == "lf-fast"
    # the variant's lr trained other weights
    assert (tmp_path / "lf-fast/predictions.csv").read_bytes() != (tmp_path / "lf_dnn/predictions.csv").read_bytes()


# ----------------------------------------------------------------------------------- list and resolve
def _params_file(tmp_path, raw: dict) -> str:
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(f)


def test_list_shows_the_variants_with_their_rows(tmp_path, capsys):
    variants = {"almt-x": {"method": "almt", "settings": {"ahl_guidance": [], "fusion": "concat"},
                           "rows": ["Table 4: w/o AHL", "Table 6: none"]},
                "almt-y": {"method": "almt", "paper": "almt-ext", "rows": ["Figure 5: hyper"],
                           "refused": "the hyper query needs the authors' unreleased code"}}
    ab = {"variants": ["almt-x"], "datasets": ["synth-mosi"], "seeds": [1111, 1112]}
    f = _params_file(tmp_path, raw_params(variants, ab))
    assert main(["list", "--params", f]) == 0
    out = capsys.readouterr().out
    lines = out[out.index("variants ("):].splitlines()
    x = next(i for i, line in enumerate(lines) if line.split()[:1] == ["almt-x"])
    assert lines[x].split()[1] == "almt" and "almt Table 4: w/o AHL; almt Table 6: none" in lines[x]
    assert "ahl_guidance=[]" in lines[x + 1] and "fusion='concat'" in lines[x + 1]
    y = next(i for i, line in enumerate(lines) if line.split()[:1] == ["almt-y"])
    assert "almt-ext Figure 5: hyper" in lines[y]
    assert "REFUSED: the hyper query needs the authors' unreleased code" in lines[y + 1]
    assert "ablation grid: 1 variants x synth-mosi x seeds 1111, 1112" in out
    # the switch: without variants the section is empty
    assert main(["list", "--params", _params_file(tmp_path, raw_params())]) == 0
    assert "almt-x" not in capsys.readouterr().out


def test_resolve_records_what_the_single_experiment_runs(tmp_path, small_data, capsys):
    """The `resolve` stage's record: the run name, its method and the resolved Config. It changes with the
    variant's settings and its method's block, not with another method's (the train stage depends on it)."""
    raw = raw_params({"lf-a": {"method": "lf_dnn", "settings": {"lr": 0.005}}}, model="lf-a",
                     data={**config.load_raw(ROOT / "params.yaml")["data"], "root": str(small_data["synth-mosi"].parent)})
    f = _params_file(tmp_path, raw)

    def record(*sets):
        out = tmp_path / "resolved.json"
        assert main(["resolve", "--out", str(out), "--params", f, *(a for s in sets for a in ("-S", s))]) == 0
        return json.loads(out.read_text())

    rec = record()
    assert "lf-a (lf_dnn) on synth-mosi" in capsys.readouterr().out
    assert rec["method"] == "lf-a" and rec["variant_of"] == "lf_dnn" and rec["config"]["lr"] == 0.005
    assert rec["dataset"] == "synth-mosi" and rec["seed"] == 1111 and rec["dataset_files"]
    assert record("methods.tfn.lr=0.002") == rec
    assert record("variants.lf-a.settings.lr=0.004")["config"]["lr"] == 0.004
    assert record("methods.lf_dnn.weight_decay=0.01")["config"]["weight_decay"] == 0.01
    plain = record("model=lf_dnn")
    assert plain["method"] == "lf_dnn" and "variant_of" not in plain and plain["config"]["lr"] == 1e-3
