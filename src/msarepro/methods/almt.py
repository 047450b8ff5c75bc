"""ALMT: Adaptive Language-guided Multimodal Transformer (Zhang et al., EMNLP 2023; docs/methods/almt.md).

    U_m (B, L_m, D_m), audio and vision cut to their first `max_frames` frames (sec. 3.2: 50 on MOSI)
        -> Linear to d; concat(H_m^0, .) + learned positions -> `embed_depth` transformer layers
        -> the T token outputs                                       H_m^1 (B, T, d), m in {l, a, v}     eq. 1
    H_l^i = E_l^i(H_l^{i-1}), i = 2..ahl_depth                       language scales (B, T, d)           eq. 2
    H_hyper^0 (T, d) learned; AHL layer j = 1..ahl_depth, guided by H_l^j:
        alpha = softmax(Q_l K_a^T / sqrt(d_k))   (B, heads, T, T)                                        eq. 3
        beta  = softmax(Q_l K_v^T / sqrt(d_k))   (B, heads, T, T)                                        eq. 4
        H_hyper^j = H_hyper^{j-1} + alpha V_a + beta V_v                                                 eq. 5
    CrossTrans(Concat(H_0, H_l^3) as queries, Concat(H_0, H_hyper^3) as keys/values) -> H (B, d)       eqs. 6-8
    Linear(d -> 1) on H; the loss is MSE on M                                                            eq. 9

Settings the paper leaves open follow the authors' code (docs/methods/almt.md): pre-norm ViT layers with heads of
width 64 (`head_dim`) and a GELU feed-forward of width 128 (`mlp_dim`), inputs of each AHL layer layer-normed,
H_hyper^0 initialised to ones, the fusion token H_0 shared by both streams, dropout 0. With these the trainable
parameters outside the text encoder on MOSI's dims come to 2.50M with 50 audio/vision frames (the setting of
the paper's section 3.2 and the default, `max_frames: 50`) and 2.60M with the full unaligned lengths (375 / 500,
`max_frames: 0`, the authors' current code; the params.yaml presets of MOSEI and CH-SIMS (v2) use it, since the
paper gives their lengths nowhere).
Departures, all deliberate: padded positions are masked everywhere (the authors attend over padding); eq. 5's
residual adds to H_hyper^{j-1} itself, while the authors' code adds to LayerNorm(H_hyper^{j-1})
(`ahl_residual: normed`); the language-scale layers add no second position embedding.

Note that H_0's output attends only to the key/value stream (eqs. 6-8, the crossmodal layers of Tsai et al. 2019
have no self-attention), so with the fusion transformer the prediction reads the language only through the
hyper-modality. Two consequences for the ablations: a layer without language guidance must still take the
language in, or Table 3's "w/o Audio & AHL" rows (printed close to the full model) would never read text, so an
unguided layer is an MLP over the concatenation of the same inputs an AHL layer attends over, [H_l^j ; H_a^1 ;
H_v^1]; and Table 5's swap (H_hyper^3 as query) would never read audio or vision, so it is refused.

Ablations (paper section 4.5), each a Config field:
    modalities        Table 3: drop audio and/or vision (their terms vanish from eq. 5); with neither there is
                      no hyper-modality to learn and H_l^3 takes its place as key/value (the paper is silent;
                      the learned constant H_hyper^0 there would make the prediction input-independent)
    ahl_guidance      Table 6: which language scales guide AHL; an unguided layer is an MLP over the
                      feature concatenation [H_l^j ; H_a^1 ; H_v^1]; [] is "w/o AHL" of Table 4 (same row in
                      Table 6) and, with a modality dropped, Table 3's "w/o Audio & AHL" / "w/o Video & AHL"
    fusion            Table 7: transformer | concat | add | gru | tfn | lmf; "w/o Fusion Transformer" of
                      Table 4 is concat (the two tables print the same numbers)
    fusion_query      Table 5: language (H_l^3 queries, the paper); hyper (the swap) is refused, see above
    max_frames        sec. 3.2: audio/vision frames kept, 50 (paper, MOSI) | 0 = full length (authors' code)
    modality_embedding  Table 4: false keeps each projected sequence at its own length (no tokens, no layer)
`attention_maps` gives alpha and beta of every AHL layer for one sample; the `figures` stage draws them (Figs. 4-5,
msarepro.report.figures_papers.almt_attention).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import Dropout, masked_mean
from .text_encoder import TextEncoder

AV = ("audio", "vision")
FUSIONS = ("transformer", "concat", "add", "gru", "tfn", "lmf")


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads * dk) -> (B, heads, L, dk)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, dk) -> (B, L, heads * dk)."""
    b, h, n, dk = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dk)


