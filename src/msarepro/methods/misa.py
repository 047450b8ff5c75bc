"""MISA: Modality-Invariant and -Specific Representations (Hazarika, Zimmermann, Poria, ACM MM 2020), a baseline of
the papers' main tables. Settings per dataset as MMSA publishes them (params.yaml; docs/methods/misa.md).

Shapes: B batch, L_m sequence length, D_m input width, d = `hidden` (the paper's d_h).
    utterance vectors (paper, "Modality Representation Learning"):
        audio, vision: sLSTM over the real frames: a bidirectional LSTM, LayerNorm over its outputs, a second
            bidirectional LSTM; the final states of both layers, both directions, concatenated (B, 4 r_m), r_m = the
            LSTM width (`rnn_hidden`, 0: D_m as in the authors' code)
        text: a BERT-family encoder (`text_encoder`), its last layer averaged over the real tokens (B, D_t), as the
            authors' and MMSA's code do; with precomputed features (`text_encoder: features`) an sLSTM like audio
            and vision (the paper's GloVe path)
        -> per modality Linear + ReLU + LayerNorm to d: u_m (B, d)
    subspaces: h_m^c = E_c(u_m) one shared encoder, h_m^p = E_p^m(u_m) one private encoder per modality; each is
        Linear + sigmoid (B, d)
    reconstruction: u_m_hat = D_m(h_m^c + h_m^p), a Linear per modality (B, d)
    fusion (paper, "Modality Fusion"): the six vectors [h_t^p, h_v^p, h_a^p, h_t^c, h_v^c, h_a^c] as a length-6
        sequence through one transformer layer (post-norm, `fusion_heads` heads, feed-forward `fusion_ff`) ->
        concatenated (B, 6d) -> Linear 6d->3d, dropout, ReLU, Linear 3d->out
    loss (paper, "Learning"): L = L_task + alpha L_sim + beta L_diff + gamma L_recon
        L_sim   = mean over the 3 modality pairs of CMD_K(h_m1^c, h_m2^c), K = `cmd_moments` (5)    `cmd`
        L_diff  = sum over (h_m^c, h_m^p) for each m and over the 3 private pairs (h_m1^p, h_m2^p) of the soft
                  orthogonality ||H1^T H2||_F^2 of batch-centred, row-normalised matrices, / d^2   `difference`
        L_recon = mean over m of ||u_m - u_m_hat||^2 / d, averaged over the batch                `reconstruction`
    alpha, beta, gamma: `sim_weight`, `diff_weight`, `recon_weight` (MMSA's names).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import Dropout, masked_mean, transformer_encoder
from .text_encoder import TextEncoder

MODS = ("text", "vision", "audio")  # the order of the authors' fusion sequence (t, v, a)


def cmd(x1: torch.Tensor, x2: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy (Zellinger et al. 2017) between two samples x1 (N1, d), x2 (N2, d):
    ||E(x1) - E(x2)||_2 + sum_{k=2..K} ||C_k(x1) - C_k(x2)||_2, C_k the per-dimension k-th central moment. CMD's
    1/|b-a|^k factors are 1 here: the shared codes are sigmoid outputs in [0, 1] (the authors' code leaves them
    out too). -> () scalar."""
    m1, m2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - m1, x2 - m2
    out = (m1 - m2).norm(p=2)
    for k in range(2, moments + 1):
        out = out + (c1.pow(k).mean(0) - c2.pow(k).mean(0)).norm(p=2)
    return out


