"""The papers' figures, drawn from finished runs (config.json + best.pt); the `figures` stage (`msarepro figures`)
draws them for the sweep's runs into reports/paper_figures/<method>/<dataset>/.

    SFTTR Figure 4   t-SNE of the six decomposed features [C_T, C_V, C_A, F_T, F_V, F_A] of the test split, the
                     model at initialisation (seeded like the run) beside the trained one:
                     sfttr_tsne_test.png, sfttr_features_test.npz (the features), sfttr_cosine_test.json (the
                     mean cosine similarities the contrastive loss pulls together / pushes apart)
    ALMT Figs. 4-5   AHL attention of one test sample, alpha (language x audio) and beta (language x vision) of
                     every guided layer: almt_attention_test.npz (per head), almt_attention_test.png (mean over heads)
    INFIG Figure 4   attention of the last fusion layer from the first text token to the image patches, over the
                     image, for the first test samples: infig_word_attention_test.png

The models only expose what is drawn (`ALMT.attention_maps`, `INFIG.fusion_word_attention`, SFTTR's `feats`);
loading runs, exporting and drawing live here. PNGs carry no software/version metadata, so equal inputs give equal
bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..io import atomic_path, write_json

PAPER_FIGURES = ("sfttr", "almt", "infig")  # methods with a figure drawn here
PNG_METADATA = {"Software": None}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path, **kw) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata=PNG_METADATA, **kw)
    plt.close(fig)
    return Path(path)


# ---- loading a finished run -----------------------------------------------------------------------------------

def load_run(run_dir: str | Path, method: str, params_path: str | Path = "params.yaml"):
    """-> (model at initialisation, seeded like the run; the run's dataset, with the token ids the method reads,
    provided as in training; its resolved config). Load the trained weights with `load_best`. ConfigError when the
    run is not a `method` run, or when the dataset's tokens are no longer those the run recorded."""
    from .. import config
    from ..config import ConfigError
    from ..data import ensure_dataset, load_dataset
    from ..methods import build_method, get_method
    from ..train import provide_inputs

    run_dir = Path(run_dir)
    resolved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    if resolved["model"] != method:
        raise ConfigError(f"{run_dir / 'config.json'}: a {resolved['model']!r} run; expected a {method} run")
    data = config.build(config.DataConfig, resolved["data"], "data") if "data" in resolved else \
        config.load(params_path).data
    ds = load_dataset(ensure_dataset(resolved["dataset"], data.root, data.synth_seed, data.synth_scale))
    cfg = config.build(get_method(method).Config, resolved["method"], f"methods.{method}")
    tokens = provide_inputs(method, cfg, ds, data.root)  # check, then the tokens, as the training loop does
    if "tokens" in resolved and tokens != resolved["tokens"]:
        raise ConfigError(f"{run_dir / 'config.json'}: the run read tokens {resolved['tokens']}, the dataset now "
                          f"gives {tokens}; re-create the dataset's tokens as they were, or retrain")
    torch.manual_seed(resolved["seed"])
    return build_method(method, cfg, ds.manifest), ds, resolved


def load_best(model: torch.nn.Module, run_dir: str | Path) -> torch.nn.Module:
    """The run's best.pt weights into `model` (from `load_run`), through the training loop's one loader (which
    verifies the fingerprint of the frozen modules best.pt leaves out). -> model in eval mode."""
    from ..train import load_weights

    return load_weights(model, Path(run_dir) / "best.pt").eval()


def _first_batch(ds, split: str, n: int) -> dict[str, torch.Tensor]:
    from ..data.loader import to_tensors
    return next(iter(to_tensors(ds)[split].batches(n, shuffle=False)))


# ---- SFTTR Figure 4 -------------------------------------------------------------------------------------------

@torch.no_grad()
def decomposed_features(model, split, batch_size: int = 256) -> np.ndarray:
    """-> (N, 6, d): [C_T, C_V, C_A, F_T, F_V, F_A] of every sample of `split` (SplitTensors), in eval mode."""
    model.eval()
    return torch.cat([model(b)["feats"].cpu() for b in split.batches(batch_size, shuffle=False)]).numpy()


