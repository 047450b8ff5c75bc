"""SFTTR: Sequential Fusion of Text-close and Text-far Representations (Sun & Tian); code base ConFEDE.

    unimodal encoders (sec. 3.2)   T = [CLS] of the text encoder (B, Dt);  V, A = [CLS] of a transformer with a
                                   learned CLS token and learned positions over (B, Lm, Dm) -> (B, De)
    decomposition (sec. 3.3)       C_m = close_m(m), F_m = far_m(m): LayerNorm, Linear(-> d) + Tanh, Dropout (B, d)
    pair selection (eq. 1)         cos([T;V;A]^i, [T;V;A]^j); per anchor 2 same-label neighbours, 4 different-label
                                   outliers (2 least, 2 most similar)
    contrastive loss (eqs. 2-8)    NT-Xent over the intra/inter-sample positive and negative pairs, mean over i (17);
                                   eq. 4's own-sample positives (C_T^i, C_V^i), (C_T^i, C_A^i) (`eq4_pairs: text`)
    sequential fusion (eqs. 9-11)  Z_VA = CME(F_V, F_A); Z_VAT = CME(Z_VA, F_T); M = CME(Z_VAT, C_V + C_A + C_T)
    prediction (eqs. 12-13)        mean over M's 4 positions (B, d) -> MLP -> y_m; MSE
    unimodal loss (eqs. 14-16)     one MLP on each of the six features, targets [y_m, y_m, y_m, y_T, y_V, y_A];
                                   only when the dataset has T/A/V labels
    total (eq. 18)                 L_pred + beta_uni L_uni + beta_cl L_cl

Choices where the paper is silent (docs/methods/sfttr.md says what the authors' code did):
- Pair retrieval `pairs_from`: "batch" selects neighbours and outliers among the other samples of the batch (the
  paper's wording, "the set of samples in a batch"); "bank" is the authors' code: every `bank_refresh` epochs the
  [T;V;A] features of the whole training split are recomputed, partners are retrieved from all of it, and the
  retrieved partners are encoded alongside the batch (about 7x the encoder work). Too few candidates (a small
  batch, a rare label) leave the missing pairs out rather than padding them; every epoch history.csv counts the
  inter-sample pairs (i, j) wanted (B x (neighbours + outliers) per batch) and those dropped
  (train_pairs_wanted, train_pairs_dropped). A batch of B offers B - 1 candidates for 2 + 4 partners, so below
  B = 7 pairs are always dropped: the MOSEI preset (batch 4) retrieves from the bank.
- Eq. 4 as printed pairs (C_T^i, C_V^i) and (C_V^i, C_A^i); the text makes C_T^i the anchor that C_V^i and C_A^i
  are pulled to, the same equation's partner half pairs (C_T^j, C_V^j), (C_T^j, C_A^j), and the authors' code
  pairs (C_T^i, C_A^i). `eq4_pairs: text` (default) is that reading; `printed` is the equation as printed.
- "Same label" means the same rounded M label (the authors' code). The two neighbours are drawn at random from the
  `neighbour_pool` most similar same-label samples ("randomly select two similar samples with high cosine scores").
- Eq. 8's denominator, read literally, sums over the pairs of P^i and N^i that share the anchor a
  (`cl_denominator: anchor`); `all` sums over every pair of P^i and N^i.
- Schedule: `pretrain_epochs: 0` trains end to end. `pretrain_epochs: K` is the authors' two stages inside the one
  loop: epochs < K train only the unimodal encoders, each with a linear head on its own label (T/A/V when the
  dataset has them, else M), at `pretrain_lr` (sec. 4.2: 1e-4); later epochs train the rest with the text encoder
  frozen (audio/vision stay trainable) at `lr`. Each stage has its own optimizer state and its own warm-up +
  decay schedule over its own epochs (the loop's stages, `stage_starts`), as the authors' separate scripts do.
  Early-stopping patience counts the pretraining epochs too, so it must exceed K.
- Measured on the embedded data: eq. 8 sums over about 20 positive pairs per sample, so at the paper's
  beta_cl = 0.1 the contrastive term outweighs the MSE of these small models; the six features collapse in cosine
  (cos(C_T, C_V) ~ 1, cos(C_T, F_m) ~ -1, little variance across samples) and on synth-sims (labels in [-1, 1],
  a small MSE) the model predicts a constant. The embedded-data presets therefore use a smaller beta_cl.
- Figure 4 (t-SNE of the six decomposed features `feats`, initialised vs trained) is drawn by the `figures` stage
  (`msarepro figures`, msarepro.report.figures_papers.sfttr_tsne).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import transformer_encoder
# the shared decomposition pieces (ConFEDE's, which SFTTR extends); re-exported under their old names here
from .contrastive import (C_A, C_T, C_V, F_A, F_T, F_V, FEATURES, contrastive_pairs, nt_xent,  # noqa: F401
                          projector, select_pairs)
from .text_encoder import TextEncoder

MODS = ("text", "vision", "audio")  # the order of eq. 1's [T; V; A]


class SequenceEncoder(nn.Module):
    """Unimodal transformer encoder (sec. 3.2): Linear(D_in -> d), a learned [CLS] token and learned positions,
    `layers` transformer layers; the [CLS] output (B, d)."""

    def __init__(self, in_dim: int, dim: int, layers: int, heads: int, ff: int, max_len: int, dropout: float):
        super().__init__()
        self.inp = nn.Linear(in_dim, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, max_len + 1, dim) * 0.02)
        self.encoder = transformer_encoder(dim, heads, layers, ff, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D_in), mask: (B, L) -> (B, d)."""
        h = torch.cat([self.cls.expand(x.size(0), -1, -1), self.inp(x)], 1) + self.pos[:, : x.size(1) + 1]
        m = torch.cat([mask.new_ones(mask.size(0), 1), mask], 1)
        return self.norm(self.encoder(h, src_key_padding_mask=~m)[:, 0])


