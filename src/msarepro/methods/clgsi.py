"""CLGSI: Contrastive Learning Guided by Sentiment Intensity, with GLFK fusion (docs/methods/clgsi.md).

    text:   BERT-family encoder, [CLS] (B, Dt)             (or precomputed token features, position 0)
    audio, vision: transformer encoder (2 layers, sinusoidal positions, batch-first) at the input width,
            output at the last real frame (B, Da) / (B, Dv)
    common (sec. 3.2):   T_c, V_c, A_c = ReLU(FC(.)) (B, d_c);  F_c = [V_c, T_c, A_c] (B, d_c, 3)
                         GLFK: d_c x 3 -> d_c x 1 -> d_c x beta/2 -> d_c x beta -> d_c x beta/2 -> d_c x 1 = F_k
    specific (sec. 3.3): Subnet, I_m^s = Sigmoid(W2 ReLU(W1 GAP(I_m)))  (B, d_s) for m in t, v, a
    head (sec. 3.5):     3-layer MLP on F* = [I_t; I_v; I_a; F_k] (B, 3 d_s + d_c) -> y_hat (B,)
    loss:   L = L_task (MAE) + gamma * L_cl                   L_cl: eq. 1-3 over T_c, V_c, A_c

Where the paper is silent the authors' code decided (docs/methods/clgsi.md): temperature 0.03, PReLU after GLFK's Local
stage and Tanh on its output, audio/vision transformers at the feature width with per-dataset heads, dropout on
the unimodal vectors before the FC layers, cosine schedule with 10% warm-up, early stop 8 on validation MAE.
Deliberate differences from that code (each a documented choice, not a switch unless noted):
- padding is masked in the A/V encoders and the GAP; "last output" is the last real frame, not the last padded one;
- eq. 3 is implemented as printed: one ratio per anchor sample over all intra- and inter-modal pairs, only the
  selected pairs enter, self-pairs (X_i, X_i) are excluded. The code instead takes one ratio per modality pair,
  scales negatives by 0.8 and lets unselected entries add exp(0) = 1 to both sums;
- labels map to [-1, 1] by each dataset's range (the code divides by 3 everywhere: `label_map: code`);
- GLFK's Knowledge stage reduces beta -> beta/2 -> 1 as the paper's shapes say (the code goes beta -> 1 in one
  convolution: `glfk_knowledge_direct: true`);
- Subnet hidden width max(1, d_m // 8): the code's d_m // 8 is 0 for MOSI's 5-d audio (a constant output);
- the head MLP normalises its first hidden layer (BatchNorm before the ReLU). The code's head also carries a
  BatchNorm (after its second layer). Without one, the Sigmoid specific features (all near 0.5) and F_k vary so
  little across samples at the start that the head's ReLUs can all die and the prediction stays constant (seen
  on the embedded data); `head_norm: false` removes it.
Ablations (Tables 3, 4, 5, 8): use_cl, cl_weights, fusion (glfk | add | concat | gk | lfk | transformer with
fusion_layers), use_common, use_specific. Choices the paper leaves open: "w/o Con" drops the FC projections, the
fusion and the contrastive term (sec. 3.2 places the contrastive learning in the common-feature module); the
Table 8 transformer (8 heads) runs over the 3 modality tokens and its outputs are concatenated (B, 3 d_c).
gamma: 0.24 / 0.33 / 1.0 (MOSI / MOSEI / SIMS) produced the published results; later releases of the authors'
code are reported to use other values, so gamma is a plain Config field set per preset.
Text as precomputed features: MMSA's are BERT's last hidden states, so position 0 is the [CLS] output; the
embedded data's token features are not contextual, so its presets add `text_layers: 1` before taking position 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import Dropout, dropout, last_valid, masked_mean, sinusoidal_positions, transformer_encoder
from .text_encoder import TextEncoder

FUSIONS = ("glfk", "gk", "lfk", "add", "concat", "transformer")
COMMON_ORDER = ("vision", "text", "audio")  # F_c = [V_c, T_c, A_c] (sec. 3.2)


# ---- contrastive learning guided by sentiment intensity (sec. 3.4) ----

def map_labels(y: torch.Tensor, label_range: tuple[float, float], mode: str = "paper") -> torch.Tensor:
    """Uniform map of sentiment labels to [-1, 1], used only by the contrastive term (sec. 3.4.1).
    mode "paper": by the dataset's own range; "code": y / 3 for every dataset (the authors' code)."""
    if mode == "code":
        return y / 3.0
    lo, hi = label_range
    return 2.0 * (y - lo) / (hi - lo) - 1.0


def intensity_difference(y: torch.Tensor) -> torch.Tensor:
    """Eq. 1: D(i, j) = |y_i - y_j|. y: (B,) mapped labels -> (B, B)."""
    return (y[:, None] - y[None, :]).abs()


def pair_partition(d: torch.Tensor, kappa: float, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial positive (D <= kappa, j != i) and negative (D > kappa) pairs, (B, B) bool each (sec. 3.4.1).
    `tol` keeps labels on a grid (0.2 steps) on the same side of kappa in float32 and float64."""
    eye = torch.eye(d.size(0), dtype=torch.bool, device=d.device)
    pos = (d <= kappa + tol) & ~eye
    return pos, d > kappa + tol