def cosine_statistics(feats) -> dict[str, float]:
    """Mean cosine similarities of (N, 6, d) features: close_close = text-close pairs (C_T,C_V), (C_T,C_A),
    (C_V,C_A); text_far = C_T against F_T, F_V, F_A (what SFTTR's eqs. 4-5 pull together / push apart)."""
    from ..methods.sfttr import C_A, C_T, C_V, F_A, F_T, F_V

    f = F.normalize(torch.as_tensor(feats, dtype=torch.float32), dim=-1)
    cos = lambda a, b: float((f[:, a] * f[:, b]).sum(-1).mean())  # noqa: E731
    return {"close_close": float(np.mean([cos(C_T, C_V), cos(C_T, C_A), cos(C_V, C_A)])),
            "text_far": float(np.mean([cos(C_T, F_T), cos(C_T, F_V), cos(C_T, F_A)]))}


def plot_tsne(panels: dict[str, np.ndarray], path: Path, seed: int = 0, max_points: int = 500) -> Path:
    """t-SNE of the six decomposed features, one panel per entry of `panels` ((N, 6, d) each)."""
    from sklearn.manifold import TSNE

    from ..methods.sfttr import FEATURES

    plt = _pyplot()
    colours = ("red", "green", "blue", "cyan", "yellow", "magenta")  # the paper's colours for C_T .. F_A
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (title, feats) in zip(axes[0], panels.items()):
        feats = feats[:max_points]
        n = len(feats)
        emb = TSNE(2, perplexity=min(30.0, max(2.0, (6 * n - 1) / 3)), random_state=seed, metric="cosine",
                   init="pca").fit_transform(feats.transpose(1, 0, 2).reshape(6 * n, -1))  # the loss's geometry
        for k, name in enumerate(FEATURES):
            pts = emb[k * n:(k + 1) * n]
            ax.scatter(pts[:, 0], pts[:, 1], s=4, c=colours[k], label=name, edgecolors="none")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(markerscale=3, fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def sfttr_tsne(run_dir, out_dir=None, params_path="params.yaml", split: str = "test") -> dict:
    """Write <out>/sfttr_features_<split>.npz (the six decomposed features of the trained model and of the same
    model at initialisation), sfttr_tsne_<split>.png (Figure 4: initialised vs trained) and
    sfttr_cosine_<split>.json; -> the cosine statistics of both. `out` defaults to the run directory."""
    from ..data.loader import to_tensors
    from ..methods.sfttr import FEATURES

    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir)
    model, ds, _ = load_run(run_dir, "sfttr", params_path)
    part = to_tensors(ds)[split]
    before = decomposed_features(model, part)
    after = decomposed_features(load_best(model, run_dir), part)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / f"sfttr_features_{split}.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, initialised=before, trained=after, ids=np.array(part.ids), features=np.array(FEATURES))
    plot_tsne({"(a) initialised": before, "(b) trained SFTTR": after}, out_dir / f"sfttr_tsne_{split}.png")
    stats = {"initialised": cosine_statistics(before), "trained": cosine_statistics(after)}
    write_json(out_dir / f"sfttr_cosine_{split}.json", stats)
    return stats


# ---- ALMT Figures 4-5 -----------------------------------------------------------------------------------------

def save_attention_maps(model, batch: dict[str, torch.Tensor], path: str | Path, sample: int = 0) -> Path:
    """Write one sample's AHL attention maps (`ALMT.attention_maps`) to an .npz file, atomically."""
    maps = model.attention_maps(batch, sample)
    if "index" in batch:
        maps["index"] = np.asarray(int(batch["index"][sample]))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **maps)
    return path