class CrossModalityEncoder(nn.Module):
    """Z = CME(A, B) (Figure 3): [A + pos + type_A; B + pos + type_B] through a transformer encoder.
    a: (B, La, d), b: (B, Lb, d) -> (B, La + Lb, d); positions count within each modality."""

    def __init__(self, dim: int, heads: int, layers: int, ff: int, dropout: float, max_len: int = 8):
        super().__init__()
        self.pos = nn.Embedding(max_len, dim)
        self.modality = nn.Embedding(2, dim)  # the two modality-token embeddings
        self.encoder = transformer_encoder(dim, heads, layers, ff, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        parts = []
        for t, x in enumerate((a, b)):
            pos = torch.arange(x.size(1), device=x.device)
            parts.append(x + self.pos(pos)[None] + self.modality.weight[t])
        return self.norm(self.encoder(torch.cat(parts, 1)))


def mlp(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


@register("sfttr")
class SFTTR(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        # optimisation, the authors' fusion stage: AdamW (no decay on bias/LayerNorm), linear warm-up
        optimizer: str = "adamw"
        lr: float = 1.0e-4
        weight_decay: float = 1.0e-3
        scheduler: str = "linear"
        warmup_ratio: float = 0.1
        batch_size: int = 16
        max_epochs: int = 50
        # unimodal encoders
        text_encoder: str = "features"  # see methods/text_encoder.py
        text_pool: str = "cls"  # cls: position 0 ([CLS]); transformer: a CLS transformer like audio/vision's
        encoder_dim: int = 768  # width of the audio/vision encoders (the authors' 768-d representations)
        encoder_layers: int = 1  # 1 on MOSI / CH-SIMS, 3 on MOSEI (sec. 4.2)
        encoder_heads: int = 8
        encoder_ff: int = 2048
        encoder_dropout: float = 0.1
        # decomposition
        proj_dim: int = 384
        close_dropout: float = 0.3
        far_dropout: float = 0.5
        # fusion; "concat" is Table 3's "-fusion" (the six features concatenated into the regressor)
        fusion: str = "sequential"
        fusion_layers: int = 2
        fusion_heads: int = 8
        fusion_ff: int = 256
        fusion_dropout: float = 0.1
        head_dropout: float = 0.1
        # contrastive learning; contrastive=false is Table 3's "-cl"
        contrastive: bool = True
        beta_cl: float = 0.1
        temperature: float = 0.5
        cl_denominator: str = "anchor"  # anchor | all | pair (ConFEDE's form, contrastive.nt_xent)
        eq4_pairs: str = "text"  # text: (C_T^i, C_V^i), (C_T^i, C_A^i) | printed: (C_T^i, C_V^i), (C_V^i, C_A^i)
        pairs_from: str = "batch"  # batch | bank
        bank_refresh: int = 2  # epochs between bank recomputations (ConFEDE: 2)
        neighbours: int = 2
        neighbour_pool: int = 4
        outliers_low: int = 2
        outliers_high: int = 2
        # unimodal prediction; unimodal_loss=false is Table 3's "-uni"; off anyway without T/A/V labels
        unimodal_loss: bool = True
        beta_uni: float = 0.01
        # two-stage schedule (0 = end to end); the first stage's learning rate (sec. 4.2: encoders at 1e-4)
        pretrain_epochs: int = 0
        pretrain_lr: float = 1.0e-4

        def validate(self, where: str) -> None:
            choices = {"text_pool": ("cls", "transformer"), "fusion": ("sequential", "concat"),
                       "cl_denominator": ("anchor", "all", "pair"), "pairs_from": ("batch", "bank"),
                       "eq4_pairs": ("text", "printed")}
            for key, ok in choices.items():
                if getattr(self, key) not in ok:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)!r}; expected one of {', '.join(ok)}")
            if self.proj_dim % self.fusion_heads or self.encoder_dim % self.encoder_heads:
                raise ConfigError(f"{where}: proj_dim must be divisible by fusion_heads and encoder_dim by "
                                  "encoder_heads")
            if self.neighbour_pool < self.neighbours:
                raise ConfigError(f"{where}.neighbour_pool ({self.neighbour_pool}) must be >= neighbours")
            if self.pretrain_epochs and self.patience <= self.pretrain_epochs:
                raise ConfigError(f"{where}.patience ({self.patience}) must exceed pretrain_epochs "
                                  f"({self.pretrain_epochs}): early stopping counts the pretraining epochs")

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        mods = manifest.modalities
        self.text = TextEncoder(cfg.text_encoder, manifest)
        enc = dict(dim=cfg.encoder_dim, layers=cfg.encoder_layers, heads=cfg.encoder_heads, ff=cfg.encoder_ff,
                   dropout=cfg.encoder_dropout)
        self.encoders = nn.ModuleDict({m: SequenceEncoder(mods[m]["dim"], max_len=mods[m]["max_len"], **enc)
                                       for m in ("vision", "audio")})
        if cfg.text_pool == "transformer":
            text_len = mods["text" if cfg.text_encoder == "features" else "text_ids"]["max_len"]  # what self.text yields
            self.encoders["text"] = SequenceEncoder(self.text.out_dim, max_len=text_len, **enc)
        in_dim = {m: cfg.encoder_dim for m in MODS}
        if cfg.text_pool == "cls":
            in_dim["text"] = self.text.out_dim
        d = cfg.proj_dim
        self.close = nn.ModuleDict({m: projector(in_dim[m], d, cfg.close_dropout) for m in MODS})
        self.far = nn.ModuleDict({m: projector(in_dim[m], d, cfg.far_dropout) for m in MODS})
        if cfg.fusion == "sequential":
            cme = dict(dim=d, heads=cfg.fusion_heads, layers=cfg.fusion_layers, ff=cfg.fusion_ff,
                       dropout=cfg.fusion_dropout)
            self.cme_va, self.cme_vat, self.cme_m = (CrossModalityEncoder(**cme) for _ in range(3))
            self.regressor = mlp(d, d, cfg.head_dropout)  # eq. 12
        else:
            self.regressor = mlp(6 * d, d, cfg.head_dropout)
        self.use_uni = cfg.unimodal_loss and cfg.beta_uni > 0 and manifest.unimodal_labels
        if self.use_uni:
            self.unimodal_head = mlp(d, d, cfg.head_dropout)  # eq. 14, shared by the six features
        if cfg.pretrain_epochs:
            self.pretrain_heads = nn.ModuleDict({m: nn.Linear(in_dim[m], 1) for m in MODS})
        self.stage = "fusion" if not cfg.pretrain_epochs else "pretrain"
        self._train_split = None
        self._bank = None

    # ---- encoding -------------------------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> {"text", "vision", "audio"}: the unimodal representations T, V, A (B, D_m). In the fusion stage of
        two (`pretrain_epochs`) the text side is frozen: it runs in eval mode, once per clip (`Method.cached`)."""
        if self.cfg.pretrain_epochs and self.stage == "fusion":
            t = self.cached("text", batch, self._frozen_text)
        else:
            t = self._text(batch)
        out = {"text": t}
        for m in ("vision", "audio"):
            out[m] = self.encoders[m](batch[m], batch[f"{m}_mask"])
        return out

    def _text(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, mask = self.text(batch)  # (B, L, Dt), position 0 = [CLS]
        return self.encoders["text"](seq, mask) if "text" in self.encoders else seq[:, 0]

    @torch.no_grad()
    def _frozen_text(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """T of the frozen text side (the text encoder and, with text_pool: transformer, its CLS transformer): no
        gradient, eval mode (no dropout; a frozen encoder's output depends on the clip only)."""
        parts = [self.text] + ([self.encoders["text"]] if "text" in self.encoders else [])
        modes = [m.training for m in parts]
        for m in parts:
            m.eval()
        try:
            return self._text(batch)
        finally:
            for m, mode in zip(parts, modes):
                m.train(mode)

    def decompose(self, reps: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> (B, 6, d): [C_T, C_V, C_A, F_T, F_V, F_A] (sec. 3.3)."""
        return torch.stack([self.close[m](reps[m]) for m in MODS] + [self.far[m](reps[m]) for m in MODS], 1)

    def fuse(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, 6, d) -> joint representation (B, d) [sequential] or (B, 6d) [concat]."""
        if self.cfg.fusion == "concat":
            return feats.flatten(1)
        f = feats[:, :, None]  # (B, 6, 1, d): each feature as a length-1 sequence
        z_va = self.cme_va(f[:, F_V], f[:, F_A])  # eq. 9, (B, 2, d)
        z_vat = self.cme_vat(z_va, f[:, F_T])  # eq. 10, (B, 3, d)
        m = self.cme_m(z_vat, f[:, C_V] + f[:, C_A] + f[:, C_T])  # eq. 11, (B, 4, d)
        return m.mean(1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        reps = self.encode(batch)
        feats = self.decompose(reps)
        out = {"pred": self.head(self.regressor(self.fuse(feats))), "feats": feats, "reps": reps,
               "tva": torch.cat([reps[m] for m in MODS], -1).detach()}  # eq. 1's [T; V; A] (B, Dt+Dv+Da)
        return out

    # ---- losses ---------------------------------------------------------------------------------------------
    def losses(self, out, batch, epoch):
        if self.stage == "pretrain":  # stage 1: each unimodal encoder with its own head
            return {f"pre_{m}": F.mse_loss(self.pretrain_heads[m](out["reps"][m]).squeeze(-1),
                                           batch.get(f"y_{m[0].upper()}", batch["y"])) for m in MODS}
        terms = {"pred": self.task_loss(out["pred"], batch["y"])}  # eq. 13
        if self.use_uni and "y_T" in batch:  # eqs. 14-16
            u_hat = self.unimodal_head(out["feats"]).squeeze(-1)  # (B, 6)
            y = batch["y"]
            u = torch.stack([y, y, y, batch["y_T"], batch["y_V"], batch["y_A"]], 1)  # eq. 15
            terms["uni"] = self.cfg.beta_uni * ((u - u_hat) ** 2).sum(1).mean()
        if self.cfg.contrastive and self.cfg.beta_cl > 0:
            terms["cl"] = self.cfg.beta_cl * self.contrastive_loss(out, batch)
        return terms

    def contrastive_loss(self, out, batch) -> torch.Tensor:
        cfg = self.cfg
        feats, B = out["feats"], out["feats"].size(0)
        labels = torch.round(batch["y"].float())
        if cfg.pairs_from == "batch" or self._bank is None:
            tva = F.normalize(out["tva"], dim=-1)
            sim = tva @ tva.T  # eq. 1, (B, B)
            eye = torch.eye(B, dtype=torch.bool, device=sim.device)
            neigh, neigh_ok, outl, outl_ok = select_pairs(sim, labels, labels, eye, cfg.neighbours,
                                                          cfg.neighbour_pool, cfg.outliers_low, cfg.outliers_high)
        else:  # partners retrieved from the training-set bank, encoded alongside the batch
            pool, pool_ok, outl_all, outl_all_ok = (t[batch["index"].cpu()] for t in self._bank)
            score = torch.rand(pool.shape).masked_fill(~pool_ok, -1.0)
            pick = score.topk(cfg.neighbours, dim=1).indices
            neigh_rows, neigh_ok = pool.gather(1, pick), pool_ok.gather(1, pick)
            part = torch.cat([neigh_rows, outl_all], 1)  # (B, K) rows of the training split
            pbatch = {k: v.to(feats.device) for k, v in self._train_split.batch(part.flatten()).items()}
            feats = torch.cat([feats, self.decompose(self.encode(pbatch))], 0)  # (B + B*K, 6, d)
            slots = B + torch.arange(B * part.size(1), device=feats.device).view(B, -1)
            neigh, outl = slots[:, :cfg.neighbours], slots[:, cfg.neighbours:]
            neigh_ok, outl_ok = neigh_ok.to(feats.device), outl_all_ok.to(feats.device)
        # inter-sample pairs (i, j): wanted B x (neighbours + outliers); those without a partner are left out
        wanted = B * (cfg.neighbours + cfg.outliers_low + cfg.outliers_high)
        self.count("pairs_wanted", wanted)
        self.count("pairs_dropped", wanted - int(neigh_ok.sum()) - int(outl_ok.sum()))
        pairs = contrastive_pairs(B, neigh, neigh_ok, outl, outl_ok, cfg.eq4_pairs)
        return nt_xent(feats, pairs, B, cfg.temperature, cfg.cl_denominator)

    # ---- hooks ----------------------------------------------------------------------------------------------
    def stage_starts(self) -> tuple[int, ...]:
        """Two stages with `pretrain_epochs: K` (epochs 0..K-1 unimodal pretraining, then fusion), else one."""
        return (0, self.cfg.pretrain_epochs) if self.cfg.pretrain_epochs else (0,)

    def enter_stage(self, stage: int) -> None:
        self.stage = "pretrain" if self.cfg.pretrain_epochs and stage == 0 else "fusion"
        self.clear_cached()  # the text encoder's weights are fixed from here on (or still train)

    def get_extra_state(self):
        """The retrieval bank is part of the training state: a resumed run must retrieve from the bank built at
        the last refresh, not from one rebuilt with later weights (checkpoint.pt and best.pt carry it)."""
        return {"bank": self._bank}

    def set_extra_state(self, state) -> None:
        bank = (state or {}).get("bank")
        self._bank = None if bank is None else tuple(t.cpu() for t in bank)

    def on_epoch_start(self, epoch: int, train_split) -> None:
        stage = "pretrain" if epoch < self.cfg.pretrain_epochs else "fusion"
        if stage != self.stage:
            self.clear_cached()
        self.stage = stage
        self._train_split = train_split
        cfg = self.cfg
        refresh = (epoch - cfg.pretrain_epochs) % cfg.bank_refresh == 0 or self._bank is None
        if self.stage == "fusion" and cfg.contrastive and cfg.pairs_from == "bank" and refresh:
            self._bank = self.build_bank(train_split)

    @torch.no_grad()
    def build_bank(self, split, chunk: int = 256):
        """Retrieval over the whole training split (the authors' code): -> pool (N, neighbour_pool) most similar
        same-label rows, pool_ok, outliers (N, 4) [2 least, 2 most similar different-label rows], outliers_ok."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        tva = []
        for b in split.batches(chunk, shuffle=False):
            reps = self.encode({k: v.to(dev) for k, v in b.items()})
            tva.append(F.normalize(torch.cat([reps[m] for m in MODS], -1), dim=-1).cpu())
        self.train(was)
        tva = torch.cat(tva)
        labels = torch.round(split.tensors["y"].float())
        n = len(tva)
        res = []
        for s in range(0, n, chunk):
            rows = torch.arange(s, min(n, s + chunk))
            exclude = rows[:, None] == torch.arange(n)[None, :]
            pool = self.cfg.neighbour_pool
            res.append(select_pairs(tva[rows] @ tva.T, labels[rows], labels, exclude, pool, pool,
                                    self.cfg.outliers_low, self.cfg.outliers_high))
        return tuple(torch.cat([r[k] for r in res]) for k in range(4))

    def param_groups(self):
        """AdamW groups: weight decay on weights, none on biases and LayerNorm (the authors' code). With two stages,
        only the current stage's trainable parameters: the unimodal encoders and their heads at `pretrain_lr` in
        the first; everything else but the (frozen) text encoder in the second."""
        decay, no_decay = [], []
        norms = {id(p) for mod in self.modules() if isinstance(mod, nn.LayerNorm) for p in mod.parameters()}
        unimodal = ("text.", "encoders.", "pretrain_heads.")
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if self.cfg.pretrain_epochs:
                if self.stage == "pretrain" and not name.startswith(unimodal):
                    continue
                if self.stage == "fusion" and name.startswith(("text.", "encoders.text.", "pretrain_heads.")):
                    continue
            (no_decay if name.endswith("bias") or id(p) in norms else decay).append(p)
        extra = {"lr": self.cfg.pretrain_lr} if self.cfg.pretrain_epochs and self.stage == "pretrain" else {}
        return [{"params": decay, **extra}, {"params": no_decay, "weight_decay": 0.0, **extra}]