def difference(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft orthogonality between two batches of codes a, b (B, d): each centred over the batch and each row scaled
    to unit L2 norm (the norm taken as a constant, as in the authors' code), then ||A^T B||_F^2 / d^2 (the mean of
    the squared entries of the (d, d) matrix A^T B). 0 when every column of A is orthogonal to every column of B.
    -> () scalar."""
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    a = a / (a.norm(dim=1, keepdim=True).detach() + eps)
    b = b / (b.norm(dim=1, keepdim=True).detach() + eps)
    return (a.t() @ b).pow(2).mean()


def reconstruction(u_hat: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """||u - u_hat||_2^2 / d averaged over the batch: the mean squared error over all entries (B, d). -> ()."""
    return (u - u_hat).pow(2).mean()


class SLSTM(nn.Module):
    """The paper's sLSTM: (B, L, D) and mask (B, L) -> (B, 4 r), the final hidden states (both directions) of two
    stacked bidirectional LSTMs with a LayerNorm between them, each run over the real positions only."""

    def __init__(self, in_dim: int, width: int):
        super().__init__()
        self.rnn1 = nn.LSTM(in_dim, width, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(2 * width)
        self.rnn2 = nn.LSTM(2 * width, width, batch_first=True, bidirectional=True)
        self.out_dim = 4 * width

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.long().sum(1).clamp_min(1).cpu()
        pack = lambda t: nn.utils.rnn.pack_padded_sequence(t, lengths, batch_first=True,  # noqa: E731
                                                           enforce_sorted=False)
        out1, (h1, _) = self.rnn1(pack(x))  # h1 (2, B, r): the final state of each direction
        seq1 = nn.utils.rnn.pad_packed_sequence(out1, batch_first=True, total_length=x.size(1))[0]  # (B, L, 2r)
        _, (h2, _) = self.rnn2(pack(self.norm(seq1)))
        return torch.cat([h1, h2], dim=0).transpose(0, 1).flatten(1)  # (B, 4r)


def _projection(in_dim: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, d), nn.ReLU(), nn.LayerNorm(d))


@register("misa")
class MISA(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        # Defaults: MMSA's MOSI settings (config_regression.json, "misa"); params.yaml carries them per dataset.
        text_encoder: str = "features"  # features (an sLSTM over them) | tiny-bert | HF name (bert-base-uncased)
        finetune: bool = True  # fine-tune the text encoder (MMSA use_finetune)
        hidden: int = 128  # d_h (MMSA hidden_size)
        rnn_hidden: int = 0  # sLSTM width per direction; 0 = the modality's input width (the authors' code)
        dropout: float = 0.2  # in the prediction head (MMSA dropout)
        fusion_heads: int = 2  # the fusion transformer layer (the authors' code: 2 heads, torch's defaults below)
        fusion_ff: int = 2048
        fusion_dropout: float = 0.1
        sim_weight: float = 0.3  # alpha, L_sim
        diff_weight: float = 0.1  # beta, L_diff
        recon_weight: float = 1.0  # gamma, L_recon
        cmd_moments: int = 5  # K of CMD_K (the paper's K = 5)

        def validate(self, where: str) -> None:
            super().validate(where)
            if self.hidden < 1 or self.rnn_hidden < 0 or self.fusion_heads < 1 or self.fusion_ff < 1:
                raise ConfigError(f"{where}: hidden, fusion_heads and fusion_ff must be >= 1 and rnn_hidden >= 0 "
                                  f"(got {self.hidden}, {self.fusion_heads}, {self.fusion_ff}, {self.rnn_hidden})")
            if self.hidden % self.fusion_heads:
                raise ConfigError(f"{where}.hidden ({self.hidden}) must be divisible by {where}.fusion_heads "
                                  f"({self.fusion_heads}); change one of them")
            if self.cmd_moments < 1:
                raise ConfigError(f"{where}.cmd_moments: {self.cmd_moments}; expected K >= 1")
            for key in ("dropout", "fusion_dropout"):
                if not 0.0 <= getattr(self, key) < 1.0:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected a rate in [0, 1)")
            for key in ("sim_weight", "diff_weight", "recon_weight"):
                if getattr(self, key) < 0:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected a weight >= 0")

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        d, mods = cfg.hidden, manifest.modalities
        self.text = TextEncoder(cfg.text_encoder, manifest, finetune=cfg.finetune)
        self.rnn = nn.ModuleDict()
        widths = {}
        for m in MODS:
            if m == "text" and self.text.model is not None:
                widths[m] = self.text.out_dim  # the averaged token states
                continue
            self.rnn[m] = SLSTM(mods[m]["dim"], cfg.rnn_hidden or mods[m]["dim"])
            widths[m] = self.rnn[m].out_dim
        self.project = nn.ModuleDict({m: _projection(widths[m], d) for m in MODS})  # -> u_m
        self.shared = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())  # E_c, one for all modalities
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in MODS})  # E_p^m
        self.recon = nn.ModuleDict({m: nn.Linear(d, d) for m in MODS})  # D_m
        self.fusion = transformer_encoder(d, cfg.fusion_heads, 1, ff=cfg.fusion_ff, dropout=cfg.fusion_dropout,
                                          norm_first=False)
        self.out = nn.Sequential(nn.Linear(6 * d, 3 * d), Dropout(cfg.dropout), nn.ReLU(),
                                 nn.Linear(3 * d, self.out_dim))

    def utterances(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> u_m (B, d) per modality: the utterance vectors projected to the common width."""
        u = {}
        for m in MODS:
            if m == "text" and self.text.model is not None:
                seq, mask = self.text(batch)  # (B, L, D_t) last-layer token states
                u[m] = masked_mean(seq, mask)
            else:
                u[m] = self.rnn[m](batch[m], batch[f"{m}_mask"])
        return {m: self.project[m](v) for m, v in u.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        u = self.utterances(batch)
        shared = {m: self.shared(u[m]) for m in MODS}  # h_m^c (B, d)
        private = {m: self.private[m](u[m]) for m in MODS}  # h_m^p (B, d)
        recon = {m: self.recon[m](shared[m] + private[m]) for m in MODS}  # u_m_hat (B, d)
        seq = torch.stack([private[m] for m in MODS] + [shared[m] for m in MODS], dim=1)  # (B, 6, d)
        h = self.fusion(seq).flatten(1)  # (B, 6d)
        out = {"pred": self.head(self.out(h)), "fused": h}
        for m in MODS:
            out[f"u_{m}"], out[f"shared_{m}"], out[f"private_{m}"], out[f"recon_{m}"] = (
                u[m], shared[m], private[m], recon[m])
        return out

    def losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        pairs = list(combinations(MODS, 2))
        sim = sum(cmd(out[f"shared_{a}"], out[f"shared_{b}"], cfg.cmd_moments) for a, b in pairs) / len(pairs)
        diff = sum(difference(out[f"private_{m}"], out[f"shared_{m}"]) for m in MODS)
        diff = diff + sum(difference(out[f"private_{a}"], out[f"private_{b}"]) for a, b in pairs)
        recon = sum(reconstruction(out[f"recon_{m}"], out[f"u_{m}"]) for m in MODS) / len(MODS)
        return {"task": self.task_loss(out["pred"], batch["y"]), "sim": cfg.sim_weight * sim,
                "diff": cfg.diff_weight * diff, "recon": cfg.recon_weight * recon}
