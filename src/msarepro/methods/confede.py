"""ConFEDE: Contrastive Feature Decomposition (Yang et al., ACL 2023); the base that SFTTR (methods/sfttr.py) extends.

    unimodal encoders              T = [CLS] of the text encoder (B, Dt); V, A = [CLS] of a transformer with a
                                   learned CLS token and learned positions over (B, Lm, Dm) -> (B, De)  [SFTTR's]
    decomposition                  similarity (modality-invariant) s_m = sim_m(m), dissimilarity (modality-specific)
                                   d_m = dis_m(m): LayerNorm, Linear(-> d) + Tanh, Dropout; feats (B, 6, d) in the
                                   order [s_T, s_V, s_A, d_T, d_V, d_A] (contrastive.FEATURES' C_* / F_* slots)
    intra-sample contrast          anchor s_T; positives (s_T, s_V), (s_T, s_A); negatives (s_T, d_T), (s_T, d_V),
                                   (s_T, d_A)  [contrastive.contrastive_pairs, eq4_pairs: text]
    inter-sample contrast          partners chosen by rounded label and cosine of [T; V; A]: 2 similar same-label
                                   neighbours (positives (s_m^i, s_m^j)), 4 different-label outliers (negatives
                                   (s_m^i, s_m^k)), plus the partners' own intra-sample pairs [contrastive.select_pairs]
    L_cl                           NT-Xent (cosine / temperature) over those pairs, mean over anchors [nt_xent]
    fusion head                    concat of the six features (B, 6d) -> MLP -> y_m; MSE
    unimodal heads                 one MLP per modality on d_m -> y_hat_m; target the unimodal label y_T/y_V/y_A
                                   where the dataset has them, else the multimodal label y; MSE, mean over m
    total                          L_pred + beta_cl L_cl + beta_uni L_uni

Shared with SFTTR (same code, not copies): the encoders, the projectors, pair selection, pair sets, NT-Xent, the
retrieval bank (`pairs_from: bank`, refreshed every `bank_refresh` epochs: 2 in ConFEDE's code per our SFTTR
notes), the two-stage schedule (`pretrain_epochs`) and the optimiser groups. What is ConFEDE's own: the fusion head
(concatenation, no cross-modality encoders) and the unimodal heads on the dissimilarity features only.
docs/methods/confede.md says which facts come from where and which are our reading.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from . import register
from .contrastive import F_A, F_T, F_V
from .sfttr import MODS, SFTTR, mlp

DISSIMILAR = {"text": F_T, "vision": F_V, "audio": F_A}  # slot of d_m in feats[:, k]


@register("confede")
class ConFEDE(SFTTR):
    @dataclass(frozen=True)
    class Config(SFTTR.Config):
        fusion: str = "concat"  # ConFEDE's fusion head: the six features concatenated; no other choice here
        pairs_from: str = "batch"  # batch | bank (the authors' code retrieves from the training split)

        def validate(self, where: str) -> None:
            if self.fusion != "concat":
                raise ConfigError(f"{where}.fusion: {self.fusion!r}; ConFEDE fuses by concatenation only "
                                  "(set fusion: concat, or use the sfttr method for sequential fusion)")
            super().validate(where)

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        d = cfg.proj_dim
        if hasattr(self, "unimodal_head"):  # SFTTR's one head over all six features is not ConFEDE's
            del self.unimodal_head
        self.use_uni = cfg.unimodal_loss and cfg.beta_uni > 0
        if self.use_uni:
            self.unimodal_heads = nn.ModuleDict({m: mlp(d, d, cfg.head_dropout) for m in MODS})

    def unimodal_loss(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """feats (B, 6, d) -> mean over m of MSE(head_m(d_m), y_m); y_m = batch["y_T"/"y_V"/"y_A"] if present,
        else batch["y"]."""
        terms = []
        for m in MODS:
            pred = self.unimodal_heads[m](feats[:, DISSIMILAR[m]]).squeeze(-1)  # (B,)
            terms.append(F.mse_loss(pred, batch.get(f"y_{m[0].upper()}", batch["y"]).float()))
        return torch.stack(terms).mean()

    def losses(self, out, batch, epoch):
        if self.stage == "pretrain":
            return super().losses(out, batch, epoch)
        terms = {"pred": self.task_loss(out["pred"], batch["y"])}
        if self.use_uni:
            terms["uni"] = self.cfg.beta_uni * self.unimodal_loss(out["feats"], batch)
        if self.cfg.contrastive and self.cfg.beta_cl > 0:
            terms["cl"] = self.cfg.beta_cl * self.contrastive_loss(out, batch)
        return terms