def intensity_weights(d: torch.Tensor, kappa: float, gain: float = 1.5, tol: float = 1e-6) -> torch.Tensor:
    """Eq. 2: w = |tanh(D - 2 kappa)| * gain on positive pairs (D <= kappa), |tanh(D)| * gain on negatives.
    d: (B, B) -> (B, B). The two branches meet at D = kappa (both give tanh(kappa) * gain)."""
    return torch.where(d <= kappa + tol, torch.tanh(d - 2 * kappa).abs(), torch.tanh(d).abs()) * gain


def intensity_contrastive_loss(feats: list[torch.Tensor], y: torch.Tensor, kappa: float = 0.4,
                               temperature: float = 0.03, gain: float = 1.5, weighted: bool = True) -> torch.Tensor:
    """Eq. 3 over M modalities. feats: M tensors (B, d) (here T_c, V_c, A_c); y: (B,) labels mapped to [-1, 1].

    For anchor sample i, P^i = intra {(X_i, X_j)} U inter {(X_i, Y_i), X != Y, unordered} U {(X_i, Y_j), X != Y}
    over initial positives j, N^i the same over initial negatives k (no (X_i, Y_i) term there);
    delta(a, p) = exp(w_(i,j) * sim(a, p) / tau), sim = cosine;  L_cl = mean_i -log(sum_P delta / sum_(P U N) delta).
    `weighted=False` (Table 3, "w/o Weight") sets every w to 1.
    """
    z = [F.normalize(f, dim=-1) for f in feats]
    d = intensity_difference(y)
    pos, neg = pair_partition(d, kappa)
    w = intensity_weights(d, kappa, gain) if weighted else torch.ones_like(d)
    eye = torch.eye(d.size(0), dtype=torch.bool, device=d.device)
    pos_logits, all_logits = [], []
    m = len(z)
    for a in range(m):
        for b in range(m):
            logit = w * (z[a] @ z[b].T) / temperature  # (B, B): anchor X_i = z[a][i], partner Y_j = z[b][j]
            p = pos | eye if a < b else pos  # (X_i, Y_i) for X != Y is a positive, counted once per unordered pair
            keep = p | neg
            pos_logits.append(logit.masked_fill(~p, float("-inf")))
            all_logits.append(logit.masked_fill(~keep, float("-inf")))
    num = torch.logsumexp(torch.cat(pos_logits, 1), 1)  # (B,) log sum over P^i
    den = torch.logsumexp(torch.cat(all_logits, 1), 1)  # (B,) log sum over P^i U N^i
    return (den - num).mean()


# ---- GLFK and the other fusions (sec. 3.2, Table 4, Table 8) ----

