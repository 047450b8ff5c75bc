"""MFN: Memory Fusion Network (Zadeh et al., AAAI 2018), as in MMSA (docs/methods/mfn.md).

Per time step t (B = batch, H = H_t + H_a + H_v, M = memory width):
    System of LSTMs       one LSTM cell per modality: c_t^m, h_t^m (B, H_m) from x_t^m and the previous state
    Delta-memory attention  c^[t-1,t] = [c_{t-1}; c_t] (B, 2H), all three modalities' cells at t-1 and t;
                          a = softmax(D_a(c^[t-1,t])) over the 2H values; c_hat = a * c^[t-1,t]   (`delta_attention`)
    Multi-view Gated Memory  u_hat = D_u(c_hat) (B, M); gamma1 = sigmoid(D_g1([c_hat; u_{t-1}])),
                          gamma2 = sigmoid(D_g2([c_hat; u_{t-1}])); u_t = gamma1 * u_{t-1} + gamma2 * tanh(u_hat)
                          (`gated_memory`); u_0 = 0
Output: an MLP over [h_T^t; h_T^a; h_T^v; u_T] (B, H + M). Every D_* is Linear -> ReLU -> dropout -> Linear.

The LSTMs step through time together, so all three modalities need one length per clip: MFN is published on
word-aligned features. On unaligned data (the embedded data, MMSA's unaligned pickles) audio and vision are first
resampled to the text's length (`resample_to`): text position j of a clip with n_t words takes the mean of the
audio frames in the j-th of n_t equal segments of that clip's n_a frames, [floor(j n_a / n_t),
ceil((j + 1) n_a / n_t)) (one frame repeated when n_a < n_t). On aligned data (equal masks) this is the identity.
A clip's steps past its last word leave every state unchanged, so h_T and u_T are those of its last word.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import Dropout

Net = Callable[[torch.Tensor], torch.Tensor]


def resample_to(x: torch.Tensor, mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """x (B, L_s, D) with mask (B, L_s), target_mask (B, L) -> (B, L, D): each clip's n_s real frames averaged
    over n equal segments, n = its real target length; segment j is frames [floor(j n_s / n), ceil((j+1) n_s / n)).
    Zeros at padded target positions."""
    n_s = mask.long().sum(1).clamp_min(1)[:, None]  # (B, 1)
    n = target_mask.long().sum(1).clamp_min(1)[:, None]  # (B, 1)
    j = torch.arange(target_mask.size(1), device=x.device)[None, :]  # (1, L)
    start, end = (j * n_s) // n, ((j + 1) * n_s + n - 1) // n  # (B, L)
    pos = torch.arange(x.size(1), device=x.device)[None, None, :]  # (1, 1, L_s)
    w = ((pos >= start[..., None]) & (pos < end[..., None]) & target_mask[..., None]).to(x.dtype)  # (B, L, L_s)
    return (w / w.sum(-1, keepdim=True).clamp_min(1.0)) @ x


def delta_attention(c_prev: torch.Tensor, c_new: torch.Tensor, d_a: Net) -> torch.Tensor:
    """The Delta-memory Attention Network: c_prev, c_new (B, H) the concatenated cells of all modalities at t-1
    and t -> c_hat (B, 2H) = softmax(D_a(c)) * c, c = [c_prev; c_new]."""
    c = torch.cat([c_prev, c_new], dim=1)
    return torch.softmax(d_a(c), dim=1) * c


def gated_memory(c_hat: torch.Tensor, u: torch.Tensor, d_u: Net, d_g1: Net, d_g2: Net) -> torch.Tensor:
    """The Multi-view Gated Memory update: c_hat (B, 2H), u = u_{t-1} (B, M) -> u_t (B, M)
    = sigmoid(D_g1([c_hat; u])) * u + sigmoid(D_g2([c_hat; u])) * tanh(D_u(c_hat))."""
    both = torch.cat([c_hat, u], dim=1)
    return torch.sigmoid(d_g1(both)) * u + torch.sigmoid(d_g2(both)) * torch.tanh(d_u(c_hat))


def two_layer(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """D_*: Linear -> ReLU -> dropout -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), Dropout(dropout), nn.Linear(hidden, out_dim))


