"""Pretraining per variant (AE-MT, Table 5): runs whose pretraining settings agree share one pretraining
(pretrain/<dataset>/<key>/), w/o MCD (`pretrain: {consistency_weight: 0}`) and w/o TR (`encoder: lstm`) each get
their own; the stage keeps, replaces and removes key directories as the grid changes; the switch reaches the
saved encoders and a variant's run loads its own key's; Snakemake lists one pretrain job per key."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import yaml

from msarepro import config, sweep
from msarepro.methods import pretrain_settings, validate_params
from msarepro.pretrain.stage import pretrain_plan, run_stage

ROOT = Path(__file__).resolve().parents[1]
DATASET = "synth-mosi"
# defined here, not read from params.yaml's `variants:`, so that editing those cannot change what is tested
VARIANTS = {
    "aemt-wo-cl": {"method": "aemt", "settings": {"contrastive_weight": 0.0}},  # fine-tuning only: shares aemt's
    "aemt-wo-mcd": {"method": "aemt", "pretrain": {"consistency_weight": 0.0}},
    "aemt-wo-tr": {"method": "aemt", "settings": {"encoder": "lstm"}},
}
NAMES = ("aemt", *VARIANTS)


def raw_params(tmp_path, names=NAMES, variants=None) -> dict:
    """params.yaml with AE-MT and `names` (variants) in the sweep on a small synth-mosi, one pretraining epoch,
    encoders under tmp_path/pretrain."""
    raw = config.load_raw(ROOT / "params.yaml")
    raw["model"], raw["dataset"], raw["seed"] = "text_only", DATASET, 1111
    raw["data"].update(root=str(tmp_path / "data"), synth_scale=0.15)
    raw["sweep"] = {"methods": list(names), "datasets": [DATASET], "seeds": [1111, 1112]}
    raw["pipeline"] = {"datasets": [DATASET], "pretrain_seed": 1111}
    raw["pretrain"]["presets"][DATASET]["epochs"] = 1
    raw["methods"]["aemt"]["pretrained"] = f"{tmp_path / 'pretrain'}/{{dataset}}/{{settings}}"
    raw["methods"]["aemt"]["presets"][DATASET].update(max_epochs=1, patience=2)
    raw["variants"] = copy.deepcopy(VARIANTS if variants is None else variants)
    raw["ablations"] = {"variants": [], "datasets": [], "seeds": [1111]}
    return raw


def params_of(raw: dict):
    return validate_params(config.from_dict(raw))


def _mtimes(d: Path) -> dict[str, int]:
    return {f.relative_to(d).as_posix(): f.stat().st_mtime_ns for f in d.rglob("*") if f.is_file()}


def test_variants_that_pretrain_alike_share_a_key(tmp_path):
    p = params_of(raw_params(tmp_path))
    keys = {n: pretrain_settings(p, n, DATASET)[1] for n in NAMES}
    assert keys["aemt-wo-cl"] == keys["aemt"]  # w/o CL switches a fine-tuning loss off: same encoders
    assert len({keys["aemt"], keys["aemt-wo-mcd"], keys["aemt-wo-tr"]}) == 3
    assert pretrain_plan(p, DATASET) == dict(sorted({keys["aemt"]: ["aemt", "aemt-wo-cl"],
                                                     keys["aemt-wo-mcd"]: ["aemt-wo-mcd"],
                                                     keys["aemt-wo-tr"]: ["aemt-wo-tr"]}.items()))
    for n in NAMES:  # what the runs load (Snakemake's train_inputs) is the key's directory
        assert sweep.pretrained_encoders(p, n, DATASET) == tmp_path / "pretrain" / DATASET / keys[n] / "encoders.pt"


def test_stage_pretrains_once_per_key_and_keeps_replaces_removes(tmp_path):
    out = tmp_path / "pretrain" / DATASET
    out.mkdir(parents=True)
    (out / "encoders.pt").write_text("the single-directory layout")  # left by an older version: removed
    raw = raw_params(tmp_path)
    p = params_of(raw)
    keys = {n: pretrain_settings(p, n, DATASET)[1] for n in NAMES}
    log: list[str] = []
    r = run_stage(p, DATASET, out, progress=False, log=log.append)
    assert r["status"] == "pretrained" and {k: v["status"] for k, v in r["keys"].items()} == dict.fromkeys(
        set(keys.values()), "pretrained")
    assert sorted(x.name for x in out.iterdir()) == sorted(set(keys.values()))  # one directory per key
    full = out / keys["aemt"]
    for f in ("encoders.pt", "history.csv", "metrics.json", "timing.json", "fingerprint.json", "settings.json"):
        assert (full / f).is_file(), f
    s = json.loads((full / "settings.json").read_text())
    assert (s["key"], s["runs"], s["pretrain"]["consistency_weight"]) == (keys["aemt"], ["aemt", "aemt-wo-cl"], 0.4)
    assert json.loads((full / "fingerprint.json").read_text())["seed"] == 1111  # pipeline.pretrain_seed
    assert sum("pretraining" in line for line in log) == 3  # aemt-wo-cl did not pretrain again

    before = {k: _mtimes(out / k) for k in set(keys.values())}
    log.clear()
    assert run_stage(p, DATASET, out, progress=False, log=log.append)["status"] == "up to date"
    assert {k: _mtimes(out / k) for k in before} == before and all("up to date" in line for line in log)

    # a stale key directory (here: pretrained with another seed) is pretrained again; the others are untouched
    mcd = out / keys["aemt-wo-mcd"]
    fp = json.loads((mcd / "fingerprint.json").read_text())
    (mcd / "fingerprint.json").write_text(json.dumps({**fp, "seed": 7}))
    log.clear()
    r = run_stage(p, DATASET, out, progress=False, log=log.append)
    assert {k: v["status"] for k, v in r["keys"].items() if v["status"] == "pretrained"} == {mcd.name: "pretrained"}
    assert any("inputs changed (seed)" in line for line in log)
    assert json.loads((mcd / "fingerprint.json").read_text())["seed"] == 1111
    assert all(_mtimes(out / k) == before[k] for k in before if k != mcd.name)

    # changing the variant's pretraining override gives it another key: only it pretrains, its old dir goes
    raw["variants"]["aemt-wo-mcd"]["pretrain"] = {"consistency_weight": 0.0, "tamper_p": 0.3}
    p2 = params_of(raw)
    new_key = pretrain_settings(p2, "aemt-wo-mcd", DATASET)[1]
    assert new_key not in keys.values()
    r = run_stage(p2, DATASET, out, progress=False, log=log.append)
    assert {k for k, v in r["keys"].items() if v["status"] == "pretrained"} == {new_key}
    assert r["removed"] == [mcd.name] and not mcd.exists()
    assert json.loads((out / new_key / "settings.json").read_text())["pretrain"]["tamper_p"] == 0.3
    assert all(_mtimes(out / k) == before[k] for k in (keys["aemt"], keys["aemt-wo-tr"]))

    # a variant that leaves the grid takes its directory with it; the shared one only loses it from its runs
    p3 = params_of(raw_params(tmp_path, names=("aemt", "aemt-wo-mcd")))
    r = run_stage(p3, DATASET, out, progress=False, log=log.append)
    assert sorted(x.name for x in out.iterdir()) == sorted({keys["aemt"], keys["aemt-wo-mcd"]})
    assert json.loads((full / "settings.json").read_text())["runs"] == ["aemt"]
    assert (full / "encoders.pt").stat().st_mtime_ns == before[keys["aemt"]]["encoders.pt"]

    # nothing on the dataset pretrains: skipped.json only
    r = run_stage(params_of(raw_params(tmp_path, names=("text_only",))), DATASET, out, progress=False,
                  log=log.append)
    assert r["status"] == "skipped" and [x.name for x in out.iterdir()] == ["skipped.json"]


def test_the_mcd_switch_reaches_the_encoders_and_a_variant_run_loads_its_own(tmp_path):
    from msarepro.train import RunSpec, run

    names = ("aemt", "aemt-wo-mcd", "aemt-wo-tr")
    p = params_of(raw_params(tmp_path, names=names))
    keys = {n: pretrain_settings(p, n, DATASET)[1] for n in names}
    out = tmp_path / "pretrain" / DATASET
    run_stage(p, DATASET, out, progress=False, log=lambda _: None)
    full, mcd, tr = (torch.load(out / keys[n] / "encoders.pt", weights_only=True) for n in names)
    assert (full["config"]["consistency_weight"], mcd["config"]["consistency_weight"]) == (0.4, 0.0)
    assert full["spec"] == mcd["spec"] and full["key"] == keys["aemt"] and mcd["key"] == keys["aemt-wo-mcd"]
    # same seed, same initialisation, same tampering: only lambda_1 differs, and the encoders learnt differently
    differ = [(m, k) for m in full["encoders"] for k in full["encoders"][m]
              if not torch.equal(full["encoders"][m][k], mcd["encoders"][m][k])]
    assert differ
    assert (full["spec"]["arch"], tr["spec"]["arch"]) == ("transformer", "lstm")  # w/o TR pretrains LSTMs

    r = run(p, RunSpec("aemt-wo-mcd", DATASET, 1111, tmp_path / "run", progress=False))
    assert r["epochs_run"] == 1
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    loaded = conf["method_inputs"]["pretrained_encoders"]["path"]
    assert Path(loaded) == out / keys["aemt-wo-mcd"] / "encoders.pt"


def test_cli_pretrains_for_a_variant_name(tmp_path, small_data, capsys):
    from msarepro.cli import main

    raw = raw_params(tmp_path)
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    data = str(small_data[DATASET])
    assert main(["pretrain", "--dataset", data, "--model", "aemt-wo-tr", "--out", str(tmp_path / "tr"),
                 "--params", str(f), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["key"] == pretrain_settings(params_of(raw), "aemt-wo-tr", DATASET)[1]
    assert torch.load(tmp_path / "tr" / "encoders.pt", weights_only=True)["spec"]["arch"] == "lstm"
    assert main(["pretrain", "--dataset", data, "--model", "mult", "--out", str(tmp_path / "m"),
                 "--params", str(f)]) == 2
    assert "loads no pretrained encoders" in capsys.readouterr().err
    assert main(["pretrain", "--stage", "--dataset", DATASET, "--model", "aemt", "--out", str(tmp_path / "s"),
                 "--params", str(f)]) == 2
    assert "--model does not apply" in capsys.readouterr().err


def test_snakemake_dry_run_lists_one_pretrain_job_per_key(tmp_path):
    from .test_pipeline import BIN, make_project, sh

    raw = raw_params(tmp_path)
    raw["data"]["root"] = "data"
    raw["methods"]["aemt"]["pretrained"] = "pretrain/{dataset}/{settings}"
    p = make_project(tmp_path, raw, git=False)
    params = params_of(raw)
    n_keys = len({pretrain_settings(params, n, DATASET)[1] for n in NAMES})
    assert n_keys == 3
    r = sh([str(BIN / "snakemake"), "--profile", "profiles/local-cpu", "-n", "--quiet", "rules"], p)
    counts = dict(line.split()[:2] for line in r.stdout.splitlines()
                  if line.split()[:1] in (["train"], ["pretrain"]))
    assert counts == {"train": str(len(NAMES) * 2), "pretrain": str(n_keys)}, r.stdout
    r = sh([str(BIN / "snakemake"), "-n", "--printshellcmds"], p)
    for n in ("aemt", "aemt-wo-mcd", "aemt-wo-tr"):  # aemt-wo-cl's runs wait on aemt's pretraining
        key = pretrain_settings(params, n, DATASET)[1]
        assert f"--model {n} --seed 1111 --out pretrain/{DATASET}/{key} " in r.stdout, r.stdout
    assert f"msarepro pretrain --dataset {DATASET} --model aemt-wo-cl" not in r.stdout


def test_stage_pretrains_with_stage_threads_whatever_the_machine(tmp_path, monkeypatch):
    """The DVC stage pretrains with the Snakemake rule's single torch thread, so AE-MT's encoders do not depend on
    the machine's core count (2 threads gave other encoders than 1 from the first epoch); the count is restored,
    and encoders stamped without that count (made before, with the machine's) are pretrained again."""
    from msarepro.pretrain import stage
    seen = []

    def fake(params, dataset, seed, out, **kw):
        seen.append(torch.get_num_threads())
        (Path(out) / "encoders.pt").write_bytes(b"x")
        return {}

    monkeypatch.setattr(stage, "run_pretraining", fake)
    p = params_of(raw_params(tmp_path, names=("aemt",), variants={}))
    out = tmp_path / "pretrain" / DATASET
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stage.run_stage(p, DATASET, out, progress=False, log=lambda m: None)
        assert seen == [stage.STAGE_THREADS] and torch.get_num_threads() == 2
        (key,) = pretrain_plan(p, DATASET)
        fp = json.loads((out / key / "fingerprint.json").read_text())
        assert fp["torch_threads"] == stage.STAGE_THREADS
        assert stage.run_stage(p, DATASET, out, progress=False, log=lambda m: None)["status"] == "up to date"
        del fp["torch_threads"]  # a stamp from before the count was part of it: made with the machine's threads
        (out / key / "fingerprint.json").write_text(json.dumps(fp))
        assert stage.run_stage(p, DATASET, out, progress=False, log=lambda m: None)["status"] == "pretrained"
        assert seen == [stage.STAGE_THREADS] * 2
    finally:
        torch.set_num_threads(before)