class GLFK(nn.Module):
    """Global-Local-Fine-Knowledge over F_c (B, d_c, 3) -> F_k (B, d_c). Every stage is a 1x1 convolution across
    the columns of the d_c x C matrix, shared over its d_c rows. variant "gk" drops Local and Fine, "lfk" Global."""

    def __init__(self, beta: int = 16, variant: str = "glfk", knowledge_direct: bool = False, in_cols: int = 3):
        super().__init__()
        stages: list[tuple[str, nn.Module]] = []
        c = in_cols
        if variant in ("glfk", "gk"):
            stages.append(("global", nn.Conv1d(c, 1, 1)))  # d x 3 -> d x 1
            c = 1
        if variant in ("glfk", "lfk"):
            stages.append(("local", nn.Sequential(nn.Conv1d(c, beta // 2, 1), nn.PReLU())))  # -> d x beta/2
            stages.append(("fine", nn.Conv1d(beta // 2, beta, 1)))  # -> d x beta
            c = beta
        if c == beta and not knowledge_direct:
            stages.append(("knowledge_reduce", nn.Conv1d(beta, beta // 2, 1)))  # d x beta -> d x beta/2
            c = beta // 2
        stages.append(("knowledge", nn.Sequential(nn.Conv1d(c, 1, 1), nn.Tanh())))  # -> d x 1
        self.names = [n for n, _ in stages]
        self.stages = nn.ModuleList(s for _, s in stages)

    def forward(self, fc: torch.Tensor, return_stages: bool = False):
        """fc: (B, d_c, C) -> (B, d_c); with return_stages also every stage's output as (B, d_c, C')."""
        x = fc.transpose(1, 2)  # (B, C, d_c): columns as channels
        seen = []
        for s in self.stages:
            x = s(x)
            seen.append(x.transpose(1, 2))
        fk = x.squeeze(1)
        return (fk, seen) if return_stages else fk


class CommonFusion(nn.Module):
    """F_c (B, d_c, 3) -> common feature: GLFK and variants (B, d_c), add (B, d_c), concat (B, 3 d_c),
    transformer over the 3 modality tokens, outputs concatenated (B, 3 d_c) (Appendix D, 8 heads)."""

    def __init__(self, kind: str, d_c: int, beta: int, knowledge_direct: bool, layers: int, heads: int, dropout: float):
        super().__init__()
        self.kind = kind
        self.out_dim = 3 * d_c if kind in ("concat", "transformer") else d_c
        if kind in ("glfk", "gk", "lfk"):
            self.glfk = GLFK(beta, kind, knowledge_direct)
        elif kind == "transformer":
            self.transformer = transformer_encoder(d_c, heads, layers, 4 * d_c, dropout, norm_first=False)

    def forward(self, fc: torch.Tensor) -> torch.Tensor:
        if self.kind == "add":
            return fc.sum(-1)
        if self.kind == "concat":
            return fc.transpose(1, 2).flatten(1)
        if self.kind == "transformer":
            return self.transformer(fc.transpose(1, 2)).flatten(1)
        return self.glfk(fc)


# ---- encoders and the specific-feature Subnet ----

class SeqEncoder(nn.Module):
    """Sinusoidal positions + batch-first (post-norm) transformer encoder at the input width. (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, layers: int, ff: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"clgsi: a {dim}-d modality needs a head count that divides {dim} (got {heads})")
        self.encoder = transformer_encoder(dim, heads, layers, ff, dropout, norm_first=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + sinusoidal_positions(x.size(1), x.size(2), x.device)
        return self.encoder(x, src_key_padding_mask=~mask)


class Subnet(nn.Module):
    """Sec. 3.3: I_m^s = sigma2(W2 sigma1(W1 GAP(I_m))); GAP over real positions. (B, L, d_m) -> (B, d_s)."""

    def __init__(self, d_m: int, d_s: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, d_m // reduction)
        self.net = nn.Sequential(nn.Linear(d_m, hidden), nn.ReLU(), nn.Linear(hidden, d_s), nn.Sigmoid())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(masked_mean(x, mask))


@register("clgsi")
class CLGSI(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        optimizer: str = "adamw"
        scheduler: str = "cosine"
        warmup_ratio: float = 0.1
        task_loss: str = "l1"  # L_task = MAE (sec. 3.5)
        select_metric: str = "MAE"
        patience: int = 8
        batch_size: int = 64
        lr: float = 1e-2  # "Others lr" (Table 7)
        lr_text: float = 5e-5
        lr_audio: float = 1e-3
        lr_video: float = 5e-3
        weight_decay_text: float = 0.01  # no decay on the text encoder's biases and LayerNorms (authors' code)
        weight_decay_audio: float = 0.01
        weight_decay_video: float = 0.001
        weight_decay: float = 0.001  # "others"
        text_encoder: str = "features"
        text_layers: int = 0  # features only: a transformer over the token features before taking position 0
        text_heads: int = 4
        av_layers: int = 2
        audio_heads: int = 1
        video_heads: int = 1
        av_ff: int = 2048
        av_dropout: float = 0.1
        feature_dropout: float = 0.05  # on [CLS] / last frames before the FC to d_c
        common_dim: int = 64  # d_c
        specific_dim: int = 64  # d_s
        subnet_reduction: int = 8
        fusion: str = "glfk"  # glfk | gk | lfk | add | concat | transformer (Tables 4, 8)
        beta: int = 16
        glfk_knowledge_direct: bool = False
        fusion_layers: int = 2
        fusion_heads: int = 8
        use_common: bool = True  # False = "w/o Con" (Table 5): no common features, no contrastive term
        use_specific: bool = True  # False = "w/o Spe"
        use_cl: bool = True  # False = "w/o CL" (Table 3)
        cl_weights: bool = True  # False = "w/o Weight"
        gamma: float = 0.24
        kappa: float = 0.4
        weight_gain: float = 1.5
        temperature: float = 0.03
        label_map: str = "paper"  # paper | code
        head_hidden: int = 128
        head_dropout: float = 0.2
        head_norm: bool = True  # BatchNorm in the head MLP (the authors' code has one; see the module docstring)

        def validate(self, where: str) -> None:
            if self.fusion not in FUSIONS:
                raise ConfigError(f"{where}.fusion: {self.fusion!r}; expected one of {', '.join(FUSIONS)}")
            if self.label_map not in ("paper", "code"):
                raise ConfigError(f"{where}.label_map: {self.label_map!r}; expected paper or code")
            if self.beta < 2 or self.beta % 2:
                raise ConfigError(f"{where}.beta: {self.beta}; expected an even number >= 2")
            if not (self.use_common or self.use_specific):
                raise ConfigError(f"{where}: use_common and use_specific are both false; the head needs one")

    @classmethod
    def problems(cls, cfg: Config, manifest) -> list[str]:
        out = super().problems(cfg, manifest)
        if manifest.task != "regression":  # labels mapped to [-1, 1] (map_labels), MAE loss: intensities
            out.append(f"clgsi predicts sentiment intensity, and dataset {manifest.name!r} is {manifest.task}")
        return out

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        mods = manifest.modalities
        self.text = TextEncoder(cfg.text_encoder, manifest)
        d_t = self.text.out_dim
        # the encoders run at the feature widths, so head counts that do not divide one are fitted (fit_heads)
        self.text_ctx = SeqEncoder(d_t, self.fit_heads("text_heads", d_t, cfg.text_heads), cfg.text_layers,
                                   4 * d_t, cfg.av_dropout) if cfg.text_encoder == "features" and cfg.text_layers > 0 else None
        d_a, d_v = mods["audio"]["dim"], mods["vision"]["dim"]
        self.audio = SeqEncoder(d_a, self.fit_heads("audio_heads", d_a, cfg.audio_heads), cfg.av_layers, cfg.av_ff,
                                cfg.av_dropout)
        self.vision = SeqEncoder(d_v, self.fit_heads("video_heads", d_v, cfg.video_heads), cfg.av_layers, cfg.av_ff,
                                 cfg.av_dropout)
        dims = {"text": d_t, "audio": mods["audio"]["dim"], "vision": mods["vision"]["dim"]}
        head_in = 0
        if cfg.use_common:
            self.to_common = nn.ModuleDict({m: nn.Linear(dims[m], cfg.common_dim) for m in COMMON_ORDER})
            self.fusion = CommonFusion(cfg.fusion, cfg.common_dim, cfg.beta, cfg.glfk_knowledge_direct,
                                       cfg.fusion_layers, cfg.fusion_heads, cfg.av_dropout)
            head_in += self.fusion.out_dim
        if cfg.use_specific:
            self.subnet = nn.ModuleDict({m: Subnet(dims[m], cfg.specific_dim, cfg.subnet_reduction) for m in dims})
            head_in += 3 * cfg.specific_dim
        h = cfg.head_hidden
        norm = nn.BatchNorm1d(h) if cfg.head_norm else nn.Identity()
        self.mlp = nn.Sequential(Dropout(cfg.head_dropout), nn.Linear(head_in, h), norm, nn.ReLU(),
                                 nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """-> per modality (sequence I_m (B, L, d_m), mask (B, L), common-branch vector (B, d_m))."""
        seq_t, mask_t = self.text(batch)
        if self.text_ctx is not None:
            seq_t = self.text_ctx(seq_t, mask_t)
        seq_a = self.audio(batch["audio"], batch["audio_mask"])
        seq_v = self.vision(batch["vision"], batch["vision_mask"])
        return {"text": (seq_t, mask_t, seq_t[:, 0]),  # [CLS]
                "audio": (seq_a, batch["audio_mask"], last_valid(seq_a, batch["audio_mask"])),
                "vision": (seq_v, batch["vision_mask"], last_valid(seq_v, batch["vision_mask"]))}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        enc = self.encode(batch)
        out: dict[str, torch.Tensor] = {}
        parts = []
        if cfg.use_specific:
            parts += [self.subnet[m](enc[m][0], enc[m][1]) for m in ("text", "vision", "audio")]  # I_t, I_v, I_a
        if cfg.use_common:
            common = [F.relu(self.to_common[m](dropout(enc[m][2], cfg.feature_dropout, self.training)))
                      for m in COMMON_ORDER]  # V_c, T_c, A_c (B, d_c)
            out["common"] = torch.stack(common, -1)  # F_c (B, d_c, 3)
            parts.append(self.fusion(out["common"]))  # F_k
        fused = torch.cat(parts, -1)  # F* = [I_t; I_v; I_a; F_k]
        out["fused"] = fused
        out["pred"] = self.head(self.mlp(fused))
        return out

    def losses(self, out, batch, epoch):
        cfg = self.cfg
        terms = {"task": self.task_loss(out["pred"], batch["y"])}
        if cfg.use_cl and cfg.use_common and cfg.gamma > 0:
            y = map_labels(batch["y"], self.manifest.label_range, cfg.label_map)
            feats = list(out["common"].unbind(-1))  # V_c, T_c, A_c
            terms["cl"] = cfg.gamma * intensity_contrastive_loss(feats, y, cfg.kappa, cfg.temperature,
                                                                 cfg.weight_gain, cfg.cl_weights)
        return terms

    def param_groups(self):
        cfg = self.cfg
        text = list(self.text.named_parameters()) + \
            (list(self.text_ctx.named_parameters()) if self.text_ctx is not None else [])
        no_decay = ("bias", "LayerNorm.weight", "norm")
        taken = {id(p) for _, p in text} | {id(p) for p in self.audio.parameters()} | \
            {id(p) for p in self.vision.parameters()}
        groups = [
            {"params": [p for n, p in text if not any(k in n for k in no_decay)], "lr": cfg.lr_text,
             "weight_decay": cfg.weight_decay_text},
            {"params": [p for n, p in text if any(k in n for k in no_decay)], "lr": cfg.lr_text, "weight_decay": 0.0},
            {"params": list(self.audio.parameters()), "lr": cfg.lr_audio, "weight_decay": cfg.weight_decay_audio},
            {"params": list(self.vision.parameters()), "lr": cfg.lr_video, "weight_decay": cfg.weight_decay_video},
            {"params": [p for p in self.parameters() if id(p) not in taken], "lr": cfg.lr,
             "weight_decay": cfg.weight_decay},
        ]
        return [g for g in groups if g["params"]]