@register("mfn")
class MFN(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        hidden_text: int = 32  # LSTM widths H_m (MMSA: hidden_dims, text / audio / vision)
        hidden_audio: int = 8
        hidden_vision: int = 8
        mem_dim: int = 32  # M (MMSA: memsize)
        attn_hidden: int = 32  # D_a (MMSA: NN1Config)
        attn_dropout: float = 0.2
        update_hidden: int = 32  # D_u (MMSA: NN2Config)
        update_dropout: float = 0.0
        gamma1_hidden: int = 32  # D_g1 (MMSA: gamma1Config)
        gamma1_dropout: float = 0.2
        gamma2_hidden: int = 32  # D_g2 (MMSA: gamma2Config)
        gamma2_dropout: float = 0.2
        out_hidden: int = 32  # the output MLP (MMSA: outConfig)
        out_dropout: float = 0.0

        def validate(self, where: str) -> None:
            for key in ("hidden_text", "hidden_audio", "hidden_vision", "mem_dim", "attn_hidden", "update_hidden",
                        "gamma1_hidden", "gamma2_hidden", "out_hidden"):
                if getattr(self, key) < 1:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected a width >= 1")
            for key in ("attn_dropout", "update_dropout", "gamma1_dropout", "gamma2_dropout", "out_dropout"):
                if not 0.0 <= getattr(self, key) < 1.0:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected a rate in [0, 1)")

    MODS = ("text", "audio", "vision")

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        dims = manifest.modalities
        self.widths = {"text": cfg.hidden_text, "audio": cfg.hidden_audio, "vision": cfg.hidden_vision}
        self.lstms = nn.ModuleDict({m: nn.LSTMCell(dims[m]["dim"], self.widths[m]) for m in self.MODS})
        h, mem = sum(self.widths.values()), cfg.mem_dim
        self.d_a = two_layer(2 * h, cfg.attn_hidden, 2 * h, cfg.attn_dropout)
        self.d_u = two_layer(2 * h, cfg.update_hidden, mem, cfg.update_dropout)
        self.d_g1 = two_layer(2 * h + mem, cfg.gamma1_hidden, mem, cfg.gamma1_dropout)
        self.d_g2 = two_layer(2 * h + mem, cfg.gamma2_hidden, mem, cfg.gamma2_dropout)
        self.out = two_layer(h + mem, cfg.out_hidden, self.out_dim, cfg.out_dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t_mask = batch["text_mask"]  # (B, L): the clock every modality steps on
        xs = {"text": batch["text"],  # (B, L, D_m) each, audio and vision resampled to the words
              "audio": resample_to(batch["audio"], batch["audio_mask"], t_mask),
              "vision": resample_to(batch["vision"], batch["vision_mask"], t_mask)}
        b = t_mask.size(0)
        hs = {m: xs["text"].new_zeros(b, w) for m, w in self.widths.items()}
        cs = dict(hs)
        u = xs["text"].new_zeros(b, self.cfg.mem_dim)
        for t in range(t_mask.size(1)):
            live = t_mask[:, t:t + 1]  # (B, 1): clips with a word at t
            new = {m: self.lstms[m](xs[m][:, t], (hs[m], cs[m])) for m in self.MODS}
            c_hat = delta_attention(torch.cat([cs[m] for m in self.MODS], 1),
                                    torch.cat([new[m][1] for m in self.MODS], 1), self.d_a)
            u = torch.where(live, gated_memory(c_hat, u, self.d_u, self.d_g1, self.d_g2), u)
            for m in self.MODS:
                hs[m] = torch.where(live, new[m][0], hs[m])
                cs[m] = torch.where(live, new[m][1], cs[m])
        z = self.out(torch.cat([hs["text"], hs["audio"], hs["vision"], u], dim=1))  # (B, out)
        return {"pred": self.head(z)}
