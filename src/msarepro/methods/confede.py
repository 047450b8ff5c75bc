"""ConFEDE: Contrastive Feature Decomposition (Yang et al., ACL 2023); the base that SFTTR (methods/sfttr.py) extends.
Where the paper is silent, the authors' code (github.com/XpastaX/ConFEDE, TVA_fusion.py and config.py per dataset).

    unimodal encoders      T = [CLS] of the text encoder (B, Dt); V, A = [CLS] of a transformer with a learned CLS
                           token and learned positions over (B, Lm, Dm) -> (B, De)  [SFTTR's encode]
    decomposition          similarity s_m and dissimilarity d_m of each modality: LayerNorm, Linear(-> d), Tanh,
                           Dropout 0.5 (the authors' code, both kinds); feats (B, 6, d) = [s_T, s_V, s_A, d_T, d_V,
                           d_A] (contrastive.FEATURES' C_* / F_* slots)
    intra-sample contrast  anchor s_T; positives (s_T, s_V), (s_T, s_A); negatives (s_T, d_T), (s_T, d_V), (s_T, d_A)
    inter-sample contrast  partners by rounded label and cosine of [T; V; A]: 2 similar same-label neighbours,
                           positives (s_m^i, s_m^j); 4 different-label outliers, negatives (s_m^i, s_m^k); each
                           partner's own intra-sample pairs join the set  [contrastive.select_pairs, contrastive_pairs]
    L_cl                   NT-Xent, temperature 0.5; each positive against itself and its anchor's negatives, mean
                           over the positives of a sample, then over samples  [contrastive.nt_xent, "pair"]
    fusion head            [s_T; s_V; s_A; d_T; d_V; d_A] (B, 6d) -> GELU MLP (2d, d, d/2, d/4) -> y_hat; MSE
    unimodal head          one GELU MLP (d/2, d/4) shared by the six features; targets [y, y, y, y_T, y_V, y_A]
                           (y where there are no unimodal labels); MSE over the B x 6 predictions
    total                  L_pred + beta_cl L_cl + beta_uni L_uni  (code: 1, 0.1, 0.01)

Shared with SFTTR (the same functions and class, not copies): encoders, projectors, pair selection, pair sets,
NT-Xent, the retrieval bank (`pairs_from: bank`), the two-stage schedule (`pretrain_epochs`), optimiser groups.
ConFEDE's own: the concatenation fusion head (no cross-modality encoders), its NT-Xent form, its unimodal head.
docs/methods/confede.md says which facts come from where and which are our reading.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from . import register
from .sfttr import SFTTR


def gelu_mlp(in_dim: int, hidden: list[int]) -> nn.Sequential:
    """The authors' regression MLP: Linear + GELU per hidden width, then Linear(-> 1); no dropout."""
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.GELU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, 1))


@register("confede")
class ConFEDE(SFTTR):
    @dataclass(frozen=True)
    class Config(SFTTR.Config):
        fusion: str = "concat"  # ConFEDE's fusion head takes the six features concatenated; no other choice here
        close_dropout: float = 0.5  # the authors' projectors: dropout 0.5 for similarity and dissimilarity alike
        far_dropout: float = 0.5
        cl_denominator: str = "pair"  # ConFEDE's NT-Xent form (contrastive.nt_xent); anchor | all: SFTTR's eq. 8

        def validate(self, where: str) -> None:  # after SFTTR.Config.validate (config.build runs both)
            if self.fusion != "concat":
                raise ConfigError(f"{where}.fusion: {self.fusion!r}; ConFEDE fuses by concatenation only "
                                  "(set fusion: concat, or use the sfttr method for sequential fusion)")
            if self.proj_dim < 4:
                raise ConfigError(f"{where}.proj_dim ({self.proj_dim}) must be at least 4 (heads narrow to d/4)")

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        d = cfg.proj_dim
        self.regressor = gelu_mlp(6 * d, [2 * d, d, d // 2, d // 4])  # fusion head over [s_T; s_V; s_A; d_T; d_V; d_A]
        if hasattr(self, "unimodal_head"):
            del self.unimodal_head
        self.use_uni = cfg.unimodal_loss and cfg.beta_uni > 0
        if self.use_uni:
            self.unimodal_head = gelu_mlp(d, [d // 2, d // 4])  # one head shared by the six features

    def unimodal_loss(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """feats (B, 6, d) -> MSE over all B x 6 predictions of the shared head; targets [y, y, y, y_T, y_V, y_A]
        (y_T/y_V/y_A = y where the dataset has no unimodal labels, as the authors' MOSI/MOSEI code does)."""
        y = batch["y"].float()
        u = torch.stack([y, y, y] + [batch.get(f"y_{k}", y).float() for k in "TVA"], 1)  # (B, 6)
        return F.mse_loss(self.unimodal_head(feats).squeeze(-1), u)

    def losses(self, out, batch, epoch):
        if self.stage == "pretrain":
            return super().losses(out, batch, epoch)
        terms = {"pred": self.task_loss(out["pred"], batch["y"])}
        if self.use_uni:
            terms["uni"] = self.cfg.beta_uni * self.unimodal_loss(out["feats"], batch)
        if self.cfg.contrastive and self.cfg.beta_cl > 0:
            terms["cl"] = self.cfg.beta_cl * self.contrastive_loss(out, batch)
        return terms
