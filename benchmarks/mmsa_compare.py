"""MMSA 2.2.1 against msarepro on the same MOSI-shaped MMSA pickle, same models and settings, on CPU (issue 16).

    python benchmarks/mmsa_compare.py                       # MulT, TFN, LF-DNN; 3 epochs; 2 repetitions
    python benchmarks/mmsa_compare.py --methods mult --epochs 2 --reps 1 --profile
    python benchmarks/mmsa_compare.py --repo ../other-checkout  # measure another msarepro checkout (before/after)
    python benchmarks/mmsa_compare.py --methods mult --set runtime.compile=true  # msarepro with torch.compile

What it does, in a scratch directory (--scratch, kept between calls so the virtual environment is built once):
 1. writes a MOSI-shaped MMSA pickle (default 600/150/300 clips, text 40x768, audio 40x5, vision 40x20: the
    shapes of issue 16's measurement; MOSI's real unaligned text is 50x768, `--text-len 50`) with every key
    MMSA's loader and msarepro's importer read, labels in [-3, 3] carrying a planted signal;
 2. builds a virtual environment with MMSA (`pip install --no-deps mmsa==2.2.1`, its dependencies, torch pinned
    to the version of the interpreter running this script) and imports the pickle into msarepro with
    `msarepro data import-mmsa --preset mosi`;
 3. per repetition and method, runs MMSA (its MOSI config) and `msarepro train` (the mosi preset plus -S
    overrides giving MMSA's settings; `max_epochs` = --epochs, patience out of reach), alternating which side
    goes first (A B, then B A), each in its own process through benchmarks/compare_runner.py, which times every
    epoch's train pass and evaluations; the whole process's wall time is taken here;
 4. writes benchmarks/results/mmsa_compare.{md,json} (--out): per method, seconds per epoch on each side,
    the ratio MMSA / msarepro (> 1: msarepro is faster), training samples/s, the whole process; the settings
    compared key by key with the differences neither side's options can remove; the machine and the commit.
    --profile adds one profiled MulT epoch per side (torch.profiler, top ops by self CPU time).
Not part of CI: it installs packages and trains for minutes. Timings on a shared machine are noisy; compare the
ratios, which come from runs interleaved in one invocation.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "compare_runner.py"
MMSA_VERSION = "2.2.1"
MMSA_DEPS = ["easydict", "numpy", "pandas", "scikit-learn", "tqdm", "transformers", "nvidia-ml-py3"]
SPLITS = ("train", "valid", "test")

# msarepro's -S overrides for MMSA's MOSI settings (config_regression.json of MMSA 2.2.1). MulT's mosi preset in
# params.yaml already holds MMSA's values; TFN and LF-DNN have no mosi preset, so MMSA's values are given here.
# MMSA hidden_dims = (text, audio, video) hidden sizes; dropouts = (audio, video, text, post-fusion).
OVERRIDES = {
    # MMSA's MulT trainer builds Adam without weight decay (its config's weight_decay 0.005 is not used)
    "mult": {"weight_decay": 0.0},
    "tfn": {"hidden_text": 128, "hidden_audio": 32, "hidden_vision": 128, "text_out": 32, "post_fusion_dim": 64,
            "dropout": 0.3, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.0},
    "lf_dnn": {"hidden_text": 128, "hidden_audio": 16, "hidden_vision": 128, "text_out": 256,
               "post_fusion_dim": 128, "dropout": 0.2, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.01},
}
# (MMSA key, msarepro key, how to read MMSA's value) for the key-by-key check of the settings.
KEYMAP = {
    "mult": [("dst_feature_dim_nheads", "dim", lambda v: v[0]), ("dst_feature_dim_nheads", "heads", lambda v: v[1]),
             ("nlevels", "levels", None), ("batch_size", "batch_size", None), ("learning_rate", "lr", None),
             ("grad_clip", "grad_clip", None), ("conv1d_kernel_size_l", "conv_kernel_text", None),
             ("conv1d_kernel_size_a", "conv_kernel_audio", None), ("conv1d_kernel_size_v", "conv_kernel_vision", None),
             ("attn_dropout", "attn_dropout_text", None), ("attn_dropout_a", "attn_dropout_audio", None),
             ("attn_dropout_v", "attn_dropout_vision", None), ("attn_dropout", "attn_dropout_self", None),
             ("relu_dropout", "relu_dropout", None), ("res_dropout", "res_dropout", None),
             ("embed_dropout", "embed_dropout", None), ("output_dropout", "out_dropout", None),
             ("text_dropout", "text_dropout", None)],
    "tfn": [("hidden_dims", "hidden_text", lambda v: v[0]), ("hidden_dims", "hidden_audio", lambda v: v[1]),
            ("hidden_dims", "hidden_vision", lambda v: v[2]), ("text_out", "text_out", None),
            ("post_fusion_dim", "post_fusion_dim", None), ("dropouts", "dropout", lambda v: v[0]),
            ("batch_size", "batch_size", None), ("learning_rate", "lr", None)],
    "lf_dnn": [("hidden_dims", "hidden_text", lambda v: v[0]), ("hidden_dims", "hidden_audio", lambda v: v[1]),
               ("hidden_dims", "hidden_vision", lambda v: v[2]), ("text_out", "text_out", None),
               ("post_fusion_dim", "post_fusion_dim", None), ("dropouts", "dropout", lambda v: v[0]),
               ("batch_size", "batch_size", None), ("learning_rate", "lr", None),
               ("weight_decay", "weight_decay", None)],
}
# What no option on either side makes equal (read from both codes; see the README of benchmarks/).
KNOWN_DIFFERENCES = {
    "mult": [
        "gradient clipping: MMSA clips each gradient value to +-0.6 (clip_grad_value_), msarepro the global norm "
        "to 0.6 (clip_grad_norm_)",
        "MMSA's MulT trainer accumulates gradients over update_epochs = 8 batches and steps the optimizer once per 8 "
        "batches; msarepro steps after every batch",
        "LR schedule: both ReduceLROnPlateau on the valid loss; MMSA factor 0.1 / patience 5, msarepro factor 0.5 / "
        "patience max(1, patience // 2) (no effect in a few epochs)",
        "attention: MMSA's own multi-head attention (linear projections, bmm, softmax, dropout) with a causal "
        "(future) mask (attn_mask: true) and no padding mask; msarepro its own lean blocks (methods/blocks.py: "
        "torch's parameters, one packed projection, a key padding mask, SDPA or softmax + its fast dropout)",
        "positions: MMSA's MulT adds no positional embedding (position_embedding=False); msarepro adds sinusoidal "
        "positions to every transformer's input",
        "Conv1d projections: MMSA pads nothing (length 40 -> 36 with kernel 5), msarepro pads to keep the length; "
        "MMSA's last state is the last (padded) position, msarepro's the last real one",
        "evaluation: MMSA evaluates valid in batches of 16 each epoch; msarepro evaluates valid and test in "
        "batches of 256 each epoch and checkpoints (best.pt, checkpoint.pt, epoch outputs)",
    ],
    "tfn": [
        "dropout: MMSA (audio, video, text, post-fusion) = (0.3, 0.3, 0.3, 0.5); msarepro one rate, 0.3",
        "MMSA's TFN trainer leaves the first two parameters (the audio BatchNorm's affine weights) out of Adam",
        "audio/vision time average: MMSA over all frames, padding included; msarepro over real frames",
    ],
    "lf_dnn": ["audio/vision time average: MMSA over all frames, padding included; msarepro over real frames"],
}


def sh(cmd, **kw) -> str:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout.strip()


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_pickle(path: Path, sizes: dict, shapes: dict, seed: int) -> None:
    """A MOSI-shaped MMSA feature pickle: text (N, Lt, Dt), text_bert (N, 3, Lt), audio/vision with true lengths
    (zero after them), raw_text, id, regression labels in [-3, 3] with a planted signal, annotations and
    classification labels."""
    import pickle

    import numpy as np
    rng = np.random.default_rng(seed)
    (lt, dt), (la, da), (lv, dv) = shapes["text"], shapes["audio"], shapes["vision"]
    w = {m: rng.normal(size=shapes[m][1]) / np.sqrt(shapes[m][1]) for m in shapes}
    data = {}
    for split in SPLITS:
        n = sizes[split]
        t_len = rng.integers(max(2, lt // 4), lt + 1, n)
        a_len = rng.integers(max(1, la // 4), la + 1, n)
        v_len = rng.integers(max(1, lv // 4), lv + 1, n)
        z = rng.normal(size=n)  # the clip's latent sentiment, seen through every modality
        feats, score = {}, 0.0
        for m, lens in (("text", t_len), ("audio", a_len), ("vision", v_len)):
            L, D = shapes[m]
            x = rng.normal(size=(n, L, D)).astype(np.float32) + (z[:, None, None] * w[m][None, None, :]).astype(np.float32)
            x *= (np.arange(L)[None, :] < lens[:, None])[..., None]
            feats[m] = x
            score = score + (x.sum(1) @ w[m]) / lens
        y = np.clip(np.round(3 * np.tanh(score / 3 + 0.3 * rng.normal(size=n)), 1), -3, 3).astype(np.float32)
        ids = rng.integers(1000, 30000, (n, lt))
        mask = (np.arange(lt)[None, :] < t_len[:, None]).astype(np.int64)
        ids = ids * mask
        ids[:, 0] = 101
        text_bert = np.stack([ids, mask, np.zeros_like(ids)], 1).astype(np.float32)
        data[split] = {
            "raw_text": [f"clip {split} {i}" for i in range(n)], "id": [f"{split}_{i:04d}$_$0" for i in range(n)],
            "text": feats["text"], "text_bert": text_bert, "audio": feats["audio"], "vision": feats["vision"],
            "audio_lengths": a_len.astype(np.int64), "vision_lengths": v_len.astype(np.int64),
            "regression_labels": y, "classification_labels": np.sign(y).astype(np.float32) + 1,
            "annotations": np.where(y > 0, "Positive", np.where(y < 0, "Negative", "Neutral")),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".tmp"), "wb") as f:
        pickle.dump(data, f, protocol=4)
    os.replace(path.with_name(path.name + ".tmp"), path)


def ensure_mmsa_venv(venv: Path, torch_version: str) -> Path:
    py = venv / "bin" / "python"
    stamp = venv / f"mmsa-{MMSA_VERSION}-torch-{torch_version}.ok"
    if stamp.exists():
        return py
    print(f"building MMSA's virtual environment in {venv} (torch=={torch_version}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--no-deps", f"mmsa=={MMSA_VERSION}"], check=True)
    subprocess.run(pip + [f"torch=={torch_version}"] + MMSA_DEPS, check=True)
    sh([str(py), "-c", "import MMSA.run"])
    stamp.write_text("ok\n")
    return py


def msarepro_env(repo: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def timed_run(cmd: list[str], cwd: Path, env: dict | None, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {rc}); log {log}:\n{tail}")
    return wall


def side_cmd(side: str, a, method: str, scratch: Path, tag: str, epochs: int, profile_epoch=None):
    out = scratch / "timings" / f"{tag}.json"
    work = scratch / "work" / tag
    common = ["--model", method, "--epochs", str(epochs), "--seed", str(a.seed), "--workdir", str(work),
              "--out", str(out), "--threads", str(a.threads)]
    if profile_epoch is not None:
        common += ["--profile-epoch", str(profile_epoch)]
    if side == "mmsa":
        cmd = [str(a.mmsa_py), str(RUNNER), "mmsa", "--pickle", str(a.pickle), "--workers", str(a.mmsa_workers)]
    else:
        sets = {"max_epochs": epochs, "patience": 10 ** 6, **OVERRIDES[method]}
        cmd = [a.msarepro_python, str(RUNNER), "msarepro", "--dataset", str(a.dataset)]
        # the imported dataset's preset is `mosi`: its block is applied over the method's, so override there
        common += [x for k, v in sets.items() for x in ("-S", f"methods.{method}.presets.mosi.{k}={v}")]
        common += ["-S", f"data.root={scratch / 'data'}"]
        common += [x for kv in a.set for x in ("-S", kv)]
    if work.exists():
        import shutil
        shutil.rmtree(work)
    return cmd + common, out


def run_side(side, a, method, scratch, tag, epochs, profile_epoch=None) -> dict:
    cmd, out = side_cmd(side, a, method, scratch, tag, epochs, profile_epoch)
    env = msarepro_env(a.repo) if side == "msarepro" else None
    wall = timed_run(cmd, a.repo, env, scratch / "logs" / f"{tag}.log")
    res = json.loads(out.read_text())
    res["process_wall_s"] = wall
    return res


def summarise(runs: list[dict]) -> dict:
    """Medians over every (repetition, epoch): train pass, each eval, epoch; training samples/s; process wall."""
    eps = [e for r in runs for e in r["epochs"]]
    med = statistics.median
    ev = {s: med(e["eval_s"].get(s, 0.0) for e in eps) for s in ("valid", "test")}
    train = med(e["train_s"] for e in eps)
    return {"train_s": train, "valid_s": ev["valid"], "test_s": ev["test"], "epoch_s": med(e["epoch_s"] for e in eps),
            "train_samples_per_s": med(e["train_samples"] / e["train_s"] for e in eps),
            "epoch_samples_per_s": med(e["train_samples"] / e["epoch_s"] for e in eps),
            "process_s": med(r["process_wall_s"] for r in runs), "epochs_measured": len(eps),
            "per_run_epoch_s": [[round(e["epoch_s"], 3) for e in r["epochs"]] for r in runs]}


def compare_settings(method: str, mmsa: dict, ours: dict) -> list[dict]:
    rows = []
    for mk, ok, f in KEYMAP[method]:
        mv = mmsa.get(mk)
        mv = f(mv) if (f and mv is not None) else mv
        ov = ours.get(ok)
        same = mv is not None and ov is not None and abs(float(mv) - float(ov)) < 1e-12
        rows.append({"mmsa": mk, "msarepro": ok, "mmsa_value": mv, "msarepro_value": ov, "same": same})
    return rows


def machine(a) -> dict:
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = "?"
    try:
        commit = sh(["git", "-C", str(a.repo), "rev-parse", "HEAD"])
        if sh(["git", "-C", str(a.repo), "status", "--porcelain", "--untracked-files=no"]):
            commit += " (with uncommitted changes)"
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "msarepro_repo": str(a.repo), "msarepro_commit": commit, "load_avg_at_start": os.getloadavg()}


def table_md(res: dict) -> str:
    L = [f"# MMSA {MMSA_VERSION} vs msarepro on CPU (benchmarks/mmsa_compare.py)", ""]
    m = res["machine"]
    L += [f"Machine: {m['cpu']}, {m['cores']} cores, torch {res['torch']['msarepro']} (MMSA side "
          f"{res['torch']['mmsa']}), {res['threads']} torch threads; msarepro commit {m['msarepro_commit']}; "
          f"load average at start {', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}.", "",
          f"Data: MOSI-shaped MMSA pickle, {res['sizes']} clips, per clip {res['shapes']}; {res['epochs']} epochs, "
          f"seed {res['seed']}, {res['reps']} repetitions interleaved (A B, B A, ...); MMSA DataLoader workers "
          f"{res['mmsa_workers']}; msarepro overrides beyond MMSA's settings: "
          f"{', '.join(res.get('msarepro_set') or []) or 'none'}. Medians over every epoch of every repetition. Ratio = MMSA / msarepro "
          "(> 1: msarepro is faster). msarepro evaluates valid and test every epoch, MMSA valid only: "
          "'train + valid' compares like with like; 'epoch' is each side's whole epoch as it runs.", "",
          "| method | MMSA train pass s | msarepro train pass s | ratio train | MMSA train + valid s | "
          "msarepro train + valid s | ratio train + valid | MMSA epoch s | msarepro epoch s (incl. test eval) | "
          "ratio epoch | MMSA samples/s | msarepro samples/s | MMSA process s | msarepro process s | ratio process |",
          "|" + " --- |" * 15]
    for meth, r in res["methods"].items():
        A, B = r["mmsa"], r["msarepro"]
        tva, tvb = A["train_s"] + A["valid_s"], B["train_s"] + B["valid_s"]
        L.append(f"| {meth} | {A['train_s']:.2f} | {B['train_s']:.2f} | {A['train_s'] / B['train_s']:.2f}x | "
                 f"{tva:.2f} | {tvb:.2f} | {tva / tvb:.2f}x | {A['epoch_s']:.2f} | {B['epoch_s']:.2f} | "
                 f"{A['epoch_s'] / B['epoch_s']:.2f}x | {A['train_samples_per_s']:.0f} | "
                 f"{B['train_samples_per_s']:.0f} | {A['process_s']:.1f} | {B['process_s']:.1f} | "
                 f"{A['process_s'] / B['process_s']:.2f}x |")
    L += ["", "Eval seconds per epoch (MMSA valid / msarepro valid + test): " + "; ".join(
        f"{k}: {r['mmsa']['valid_s']:.2f} / {r['msarepro']['valid_s']:.2f} + {r['msarepro']['test_s']:.2f}"
        for k, r in res["methods"].items()), ""]
    for meth, r in res["methods"].items():
        diff = [s for s in r["settings"] if not s["same"]]
        L.append(f"Settings, {meth}: {len(r['settings']) - len(diff)}/{len(r['settings'])} keys equal"
                 + ("" if not diff else "; differ: " + ", ".join(
                     f"{s['mmsa']}={s['mmsa_value']} vs {s['msarepro']}={s['msarepro_value']}" for s in diff))
                 + ". Not removable by options: " + "; ".join(KNOWN_DIFFERENCES[meth]) + ".")
        L.append("")
    for side, prof in res.get("profile", {}).items():
        L += [f"## Profile of one MulT epoch, {side} (top {len(prof['top'])} ops by self CPU time; "
              f"self CPU time of every op in the profiled epoch: {prof['self_cpu_s']:.1f} s)", "", "| op | calls | self CPU s | CPU total s |",
              "| --- | --- | --- | --- |"]
        L += [f"| {o['op']} | {o['calls']} | {o['self_cpu_s']:.3f} | {o['cpu_total_s']:.3f} |" for o in prof["top"]]
        L.append("")
    return "\n".join(L) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="mult,tfn,lf_dnn", help="comma-separated: mult, tfn, lf_dnn")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--reps", type=int, default=2, help="repetitions, the two sides interleaved")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--sizes", default="600,150,300", help="train,valid,test clips")
    p.add_argument("--text-len", type=int, default=40)
    p.add_argument("--text-dim", type=int, default=768)
    p.add_argument("--audio-len", type=int, default=40)
    p.add_argument("--audio-dim", type=int, default=5)
    p.add_argument("--vision-len", type=int, default=40)
    p.add_argument("--vision-dim", type=int, default=20)
    p.add_argument("--repo", type=Path, default=HERE.parent, help="the msarepro checkout to measure (its src/ and "
                   "params.yaml are used; default: this one)")
    p.add_argument("--msarepro-python", default=sys.executable, help="interpreter with msarepro's dependencies")
    p.add_argument("--scratch", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "msarepro-mmsa-compare")
    p.add_argument("--mmsa-workers", type=int, default=0, help="MMSA DataLoader workers (MMSA's default is 4)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0: torch's default)")
    p.add_argument("--profile", action="store_true", help="also profile one MulT epoch on each side")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for msarepro's side (repeatable), e.g. runtime.compile=true")
    p.add_argument("--out", type=Path, default=HERE / "results" / "mmsa_compare", help="writes OUT.md, OUT.json")
    a = p.parse_args()
    a.repo = a.repo.resolve()
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in OVERRIDES]
    if bad:
        raise SystemExit(f"--methods: {bad} not supported; choose from {sorted(OVERRIDES)}")
    scratch = a.scratch.resolve()
    for d in ("timings", "logs", "work"):
        (scratch / d).mkdir(parents=True, exist_ok=True)
    n = [int(x) for x in a.sizes.split(",")]
    sizes = dict(zip(SPLITS, n))
    shapes = {"text": (a.text_len, a.text_dim), "audio": (a.audio_len, a.audio_dim),
              "vision": (a.vision_len, a.vision_dim)}
    tag = f"{'-'.join(map(str, n))}_t{a.text_len}x{a.text_dim}_a{a.audio_len}x{a.audio_dim}_v{a.vision_len}x{a.vision_dim}"
    a.pickle = scratch / f"mosi_like_{tag}.pkl"
    if not a.pickle.exists():
        build_pickle(a.pickle, sizes, shapes, a.seed)
    torch_version = sh([a.msarepro_python, "-c", "import torch; print(torch.__version__.split('+')[0])"])
    a.mmsa_py = ensure_mmsa_venv(scratch / "mmsa-venv", torch_version)
    a.dataset = scratch / "data" / f"mosi-bench-{tag}"
    env = msarepro_env(a.repo)
    t0 = time.perf_counter()
    subprocess.run([a.msarepro_python, "-m", "msarepro.cli", "data", "import-mmsa", str(a.pickle), "--name",
                    a.dataset.name, "--preset", "mosi", "--out", str(a.dataset)], cwd=a.repo, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    import_s = time.perf_counter() - t0
    runs = {m: {"mmsa": [], "msarepro": []} for m in methods}
    for rep in range(a.reps):
        for m in methods:
            order = ("mmsa", "msarepro") if rep % 2 == 0 else ("msarepro", "mmsa")
            for side in order:
                r = run_side(side, a, m, scratch, f"{m}-{side}-rep{rep}", a.epochs)
                runs[m][side].append(r)
                print(f"rep {rep} {m:7s} {side:8s} epochs {[round(e['epoch_s'], 2) for e in r['epochs']]} "
                      f"train {[round(e['train_s'], 2) for e in r['epochs']]} process {r['process_wall_s']:.1f} s",
                      flush=True)
    res = {"mmsa_version": MMSA_VERSION, "epochs": a.epochs, "reps": a.reps, "seed": a.seed, "sizes": sizes,
           "shapes": shapes, "mmsa_workers": a.mmsa_workers, "msarepro_set": a.set, "msarepro_import_s": import_s, "machine": machine(a),
           "torch": {s: runs[methods[0]][s][0]["torch"] for s in ("mmsa", "msarepro")},
           "threads": runs[methods[0]]["msarepro"][0]["threads"], "methods": {}}
    for m in methods:
        res["methods"][m] = {s: summarise(runs[m][s]) for s in ("mmsa", "msarepro")}
        res["methods"][m]["settings"] = compare_settings(m, runs[m]["mmsa"][0]["settings"],
                                                         runs[m]["msarepro"][0]["settings"])
        res["methods"][m]["known_differences"] = KNOWN_DIFFERENCES[m]
        res["methods"][m]["test_metrics"] = {s: [r["test"] for r in runs[m][s]] for s in ("mmsa", "msarepro")}
    if a.profile:
        res["profile"] = {}
        for side in ("mmsa", "msarepro"):
            r = run_side(side, a, "mult", scratch, f"mult-{side}-profile", 2, profile_epoch=1)
            res["profile"][side] = {"top": r["profile_top"][:15], "self_cpu_s": r["profile_self_cpu_s"],
                                    "table": r["profile_table"]}
    write_atomic(a.out.with_suffix(".json"), json.dumps(res, indent=1, default=str) + "\n")
    write_atomic(a.out.with_suffix(".md"), table_md(res))
    print(table_md(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