def attention_weights(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k)) over real keys: q (B, h, Lq, dk), k (B, h, Lk, dk), key_mask (B, Lk)
    -> (B, h, Lq, Lk); padded keys get weight 0."""
    scores = q @ k.transpose(-1, -2) / q.size(-1) ** 0.5
    scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention whose inner width heads * head_dim may differ from d (ViT style): q/k/v projections
    without bias, output projection back to d."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), Dropout(dropout))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        """q (B, Lq, d), kv (B, Lk, d), kv_mask (B, Lk) -> (B, Lq, d)."""
        h = self.heads
        qh, kh, vh = split_heads(self.to_q(q), h), split_heads(self.to_k(kv), h), split_heads(self.to_v(kv), h)
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=kv_mask[:, None, None, :])
        return self.to_out(merge_heads(out))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer (ViT): x + Attn(LN(x), LN(kv)), then x + FF(LN(x)) with a GELU MLP.
    Self-attention when `cross` is False; otherwise queries from x attend to a second sequence."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float, cross: bool = False):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = MultiHeadAttention(dim, heads, head_dim, dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), Dropout(dropout), nn.Linear(mlp_dim, dim),
                                Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, kv: torch.Tensor | None = None,
                kv_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, d), mask (B, L) [, kv (B, Lk, d), kv_mask (B, Lk)] -> (B, L, d)."""
        q = self.norm_q(x)
        src, src_mask = (q, mask) if self.norm_kv is None else (self.norm_kv(kv), kv_mask)
        x = x + self.attn(q, src, src_mask)
        return x + self.ff(self.norm_ff(x))


