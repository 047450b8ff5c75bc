"""MMIM: Multimodal InfoMax (Han, Chen, Poria, EMNLP 2021, "Improving Multimodal Fusion with Hierarchical Mutual
Information Maximization for Multimodal Sentiment Analysis"), a baseline of the papers' main tables. Mutual
information (MI) is maximised at two levels: between modality pairs at the input (a Barber-Agakov lower bound) and
between the fusion result and each modality (contrastive predictive coding). Facts of the authors' code
(github.com/declare-lab/Multimodal-Infomax, src/model.py, src/modules/encoders.py, src/solver.py) are named where
used; settings per dataset (MMSA's config_regression.json): params.yaml; docs/methods/mmim.md.

Shapes: B batch, L_m sequence length, D_m input width, d_m the unimodal widths, d_z = `fusion_dim` (d_prjh).
    unimodal encoders:
        text: a BERT-family encoder (`text_encoder`), the first ([CLS]) token's last-layer state h_t (B, D_t), as
              the authors' code reads it; with precomputed features (`text_encoder: features`) an LSTM encoder
              like audio's and vision's (B, text_out)
        audio, vision: an LSTM over the real frames (bidirectional in the authors' settings), the final state of
              each direction concatenated, dropout, Linear -> h_a (B, audio_out), h_v (B, vision_out)
    fusion network (the authors' SubNet): X = [h_t; h_a; h_v], dropout, Linear + tanh, Linear + tanh -> Z (B, d_z),
        Linear -> y_hat
    input level, the BA lower bound per pair (X, Y) in (text, vision), (text, audio):             `ba_bound`
        I(X; Y) >= H(Y) + E_p(x,y)[log q(Y | X)],
        q(y | x) = N(y; mu(x), diag sigma^2(x)), mu and log sigma^2 two MLPs (Linear, ReLU, Linear) of x
        log-likelihood, averaged over the batch, as the authors' code computes it (`lld_logvar: false`):
            lld = mean_b sum_j -1/2 (y_j - mu_j)^2 / sigma_j^2                                     `gaussian_lld`
            `lld_logvar: true` adds the Gaussian's -1/2 log sigma_j^2 (its full log density but the constant): the
            paper's q; with the entropy read on a d_Y / 4 projection it lets the encoders raise the bound without
            limit by shrinking Y (docs/methods/mmim.md, measured there), so it is a switch, not the default
        H(Y): Y projected to d_Y / 4 dims (Linear + tanh, fixed at its initialisation as in the authors' code,
            where no optimizer steps it), modelled as a two-component Gaussian mixture of the positive (y > 0)
            and negative (y < 0) samples; H is bounded by the components' weighted entropies, with weights 1/2
            and constants dropped:                                                               `class_entropy`
            H = 1/4 (log det Sigma_pos + log det Sigma_neg),
            Sigma_c the (biased) covariance of the class's projected samples of the current batch and of the last
            `memory_batches` training batches (detached), the memory reset at each epoch
    fusion level, CPC per modality m (the authors' CPC): h_m_hat = G_m(Z) (Linear; `cpc_layers` > 1: an MLP),
        both rows L2-normalised, s_ij = <h_m_i / |h_m_i|, h_m_hat_j / |h_m_hat_j|>:                 `cpc_nce`
            L_N(m) = -mean_i [ s_ii - log sum_j exp(s_ij) ]
    loss (paper: L = L_task - alpha I_CPC - beta L_BA; signs as in the authors' code):
        task:   |y_hat - y| averaged (the authors' L1)
        cpc:    alpha * sum_m L_N(m)
        ba:     -beta * sum_pairs (lld + H), H from an epoch's batch index memory_batches + 1 on (memory full)
        ba_fit: -sum_pairs lld computed on detached unimodal vectors: it reaches only mu and log sigma^2
    The authors alternate per epoch: stage 1, a pass over the training data maximising lld with an optimizer of
    the predictors' (mu, log sigma^2) parameters only; stage 2, a pass minimising task + cpc + ba with an optimizer
    of every other parameter (the predictors' are not in it). Here one optimizer takes both in each step, with the
    gradients routed so that each part only updates what it updates there: `ba_fit` reads detached unimodal
    vectors (only the predictors learn from it) and `ba` reads the predictors through detached copies of their
    parameters (only the encoders learn from it). The predictors' learning rate and weight decay are their own
    (`lr_mmilb`, `weight_decay_mmilb`), as in the authors' optimizer of the predictors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import Dropout
from .text_encoder import TextEncoder

UNI = ("text", "audio", "vision")
PAIRS = (("text", "vision"), ("text", "audio"))  # (X, Y) of the BA bounds: the authors' mi_tv, mi_ta


def gaussian_lld(mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor, with_logvar: bool = True) -> torch.Tensor:
    """log q(y | x) of the diagonal Gaussian N(mu, exp(logvar)) without its constant, summed over the dims and
    averaged over the batch: mean_b sum_j -1/2 [(y - mu)^2 / exp(logvar) + logvar] (B, d) -> (). with_logvar=False
    leaves the logvar term out (the authors' code)."""
    inner = (y - mu).pow(2) / logvar.exp()
    if with_logvar:
        inner = inner + logvar
    return (-0.5 * inner).sum(-1).mean()


def class_entropy(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """The entropy bound of a two-component Gaussian mixture with equal weights, constants dropped: 1/4 (log det
    Sigma_pos + log det Sigma_neg), Sigma the biased covariance of the positive (N_p, k) and negative (N_n, k)
    samples. In float32 whatever the autocast precision (log det has no bf16/fp16 kernel). -> ()."""
    def logdet_cov(x: torch.Tensor) -> torch.Tensor:
        c = x.float() - x.float().mean(0)
        return torch.logdet(c.t() @ c / x.size(0))
    with torch.autocast(pos.device.type, enabled=False):
        return 0.25 * (logdet_cov(pos) + logdet_cov(neg))


def cpc_nce(x: torch.Tensor, x_pred: torch.Tensor) -> torch.Tensor:
    """The CPC (InfoNCE) loss between the true vectors x (B, d) and their predictions from the fusion x_pred (B, d):
    both rows L2-normalised, scores s = x x_pred^T (B, B); -mean_i [s_ii - logsumexp_j s_ij]. -> ()."""
    x = x / x.norm(dim=1, keepdim=True)
    x_pred = x_pred / x_pred.norm(dim=1, keepdim=True)
    scores = x @ x_pred.t()
    return -(scores.diagonal() - torch.logsumexp(scores, dim=-1)).mean()


def ba_bound(lld: torch.Tensor, entropy: torch.Tensor | float) -> torch.Tensor:
    """The Barber-Agakov lower bound I(X; Y) >= H(Y) + E[log q(Y | X)] from its two estimates. -> ()."""
    return lld + entropy


class RNNEncoder(nn.Module):
    """(B, L, D), mask (B, L) -> (B, out): an LSTM over the real positions, the final hidden state of each direction
    concatenated, dropout, Linear (the authors' RNNEncoder, one layer)."""

    def __init__(self, in_dim: int, width: int, out_dim: int, dropout: float, bidirectional: bool):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, width, batch_first=True, bidirectional=bidirectional)
        self.drop = Dropout(dropout)
        self.out = nn.Linear((2 if bidirectional else 1) * width, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.long().sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(packed)  # h (directions, B, width)
        return self.out(self.drop(torch.cat(list(h), dim=-1)))


class GaussianPredictor(nn.Module):
    """q(y | x) of one modality pair: mu(x) and log sigma^2(x) (B, d_y), each Linear(d_x, d_y), ReLU, Linear(d_y,
    d_y) (the authors' MMILB), and the fixed entropy projection Linear(d_y, d_y // 4) + tanh."""

    def __init__(self, x_dim: int, y_dim: int):
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(x_dim, y_dim), nn.ReLU(), nn.Linear(y_dim, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, y_dim), nn.ReLU(), nn.Linear(y_dim, y_dim))
        self.entropy_proj = nn.Sequential(nn.Linear(y_dim, max(1, y_dim // 4)), nn.Tanh())
        self.entropy_proj.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(x), self.logvar(x)


def _cpc_net(z_dim: int, x_dim: int, layers: int) -> nn.Module:
    """G_m: Linear(d_z, d_m); with more layers Linear + tanh then Linear(d_m, d_m)s (the authors' CPC)."""
    if layers == 1:
        return nn.Linear(z_dim, x_dim)
    mods: list[nn.Module] = [nn.Linear(z_dim, x_dim), nn.Tanh()]
    mods += [nn.Linear(x_dim, x_dim) for _ in range(layers - 1)]
    return nn.Sequential(*mods)


@register("mmim")
class MMIM(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        # Defaults: MMSA's MOSI settings (config_regression.json, "mmim") = the authors' defaults (src/config.py).
        text_encoder: str = "features"  # features (an LSTM over them) | tiny-bert | HF name (bert-base-uncased)
        finetune: bool = True  # fine-tune the text encoder (MMSA use_finetune)
        text_rnn_hidden: int = 32  # with text features: the text LSTM's width (ours: the authors read BERT only)
        text_out: int = 32  # with text features: h_t's width (with BERT: BERT's width, the authors' d_tout)
        audio_rnn_hidden: int = 16  # d_ah
        vision_rnn_hidden: int = 16  # d_vh
        audio_out: int = 16  # d_aout
        vision_out: int = 16  # d_vout
        bidirectional: bool = True
        rnn_dropout: float = 0.0  # on the LSTM's final state; the authors' dropout_a/v act only with n_layer > 1
        fusion_dim: int = 128  # d_prjh, Z's width
        fusion_dropout: float = 0.1  # dropout_prj
        cpc_layers: int = 1
        alpha: float = 0.1  # weight of the CPC loss
        beta: float = 0.1  # weight of the BA bound
        memory_batches: int = 1  # mem_size: past training batches in the entropy estimate
        lld_logvar: bool = False  # add the Gaussian's log sigma^2 term (the paper's q); false: the authors' code
        lr_text: float = 0.0  # lr_bert (0: `lr`)
        weight_decay_text: float = -1.0  # weight_decay_bert (-1: `weight_decay`)
        lr_mmilb: float = 0.0  # the predictors' learning rate (0: `lr`)
        weight_decay_mmilb: float = -1.0  # (-1: `weight_decay`)

        def validate(self, where: str) -> None:
            super().validate(where)
            for key in ("text_rnn_hidden", "text_out", "audio_rnn_hidden", "vision_rnn_hidden", "audio_out",
                        "vision_out", "fusion_dim", "cpc_layers", "memory_batches"):
                if getattr(self, key) < 1:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected >= 1")
            for key in ("rnn_dropout", "fusion_dropout"):
                if not 0.0 <= getattr(self, key) < 1.0:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected a rate in [0, 1)")
            for key in ("alpha", "beta", "lr_text", "lr_mmilb"):
                if getattr(self, key) < 0:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected >= 0")

    @classmethod
    def problems(cls, cfg: Config, manifest) -> list[str]:
        out = super().problems(cfg, manifest)
        if manifest.family == "trimodal" and manifest.task != "regression":
            out.append(f"MMIM's entropy estimate splits samples by the sign of a sentiment score; dataset "
                       f"{manifest.name!r} is {manifest.task} (use a regression dataset)")
        return out

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        mods = manifest.modalities
        self.text = TextEncoder(cfg.text_encoder, manifest, finetune=cfg.finetune)
        self.rnn = nn.ModuleDict()
        widths = {}
        sizes = {"text": (cfg.text_rnn_hidden, cfg.text_out), "audio": (cfg.audio_rnn_hidden, cfg.audio_out),
                 "vision": (cfg.vision_rnn_hidden, cfg.vision_out)}
        for m in UNI:
            if m == "text" and self.text.model is not None:
                widths[m] = self.text.out_dim
                continue
            width, out = sizes[m]
            self.rnn[m] = RNNEncoder(mods[m]["dim"], width, out, cfg.rnn_dropout, cfg.bidirectional)
            widths[m] = out
        self.widths = widths
        z = cfg.fusion_dim
        self.fusion_drop = Dropout(cfg.fusion_dropout)
        self.fusion1, self.fusion2 = nn.Linear(sum(widths.values()), z), nn.Linear(z, z)
        self.out = nn.Linear(z, self.out_dim)
        self.cpc = nn.ModuleDict({m: _cpc_net(z, widths[m], cfg.cpc_layers) for m in UNI})
        self.mi = nn.ModuleDict({f"{a}_{b}": GaussianPredictor(widths[a], widths[b]) for a, b in PAIRS})
        # The authors' initialisation: Xavier-normal for every weight matrix outside the text encoder
        for name, p in self.named_parameters():
            if not name.startswith("text.") and p.dim() > 1:
                nn.init.xavier_normal_(p)
        self._memory: dict[str, dict[str, list[torch.Tensor]]] = {}
        self._step = 0  # the training batch's index within the epoch

    def param_groups(self):
        cfg = self.cfg
        text = [p for p in self.text.parameters() if p.requires_grad]
        mi = [p for n, p in self.mi.named_parameters() if p.requires_grad]
        seen = {id(p) for p in text + mi}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        wd = lambda v: cfg.weight_decay if v < 0 else v  # noqa: E731
        groups = [{"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                  {"params": mi, "lr": cfg.lr_mmilb or cfg.lr, "weight_decay": wd(cfg.weight_decay_mmilb)}]
        if text:
            groups.append({"params": text, "lr": cfg.lr_text or cfg.lr, "weight_decay": wd(cfg.weight_decay_text)})
        return groups

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = {}
        if self.text.model is not None:
            seq, _ = self.text(batch)  # (B, L, D_t)
            h["text"] = seq[:, 0]  # the first ([CLS]) token
        else:
            h["text"] = self.rnn["text"](batch["text"], batch["text_mask"])
        for m in ("audio", "vision"):
            h[m] = self.rnn[m](batch[m], batch[f"{m}_mask"])
        x = self.fusion_drop(torch.cat([h[m] for m in UNI], dim=-1))  # [h_t; h_a; h_v]
        z = torch.tanh(self.fusion2(torch.tanh(self.fusion1(x))))  # Z (B, d_z)
        out = {"pred": self.head(self.out(z)), "fusion": z}
        for m in UNI:
            out[f"h_{m}"] = h[m]
        return out

    # -- the entropy memory: reset per epoch, as the authors' train() does ------------------------------------
    def on_epoch_start(self, epoch: int, train_split) -> None:
        self._memory = {f"{a}_{b}": {"pos": [], "neg": []} for a, b in PAIRS}
        self._step = 0

    def _entropy(self, key: str, proj: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor | None:
        """H of the pair `key` from this batch's projected Y (B, k) and the memory; stores the batch (detached) in
        the memory. None while the memory is not yet full (the authors' first mem_size + 1 batches) or a class has
        fewer than k + 1 samples (a singular covariance)."""
        pos, neg = proj[y > 0], proj[y < 0]
        mem, n = self._memory.setdefault(key, {"pos": [], "neg": []}), self.cfg.memory_batches
        entropy = None
        if step > n:
            pos_all, neg_all = torch.cat(mem["pos"] + [pos]), torch.cat(mem["neg"] + [neg])
            k = proj.size(1)
            if min(len(pos_all), len(neg_all)) > k:
                entropy = class_entropy(pos_all, neg_all)
            else:
                self.count("entropy_skipped", 1)
        if len(mem["pos"]) < n:
            mem["pos"].append(pos.detach())
            mem["neg"].append(neg.detach())
        else:  # full: the newest replaces the oldest
            mem["pos"][step % n], mem["neg"][step % n] = pos.detach(), neg.detach()
        return entropy

    def losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        step = self._step
        if self.training:
            self._step += 1
        terms = {"task": self.task_loss(out["pred"], batch["y"])}
        nce = sum(cpc_nce(out[f"h_{m}"], self.cpc[m](out["fusion"])) for m in UNI)
        terms["cpc"] = cfg.alpha * nce
        bound, fit = 0.0, 0.0
        for a, b in PAIRS:
            q = self.mi[f"{a}_{b}"]
            x, y = out[f"h_{a}"], out[f"h_{b}"]
            # the predictors learn from detached vectors (the authors' stage 1)
            mu, logvar = q(x.detach())
            fit = fit - gaussian_lld(mu, logvar, y.detach(), cfg.lld_logvar)
            # the encoders learn from the bound through fixed predictors (the authors' stage 2)
            fixed = {n: p.detach() for n, p in q.named_parameters()}
            mu, logvar = functional_call(q, fixed, (x,))
            lld = gaussian_lld(mu, logvar, y, cfg.lld_logvar)
            entropy = self._entropy(f"{a}_{b}", q.entropy_proj(y), batch["y"], step) if self.training else None
            bound = bound + ba_bound(lld, 0.0 if entropy is None else entropy)
        terms["ba"] = -cfg.beta * bound
        terms["ba_fit"] = fit
        return terms