def plot_attention_maps(maps: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """One heat map per AHL layer and source (alpha: audio, beta: vision), mean over heads; rows are the
    language tokens (queries), columns the source's keys."""
    plt = _pyplot()
    layers = sorted({k.split("_layer")[1] for k in maps if "_layer" in k}, key=int)
    kinds = [k for k in ("alpha", "beta") if any(f"{k}_layer{j}" in maps for j in layers)]
    fig, axes = plt.subplots(len(layers), len(kinds), figsize=(3.2 * len(kinds), 2.8 * len(layers)), squeeze=False)
    for r, j in enumerate(layers):
        for c, kind in enumerate(kinds):
            ax = axes[r][c]
            w = maps.get(f"{kind}_layer{j}")
            if w is None:
                ax.axis("off")
                continue
            im = ax.imshow(w.mean(0), aspect="auto", cmap="viridis", vmin=0)
            ax.set_title(f"{kind} ({'audio' if kind == 'alpha' else 'vision'}), AHL layer {j}", fontsize=8)
            ax.set_xlabel("key", fontsize=7)
            ax.set_ylabel("language token", fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def almt_attention(run_dir, out_dir=None, params_path="params.yaml", split: str = "test", sample: int = 0) -> Path:
    """Write <out>/almt_attention_<split>.npz and .png for sample `sample` of the trained run's `split`."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir)
    model, ds, resolved = load_run(run_dir, "almt", params_path)
    batch = _first_batch(ds, split, sample + 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_attention_maps(load_best(model, run_dir), batch, out_dir / f"almt_attention_{split}.npz", sample)
    with np.load(path) as z:
        maps = {k: z[k] for k in z.files}
    plot_attention_maps(maps, out_dir / f"almt_attention_{split}.png",
                        f"ALMT on {Path(resolved['dataset']).name}, {split} sample {sample}")
    return path


# ---- INFIG Figure 4 -------------------------------------------------------------------------------------------

def plot_word_attention(image: torch.Tensor, attention: torch.Tensor, word: str, path) -> Path:
    """Image (3, H, W) in [0, 1] with the patch attention (h, w) of `word` overlaid; PNG at `path`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3, 3))
    _overlay(ax, image, attention, word)
    return _save(fig, path, bbox_inches="tight", dpi=100)


def _overlay(ax, image: torch.Tensor, attention: torch.Tensor, title: str) -> None:
    heat = F.interpolate(attention[None, None].float(), size=image.shape[-2:], mode="bilinear",
                         align_corners=False)[0, 0]
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    ax.imshow(heat.cpu().numpy(), alpha=0.5, cmap="jet")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def infig_word_attention(run_dir, out_dir=None, params_path="params.yaml", split: str = "test",
                         samples: int = 4) -> Path:
    """Write <out>/infig_word_attention_<split>.png: for the first `samples` samples of `split`, the trained
    model's last-fusion-layer attention from the first text token (position 1, after [CLS]) to the patches."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir)
    model, ds, _ = load_run(run_dir, "infig", params_path)
    batch = _first_batch(ds, split, samples)
    n = len(batch["image"])
    att = load_best(model, run_dir).fusion_word_attention(batch, torch.ones(n, dtype=torch.long))
    texts = ds.splits[split].labels.get("text")
    plt = _pyplot()
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.3), squeeze=False)
    for i in range(n):
        words = str(texts.iloc[i]).split() if texts is not None else []
        _overlay(axes[0][i], batch["image"][i], att[i], f"first token of {words[0]!r}" if words else "token 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(fig, out_dir / f"infig_word_attention_{split}.png", bbox_inches="tight", dpi=100)


# ---- the figures stage ----------------------------------------------------------------------------------------

DRAW = {"sfttr": sfttr_tsne, "almt": almt_attention, "infig": infig_word_attention}


def sweep_runs(sweep_root: str | Path) -> list[tuple[str, str, Path]]:
    """(method, dataset, run dir) of the lowest finished seed per (method, dataset) of a sweep
    (runs/sweep/<method>/<dataset>/<seed>/ with best.pt), for the methods with a figure here."""
    found = []
    for method in PAPER_FIGURES:
        for d in sorted(p for p in (Path(sweep_root) / method).glob("*") if p.is_dir()):
            seeds = sorted((s for s in d.iterdir() if s.name.isdigit() and (s / "best.pt").exists()),
                           key=lambda s: int(s.name))
            if seeds:
                found.append((method, d.name, seeds[0]))
    return found


def draw_paper_figures(sweep_root: str | Path, out_dir: str | Path, params_path: str | Path = "params.yaml",
                       split: str = "test") -> list[Path]:
    """The figures stage: every paper figure of the sweep's runs into <out>/<method>/<dataset>/; -> the files
    written. The output folder is rebuilt whole, so figures of runs no longer in the sweep disappear."""
    import shutil

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    for method, dataset, run_dir in sweep_runs(sweep_root):
        DRAW[method](run_dir, out_dir / method / dataset, params_path, split)
    return sorted(p for p in out_dir.rglob("*") if p.is_file())