def first_frames(x: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's first n frames (sec. 3.2): x (B, L, D), mask (B, L) -> (B, min(L, n), D), (B, min(L, n)).
    Batches are right-padded (a mask is True on a prefix), so cutting features and mask together keeps a
    sample's first min(length, n) real frames and leaves its padding masked; n = 0 keeps everything."""
    return (x[:, :n], mask[:, :n]) if n else (x, mask)


def _learned(n: int, dim: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(n, dim) * 0.02)  # ViT's initialisation of learned positions and tokens


class ModalityEmbedding(nn.Module):
    """Eq. 1: H_m^1 = E_m^0(concat(H_m^0, U_m)) -> (B, T, d), the outputs at the T learned token positions.
    With `use_tokens` False (Table 4, w/o modality embedding) only the projection and positions remain and the
    output keeps the input's length and mask."""

    def __init__(self, in_dim: int, max_len: int, cfg, use_tokens: bool):
        super().__init__()
        d, t = cfg.dim, cfg.tokens
        self.proj = nn.Linear(in_dim, d)
        self.tokens = _learned(t, d) if use_tokens else None  # H_m^0 (T, d)
        self.pos = _learned(max_len + (t if use_tokens else 0), d)
        self.drop = Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerLayer(d, cfg.heads, cfg.head_dim, cfg.mlp_dim, cfg.dropout)
                                    for _ in range(cfg.embed_depth if use_tokens else 0))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, D_m), mask (B, L) -> (H_m^1 (B, T, d), mask (B, T)) [or (B, L, d), (B, L)]."""
        x = self.proj(x)  # (B, L, d)
        if self.tokens is None:
            return self.drop(x + self.pos[: x.size(1)]), mask
        b, t = x.size(0), self.tokens.size(0)
        z = torch.cat([self.tokens.expand(b, -1, -1), x], dim=1)  # concat(H_m^0, U_m W) (B, T + L, d)
        z = self.drop(z + self.pos[: z.size(1)])
        m = torch.cat([mask.new_ones(b, t), mask], dim=1)
        for layer in self.layers:
            z = layer(z, m)
        return z[:, :t], m[:, :t]


class AHLLayer(nn.Module):
    """Adaptive Hyper-modality Learning layer (eqs. 3-5): language features H_l^j are the queries, audio and
    vision H_m^1 the keys and values; H_hyper is updated by the attention-weighted sums. One head of width d
    needs no output projection, so eq. 5 then holds literally; several heads are concatenated and projected
    back to d (multi-head attention, Vaswani et al. 2017)."""

    def __init__(self, dim: int, heads: int, head_dim: int, sources: tuple[str, ...], residual: str,
                 dropout: float):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.norm_l = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)  # W_{Q_l}, shared by both modalities
        self.norm = nn.ModuleDict({m: nn.LayerNorm(dim) for m in sources})
        self.to_k = nn.ModuleDict({m: nn.Linear(dim, inner, bias=False) for m in sources})  # W_{K_a}, W_{K_v}
        self.to_v = nn.ModuleDict({m: nn.Linear(dim, inner, bias=False) for m in sources})  # W_{V_a}, W_{V_v}
        self.to_out = nn.Identity() if heads == 1 and head_dim == dim else nn.Linear(inner, dim)
        self.norm_hyper = nn.LayerNorm(dim) if residual == "normed" else None
        self.drop = Dropout(dropout)

    def forward(self, h_l: torch.Tensor, sources: dict[str, tuple[torch.Tensor, torch.Tensor]],
                h_hyper: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """h_l (B, T, d); sources m -> (H_m^1 (B, T_m, d), mask (B, T_m)); h_hyper (B, T, d)
        -> (H_hyper^j (B, T, d), {m: weights (B, heads, T, T_m)}): alpha for audio, beta for vision."""
        q = split_heads(self.to_q(self.norm_l(h_l)), self.heads)  # Q_l (B, h, T, dk)
        shift, weights = 0, {}
        for m, (h_m, mask) in sources.items():
            hn = self.norm[m](h_m)
            w = attention_weights(q, split_heads(self.to_k[m](hn), self.heads), mask)  # alpha (3) / beta (4)
            shift = shift + w @ split_heads(self.to_v[m](hn), self.heads)  # alpha V_a + beta V_v (B, h, T, dk)
            weights[m] = w
        base = h_hyper if self.norm_hyper is None else self.norm_hyper(h_hyper)
        return base + self.drop(self.to_out(merge_heads(shift))), weights  # eq. 5


class UnguidedLayer(nn.Module):
    """The MLP layer that replaces an AHL layer without language guidance (Table 6; Table 4: "replaced with
    feature concatenation"): the inputs the AHL layer would attend over, concatenated along features instead,
    H_hyper^j = H_hyper^{j-1} + MLP(LN(concat(H_l^j, H_a^1, H_v^1)))   (B, T, (1 + n) d) -> (B, T, d).
    Language is concatenated, not a query: it no longer chooses which audio/vision tokens enter, but the
    prediction, which reads the language only through H_hyper (module docstring), still sees it."""

    def __init__(self, dim: int, n_sources: int, mlp_dim: int, dropout: float):
        super().__init__()
        width = (1 + n_sources) * dim
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), Dropout(dropout))

    def forward(self, h_l: torch.Tensor, sources: dict[str, tuple[torch.Tensor, torch.Tensor]],
                h_hyper: torch.Tensor) -> torch.Tensor:
        """h_l (B, T, d); sources m -> (H_m^1 (B, T, d), mask); h_hyper (B, T, d) -> H_hyper^j (B, T, d)."""
        x = torch.cat([h_l, *(h for h, _ in sources.values())], dim=-1)  # (B, T, (1 + n) d)
        return h_hyper + self.mlp(self.norm(x))


class CrossModalityFusion(nn.Module):
    """Eqs. 6-8: prepend the shared token H_0 to both streams (each with its own learned positions), let the
    query stream attend to the key/value stream through `depth` pre-norm cross-attention layers, and return the
    output at H_0's position, H (B, d)."""

    def __init__(self, dim: int, n_query: int, n_kv: int, depth: int, heads: int, head_dim: int, mlp_dim: int,
                 dropout: float):
        super().__init__()
        self.h0 = nn.Parameter(torch.zeros(1, dim))  # H_0
        self.pos_q = _learned(n_query + 1, dim)
        self.pos_kv = _learned(n_kv + 1, dim)
        self.drop = Dropout(dropout)
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, head_dim, mlp_dim, dropout, cross=True)
                                    for _ in range(depth))

    def forward(self, q: torch.Tensor, q_mask: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        """q (B, Lq, d), kv (B, Lk, d), masks (B, L.) -> H (B, d)."""
        b = q.size(0)
        h0 = self.h0.expand(b, 1, -1)
        q = self.drop(torch.cat([h0, q], 1) + self.pos_q[: q.size(1) + 1])  # eq. 6: Concat(H_0, H_l^3)
        kv = self.drop(torch.cat([h0, kv], 1) + self.pos_kv[: kv.size(1) + 1])  # eq. 7: Concat(H_0, H_hyper^3)
        q_mask = torch.cat([q_mask.new_ones(b, 1), q_mask], 1)
        kv_mask = torch.cat([kv_mask.new_ones(b, 1), kv_mask], 1)
        for layer in self.layers:
            q = layer(q, q_mask, kv, kv_mask)
        return q[:, 0]  # eq. 8: H


class PooledFusion(nn.Module):
    """The alternatives of Table 7 to the fusion transformer, on the token means h_l, h_hyper (B, d):
    concat [h_l; h_hyper] (2d); add h_l + h_hyper (d); gru: the last state of a GRU over [H_l^3; H_hyper^3]
    (d); tfn: outer product of [W h_l; 1] and [W h_hyper; 1] (Zadeh et al. 2017) -> Linear+ReLU (d);
    lmf: the low-rank form of that product, rank r (Liu et al. 2018) (d)."""

    def __init__(self, kind: str, dim: int, tfn_dim: int, lmf_rank: int):
        super().__init__()
        self.kind = kind
        self.out_dim = 2 * dim if kind == "concat" else dim
        if kind == "gru":
            self.gru = nn.GRU(dim, dim, batch_first=True)
        elif kind == "tfn":
            self.reduce = nn.ModuleList(nn.Linear(dim, tfn_dim) for _ in range(2))
            self.post = nn.Sequential(nn.Linear((tfn_dim + 1) ** 2, dim), nn.ReLU())
        elif kind == "lmf":
            self.factors = nn.ParameterList(nn.Parameter(torch.randn(lmf_rank, dim + 1, dim) * (dim + 1) ** -0.5)
                                            for _ in range(2))
            self.rank_weights = nn.Parameter(torch.full((1, lmf_rank), 1.0 / lmf_rank))
            self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, h_l: torch.Tensor, l_mask: torch.Tensor, h_hyper: torch.Tensor,
                hyper_mask: torch.Tensor) -> torch.Tensor:
        """H_l^3 (B, T, d), H_hyper^3 (B, T, d) with masks (B, T) -> (B, out_dim)."""
        if self.kind == "gru":
            _, last = self.gru(torch.cat([h_l, h_hyper], dim=1))  # (1, B, d)
            return last[0]
        pooled = [masked_mean(h_l, l_mask), masked_mean(h_hyper, hyper_mask)]  # 2 x (B, d)
        if self.kind == "concat":
            return torch.cat(pooled, -1)
        if self.kind == "add":
            return pooled[0] + pooled[1]
        ones = pooled[0].new_ones(pooled[0].size(0), 1)
        if self.kind == "tfn":
            a, b = (torch.cat([r(p), ones], -1) for r, p in zip(self.reduce, pooled))  # (B, k + 1) each
            return self.post(torch.einsum("bi,bj->bij", a, b).flatten(1))  # (B, (k + 1)^2) -> (B, d)
        # lmf: sum_r w_r prod_m ([h_m; 1] W_m^(r))
        per_rank = [torch.einsum("bi,rio->bro", torch.cat([p, ones], -1), w) for p, w in zip(pooled, self.factors)]
        return (self.rank_weights @ (per_rank[0] * per_rank[1])).squeeze(1) + self.bias  # (B, d)


