"""Small building blocks shared by several methods. Masks are True on real (non-padded) positions."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def fitting_heads(width: int, heads: int) -> int:
    """The head count for attention over a `width`-wide input configured with `heads`: `heads` itself when it
    divides `width` (every published setting on its own dataset), else the largest divisor of `width` below it (1 at
    worst, e.g. CH-SIMS's 709-d vision), so that a preset chosen for one dataset's feature sizes builds on any
    other's (multi-head attention splits the width into heads of width / heads each)."""
    if heads < 1:
        raise ValueError(f"a head count must be at least 1 (got {heads})")
    return max(h for h in range(1, min(heads, width) + 1) if width % h == 0)


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


# ---- dropout, attention and transformer layers, lean on CPU -------------------------------------------------
# At the widths these models use (d = 30-120, a few dozen positions), a CPU step is dominated by per-element random
# draws and per-op overhead, not by matmuls: torch's CPU `bernoulli_` (every nn.Dropout) draws one 32-bit number per
# element, and nn.MultiheadAttention re-derives masks and falls back to an unfused path whenever its attention
# dropout is on. The layers below keep torch's parameters, initialisation and state_dict names (nn.MultiheadAttention's
# in_proj / out_proj; nn.TransformerEncoder's layers.N.self_attn / linear1 / linear2 / norm1 / norm2 / norm) and do
# the same arithmetic with fewer ops. Their dropout masks come from other random draws than torch's, so runs
# differ from runs with torch's modules (same distribution; docs/architecture.md, "Speed").

_INT16_SPAN = 65536


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each entry with probability p, scale the rest by 1 / (1 - p). On CPU the keep mask comes
    from four 16-bit slices of each 64-bit random draw (p rounded to a multiple of 2^-16); elsewhere F.dropout."""
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None)  # the full 64-bit range
    keep = draws.view(torch.int16)[:n].view(x.shape) >= round(p * _INT16_SPAN) - _INT16_SPAN // 2
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` (the fast CPU mask)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Key mask (B, L), True on real positions -> additive bias (B, 1, 1, L): 0 where real, -inf where padded."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))[:, None, None]


class MultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention (batch-first; its parameters and initialisation) with `attend`, a lean forward:
    one packed projection, F.scaled_dot_product_attention when the attention weights get no dropout, otherwise
    softmax(Q K^T / sqrt(d_h) + bias), `dropout`, times V (Vaswani et al. 2017, eq. 1)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__(dim, heads, dropout=dropout, batch_first=True)

    def attend(self, q: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """q (B, Lq, D), kv (B, Lk, D) (the same tensor for self-attention), bias (B, 1, 1, Lk) -> (B, Lq, D)."""
        d, h = self.embed_dim, self.num_heads
        w, b = self.in_proj_weight, self.in_proj_bias
        if q is kv:
            qp, kp, vp = F.linear(q, w, b).chunk(3, dim=-1)
        else:
            qp = F.linear(q, w[:d], b[:d])
            kp, vp = F.linear(kv, w[d:], b[d:]).chunk(2, dim=-1)
        qp, kp, vp = (t.unflatten(-1, (h, d // h)).transpose(1, 2) for t in (qp, kp, vp))  # (B, h, L, d/h)
        if self.training and self.dropout > 0.0:
            weights = torch.softmax(qp @ kp.transpose(-2, -1) * (d // h) ** -0.5 + bias, dim=-1)  # (B, h, Lq, Lk)
            out = dropout(weights, self.dropout) @ vp
        else:
            out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=bias.to(qp.dtype))
        return self.out_proj(out.transpose(1, 2).flatten(2))


_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class TransformerLayer(nn.Module):
    """nn.TransformerEncoderLayer (batch-first; same parameters, initialisation order and state_dict names) on
    `MultiheadAttention.attend` and `dropout`. Pre-norm (`norm_first`) or post-norm, as torch's."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float = 0.1, activation: str = "relu",
                 norm_first: bool = True, attn_dropout: float | None = None, res_dropout: float | None = None):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, dropout if attn_dropout is None else attn_dropout)
        self.linear1 = nn.Linear(dim, ff)
        self.dropout = Dropout(dropout)  # after the feed-forward activation
        self.linear2 = nn.Linear(ff, dim)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        res = dropout if res_dropout is None else res_dropout  # on both branches before the residual sums
        self.dropout1, self.dropout2 = Dropout(res), Dropout(res)
        self.activation = activation

    def _sa(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.dropout1(self.self_attn.attend(x, x, bias))

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(_ACTIVATIONS[self.activation](self.linear1(x)))))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), bias (B, 1, 1, L) from `attention_bias` -> (B, L, D)."""
        if self.norm_first:
            x = x + self._sa(self.norm1(x), bias)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, bias))
        return self.norm2(x + self._ff(x))


class TransformerEncoder(nn.Module):
    """A stack of `layers` copies of one TransformerLayer (deep copies, so they start equal, as nn.TransformerEncoder's
    do), and an optional final LayerNorm. forward(x (B, L, D), src_key_padding_mask (B, L) True on PADDED positions,
    as torch's) -> (B, L, D)."""

    def __init__(self, layer: TransformerLayer, layers: int, norm: nn.LayerNorm | None = None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(layers))
        self.num_layers = layers
        self.norm = norm

    def forward(self, x: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if src_key_padding_mask is None:
            src_key_padding_mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        bias = attention_bias(~src_key_padding_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x) if self.norm is not None else x


def transformer_encoder(dim: int, heads: int, layers: int, ff: int | None = None, dropout: float = 0.1,
                        activation: str = "relu", attn_dropout: float | None = None,
                        res_dropout: float | None = None, final_norm: bool = False,
                        norm_first: bool = True) -> TransformerEncoder:
    """Batch-first transformer encoder (pre-norm unless `norm_first=False`); pass src_key_padding_mask = ~mask.

    `dropout` is torch's single rate (attention weights, after the feed-forward activation, both residual
    branches); `attn_dropout` / `res_dropout`, when given, replace it on the attention weights / on the residual
    branches (MulT's separate attention, relu and residual dropouts). `final_norm`: a LayerNorm after the last
    layer (as MulT's transformers end)."""
    layer = TransformerLayer(dim, heads, ff or 4 * dim, dropout, activation, norm_first, attn_dropout, res_dropout)
    return TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim) if final_norm else None)


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
        self.attn = MultiheadAttention(dim, heads, attn_dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = Dropout(dropout if res_dropout is None else res_dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_bias: torch.Tensor) -> torch.Tensor:
        """q: (B, Lq, D), kv: (B, Lk, D), kv_bias: (B, 1, 1, Lk) from `attention_bias` -> (B, Lq, D)."""
        q = q + self.drop(self.attn.attend(self.norm_q(q), self.norm_kv(kv), kv_bias))
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
        """kv_mask: (B, Lk) True on real positions."""
        bias = attention_bias(kv_mask, kv.dtype)
        for layer in self.layers:
            q = layer(q, kv, bias)
        return self.norm(q)


class SubNet(nn.Module):
    """MMSA's SubNet for time-averaged audio/vision features: BatchNorm, then three Linear+ReLU layers."""

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(in_dim), Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TextSubNet(nn.Module):
    """MMSA's TextSubNet: an LSTM over the token sequence, its final state through dropout and a Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, batch_first=True)
        self.drop = Dropout(dropout)
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
    return nn.Sequential(Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
