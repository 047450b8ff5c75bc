"""Small building blocks shared by several methods. Masks are True on real (non-padded) positions."""
from __future__ import annotations

import math

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x: (B, L, D), mask: (B, L) -> (B, D), the mean over real positions."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def last_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x: (B, L, D), mask: (B, L) right-padded -> (B, D), the state at each sequence's last real position."""
    idx = mask.long().sum(1).clamp_min(1) - 1
    return x[torch.arange(x.size(0), device=x.device), idx]


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """(length, dim) sinusoidal position encodings (Vaswani et al., 2017)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


def transformer_encoder(dim: int, heads: int, layers: int, ff: int | None = None, dropout: float = 0.1,
                        activation: str = "relu", attn_dropout: float | None = None,
                        res_dropout: float | None = None, final_norm: bool = False) -> nn.TransformerEncoder:
    """Batch-first pre-norm transformer encoder; pass src_key_padding_mask = ~mask.

    `dropout` is torch's single rate (attention weights, after the feed-forward activation, both residual
    branches); `attn_dropout` / `res_dropout`, when given, replace it on the attention weights / on the residual
    branches (MulT's separate attention, relu and residual dropouts). `final_norm`: a LayerNorm after the last
    layer (as MulT's transformers end)."""
    layer = nn.TransformerEncoderLayer(dim, heads, ff or 4 * dim, dropout, activation=activation,
                                       batch_first=True, norm_first=True)
    if attn_dropout is not None:
        layer.self_attn.dropout = attn_dropout
    if res_dropout is not None:
        layer.dropout1, layer.dropout2 = nn.Dropout(res_dropout), nn.Dropout(res_dropout)
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim) if final_norm else None,
                                 enable_nested_tensor=False)


class CrossModalLayer(nn.Module):
    """One cross-modal attention block (MulT, Tsai et al. 2019): queries from the target modality attend to
    the source modality; pre-norm, residual, position-wise feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1, attn_dropout: float = 0.0,
                 res_dropout: float | None = None):
        """dropout: after the feed-forward ReLU (MulT's relu dropout) and, unless `res_dropout` is given, on both
        residual branches; attn_dropout: on the attention weights."""
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=attn_dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout if res_dropout is None else res_dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        """q: (B, Lq, D), kv: (B, Lk, D), kv_mask: (B, Lk) -> (B, Lq, D)."""
        kvn = self.norm_kv(kv)
        a, _ = self.attn(self.norm_q(q), kvn, kvn, key_padding_mask=~kv_mask, need_weights=False)
        q = q + self.drop(a)
        return q + self.drop(self.ff(self.norm_ff(q)))


class CrossModalTransformer(nn.Module):
    """A stack of CrossModalLayer: source modality -> target modality (B, Lq, D)."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float = 0.1, attn_dropout: float = 0.0,
                 res_dropout: float | None = None):
        super().__init__()
        self.layers = nn.ModuleList(CrossModalLayer(dim, heads, dropout, attn_dropout, res_dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            q = layer(q, kv, kv_mask)
        return self.norm(q)


class SubNet(nn.Module):
    """MMSA's SubNet for time-averaged audio/vision features: BatchNorm, then three Linear+ReLU layers."""

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TextSubNet(nn.Module):
    """MMSA's TextSubNet: an LSTM over the token sequence, its final state through dropout and a Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.long().sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(packed)
        return self.out(self.drop(h[-1]))


class UnimodalSubNets(nn.Module):
    """MMSA's unimodal front end of LF-DNN and TFN: SubNets over time-averaged audio and vision, a TextSubNet
    over the token sequence. `cfg` needs hidden_audio, hidden_vision, hidden_text, text_out, dropout."""

    def __init__(self, manifest, cfg):
        super().__init__()
        mods = manifest.modalities
        self.audio_net = SubNet(mods["audio"]["dim"], cfg.hidden_audio, cfg.dropout)
        self.vision_net = SubNet(mods["vision"]["dim"], cfg.hidden_vision, cfg.dropout)
        self.text_net = TextSubNet(mods["text"]["dim"], cfg.hidden_text, cfg.text_out, cfg.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> h_t (B, text_out), h_a (B, hidden_audio), h_v (B, hidden_vision)."""
        h_a = self.audio_net(masked_mean(batch["audio"], batch["audio_mask"]))
        h_v = self.vision_net(masked_mean(batch["vision"], batch["vision_mask"]))
        h_t = self.text_net(batch["text"], batch["text_mask"])
        return h_t, h_a, h_v


def post_fusion_mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """Dropout, then Linear+ReLU twice, then the output Linear (MMSA's post-fusion layers)."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