@register("almt")
class ALMT(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        text_encoder: str = "features"  # features | tiny-bert | packaged-minilm | HF name (bert-base-uncased)
        dim: int = 128  # d
        tokens: int = 8  # T, the learned tokens per modality
        heads: int = 8  # embedding, language-scale and fusion layers
        head_dim: int = 64  # their head width (ViT's; the paper is silent)
        mlp_dim: int = 128
        embed_depth: int = 1  # modality embedding depth (Table 9)
        ahl_depth: int = 3  # AHL layers = language scales H_l^1..H_l^depth (Table 9, Fig. 9)
        ahl_heads: int = 8
        ahl_head_dim: int = 16  # d_k (eq. 3)
        ahl_residual: str = "paper"  # paper: H^{j-1} + ... (eq. 5) | normed: LN(H^{j-1}) + ... (authors' code)
        fusion_depth: int = 2  # Table 9: 2 on MOSI, 4 on MOSEI and CH-SIMS
        dropout: float = 0.0
        max_frames: int = 50  # audio/vision frames kept: 50 = paper sec. 3.2 (MOSI); 0 = full length (authors' code)
        # ablations (paper section 4.5)
        modalities: tuple[str, ...] = ("text", "audio", "vision")  # Table 3
        modality_embedding: bool = True  # Table 4
        ahl_guidance: tuple[int, ...] | None = None  # Table 6: guided layers j (H_l^j); None = all; [] = w/o AHL
        fusion: str = "transformer"  # Table 7 (and Table 4's w/o fusion transformer = concat)
        fusion_query: str = "language"  # Table 5: language; its swap, hyper, is refused (see validate)
        tfn_dim: int = 32  # per-stream width before the outer product of fusion: tfn
        lmf_rank: int = 4  # rank of fusion: lmf

        def guided(self) -> tuple[int, ...]:
            return tuple(range(1, self.ahl_depth + 1)) if self.ahl_guidance is None else tuple(self.ahl_guidance)

        def validate(self, where: str) -> None:
            def bad(key: str, msg: str):
                raise ConfigError(f"{where}.{key}: {msg}")
            for key in ("dim", "tokens", "heads", "head_dim", "mlp_dim", "embed_depth", "ahl_depth", "ahl_heads",
                        "ahl_head_dim", "fusion_depth", "tfn_dim", "lmf_rank"):
                if getattr(self, key) < 1:
                    bad(key, f"must be at least 1, got {getattr(self, key)}")
            if self.max_frames < 0:
                bad("max_frames", f"must be 0 (full length) or positive, got {self.max_frames}")
            mods = self.modalities
            if "text" not in mods or len(set(mods)) != len(mods) or not set(mods) <= {"text", *AV}:
                bad("modalities", f"{list(mods)}: a list without repeats of text, audio, vision that keeps "
                                  "text (ALMT is guided by language)")
            g = self.guided()
            if len(set(g)) != len(g) or any(not 1 <= j <= self.ahl_depth for j in g):
                bad("ahl_guidance", f"{list(g)}: distinct layer numbers in 1..ahl_depth={self.ahl_depth}")
            if self.fusion not in FUSIONS:
                bad("fusion", f"{self.fusion!r}; expected one of {', '.join(FUSIONS)}")
            if self.fusion_query not in ("language", "hyper"):
                bad("fusion_query", f"{self.fusion_query!r}; expected language")
            if self.fusion_query == "hyper":
                bad("fusion_query", "hyper (Table 5's swap) is refused: H is read at H_0 on the query stream, which "
                                    "attends only to the key/value stream (eqs. 6-8), so with H_hyper^3 as query "
                                    "the prediction would never read audio or vision; use language")
            if self.ahl_residual not in ("paper", "normed"):
                bad("ahl_residual", f"{self.ahl_residual!r}; expected paper or normed")
            if not self.modality_embedding:
                if len(g) < self.ahl_depth and any(m in mods for m in AV):
                    bad("modality_embedding", "false keeps each modality at its own length, so unguided layers "
                                              "(which concatenate modalities token-wise) need it true")
                if self.fusion == "gru":
                    bad("modality_embedding", "false leaves padded sequences; use a fusion other than gru")

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        d, mods = cfg.dim, manifest.modalities
        self.text = TextEncoder(cfg.text_encoder, manifest)
        text_len = mods["text" if cfg.text_encoder == "features" else "text_ids"]["max_len"]
        lengths = {"text": text_len, **{m: self._frames(mods[m]["max_len"]) for m in AV}}
        dims = {"text": self.text.out_dim, **{m: mods[m]["dim"] for m in AV}}
        me = cfg.modality_embedding
        self.embed = nn.ModuleDict({m: ModalityEmbedding(dims[m], lengths[m], cfg, me) for m in cfg.modalities})
        self.language = nn.ModuleList(TransformerLayer(d, cfg.heads, cfg.head_dim, cfg.mlp_dim, cfg.dropout)
                                      for _ in range(cfg.ahl_depth - 1))  # E_l^2.. (eq. 2)
        n_tok = cfg.tokens if me else text_len
        self.sources = tuple(m for m in AV if m in cfg.modalities)
        self.h_hyper0 = nn.Parameter(torch.ones(n_tok, d)) if self.sources else None  # H_hyper^0 (authors: ones)
        guided = cfg.guided()
        self.hyper_layers = nn.ModuleList(
            (AHLLayer(d, cfg.ahl_heads, cfg.ahl_head_dim, self.sources, cfg.ahl_residual, cfg.dropout)
             if j in guided else UnguidedLayer(d, len(self.sources), cfg.mlp_dim, cfg.dropout))
            for j in range(1, cfg.ahl_depth + 1)) if self.sources else nn.ModuleList()
        if cfg.fusion == "transformer":
            self.fusion = CrossModalityFusion(d, n_tok, n_tok, cfg.fusion_depth, cfg.heads, cfg.head_dim,
                                              cfg.mlp_dim, cfg.dropout)
            fused_dim = d
        else:
            self.fusion = PooledFusion(cfg.fusion, d, cfg.tfn_dim, cfg.lmf_rank)
            fused_dim = self.fusion.out_dim
        self.out = nn.Linear(fused_dim, self.out_dim)

    def _frames(self, max_len: int) -> int:
        return min(max_len, self.cfg.max_frames) if self.cfg.max_frames else max_len

    def encode(self, batch: dict[str, torch.Tensor]) -> dict:
        """Every stage: h1 {m: (H_m^1, mask)}, language [H_l^1..], hyper H_hyper^depth (B, T, d),
        weights [{audio: alpha, vision: beta} per guided AHL layer, (B, heads, T, T_m)], fused (B, fused_dim)."""
        cfg = self.cfg
        inputs = {"text": self.text(batch)}  # (B, Lt, Dt), (B, Lt)
        for m in self.sources:
            inputs[m] = first_frames(batch[m], batch[f"{m}_mask"], cfg.max_frames)  # (B, <= max_frames, D_m)
        h1 = {m: self.embed[m](*inputs[m]) for m in inputs}  # eq. 1
        h_l, l_mask = h1["text"]
        language = [h_l]
        for layer in self.language:
            language.append(layer(language[-1], l_mask))  # eq. 2
        b, n_tok = h_l.shape[:2]
        sources = {m: h1[m] for m in self.sources}
        weights = []
        # H_hyper^0 (B, T, d); without audio and vision the language itself (see the module docstring)
        hyper = self.h_hyper0[:n_tok].expand(b, -1, -1) if self.sources else language[-1]
        for j, layer in enumerate(self.hyper_layers):
            if isinstance(layer, AHLLayer):
                hyper, w = layer(language[j], sources, hyper)  # eqs. 3-5, guided by H_l^{j+1}
                weights.append(w)
            else:
                hyper = layer(language[j], sources, hyper)  # MLP over [H_l^{j+1} ; H_a^1 ; H_v^1]
        fused = self.fusion(language[-1], l_mask, hyper, l_mask)  # H_l^3 queries H_hyper^3 (same token count)
        return {"h1": h1, "language": language, "hyper": hyper, "weights": weights, "fused": fused}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        enc = self.encode(batch)
        return {"pred": self.head(self.out(enc["fused"])), "fused": enc["fused"]}

    @torch.no_grad()
    def attention_maps(self, batch: dict[str, torch.Tensor], sample: int = 0) -> dict[str, np.ndarray]:
        """alpha (language x audio) and beta (language x vision) of every guided AHL layer for one sample of the
        batch, cut to the sample's real keys: {"alpha_layer{j}": (heads, T, T_a), "beta_layer{j}": ...}."""
        was_training = self.training
        self.eval()
        enc = self.encode(batch)
        self.train(was_training)
        guided = [j for j, layer in enumerate(self.hyper_layers, 1) if isinstance(layer, AHLLayer)]
        out = {}
        for j, w in zip(guided, enc["weights"]):
            for m, name in (("audio", "alpha"), ("vision", "beta")):
                if m in w:
                    keep = enc["h1"][m][1][sample]
                    out[f"{name}_layer{j}"] = w[m][sample][..., keep].cpu().numpy()
        return out
