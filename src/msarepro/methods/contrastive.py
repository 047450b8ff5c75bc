"""Contrastive feature decomposition shared by ConFEDE (Yang et al., ACL 2023) and SFTTR (Sun & Tian), which
extends it: the decomposition projectors, the similarity-based partner selection and the pair sets and NT-Xent of
the intra-/inter-sample contrastive loss. Equation numbers are SFTTR's (its sec. 3.3 restates ConFEDE's loss);
docs/methods/confede.md maps them to ConFEDE's. Feature order of `feats[:, k]` (B, 6, d): the three
similarity / text-close features of text, vision, audio, then the three dissimilarity / text-far ones."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURES = ("C_T", "C_V", "C_A", "F_T", "F_V", "F_A")  # index k of feats[:, k]
C_T, C_V, C_A, F_T, F_V, F_A = range(6)


def projector(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """Text-close / text-far projector (sec. 3.3): LayerNorm, Linear + Tanh, Dropout."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.Tanh(), nn.Dropout(dropout))


def select_pairs(sim: torch.Tensor, anchor_labels: torch.Tensor, cand_labels: torch.Tensor, exclude: torch.Tensor,
                 neighbours: int = 2, pool: int = 2, low: int = 2, high: int = 2):
    """Eq. 1 and the text after it. sim: (B, N) cosine of [T;V;A] features, labels rounded M (B,) and (N,),
    exclude: (B, N) True where a candidate is the anchor itself.
    -> neigh (B, neighbours), neigh_ok, outl (B, low + high) [2 least similar, then 2 most similar], outl_ok:
    indices into the N candidates and masks of which exist. Neighbours: a random `neighbours` of the `pool` most
    similar same-label candidates (global torch RNG); outliers are disjoint."""
    B, N = sim.shape
    same = (anchor_labels[:, None] == cand_labels[None, :]) & ~exclude
    diff = (anchor_labels[:, None] != cand_labels[None, :]) & ~exclude
    k = min(pool, N)
    top_v, top_i = sim.masked_fill(~same, float("-inf")).topk(k, dim=1)  # S_0^i, most similar first
    ok = torch.isfinite(top_v)
    score = torch.rand(B, k, device=sim.device).masked_fill(~ok, -1.0)  # random choice among the valid pool
    pick = score.topk(min(neighbours, k), dim=1).indices
    neigh, neigh_ok = top_i.gather(1, pick), ok.gather(1, pick)
    hv, hi = sim.masked_fill(~diff, float("-inf")).topk(min(high, N), dim=1)  # S_1^i, most similar
    left = diff.clone()
    left.scatter_(1, hi, False)
    lv, li = sim.masked_fill(~left, float("inf")).topk(min(low, N), dim=1, largest=False)  # least similar
    outl = torch.cat([li, hi], 1)
    outl_ok = torch.cat([torch.isfinite(lv), torch.isfinite(hv)], 1)
    return neigh, neigh_ok, outl, outl_ok


def contrastive_pairs(B: int, neigh: torch.Tensor, neigh_ok: torch.Tensor, outl: torch.Tensor, outl_ok: torch.Tensor,
                      eq4: str = "text"):
    """The pair sets of eqs. 2-7 for anchors i = 0..B-1. Rows of `neigh`/`outl` index a feature table whose first
    B rows are the anchors. -> long tensors (P,) a_row, a_feat, b_row, b_feat, i (the anchor sample), group (the
    anchor feature within P^i u N^i, for eq. 8's denominator) and bool positive; only existing pairs.
    eq4: "text" makes sample i's own eq. 4 positives (C_T^i, C_V^i), (C_T^i, C_A^i) (the text's anchor C_T; the
    authors' code); "printed" uses (C_T^i, C_V^i), (C_V^i, C_A^i) as eq. 4 is printed."""
    n, m = neigh.size(1), outl.size(1)
    part = torch.cat([neigh, outl], 1)  # (B, n+m): N^i u O^i
    part_ok = torch.cat([neigh_ok, outl_ok], 1)
    i = torch.arange(B, device=neigh.device)[:, None]
    rows = []  # (a_row, a_feat, b_row, b_feat, ok, positive, group) each broadcast to (B, s)

    def add(a_row, a_feat, b_row, b_feat, ok, positive, group):
        rows.append((a_row, a_feat, b_row, b_feat, ok, positive, group))

    one = torch.ones(B, 1, dtype=torch.bool, device=neigh.device)
    slot = torch.arange(n + m, device=neigh.device)[None]
    # eq. 4, P_intra: (C_T^i, C_V^i), (C_T^i, C_A^i) [printed: (C_V^i, C_A^i)]; (C_T^j, C_V^j), (C_T^j, C_A^j) for
    # j in N^i u O^i
    add(i, C_T, i, C_V, one, True, C_T)
    if eq4 == "printed":
        add(i, C_V, i, C_A, one, True, C_V)
    else:
        add(i, C_T, i, C_A, one, True, C_T)
    for fb in (C_V, C_A):
        add(part, C_T, part, fb, part_ok, True, 3 + slot)
    # eq. 2, P_inter: (C_m^i, C_m^j) for j in N^i
    for f in (C_T, C_V, C_A):
        add(i, f, neigh, f, neigh_ok, True, f)
    # eq. 5, N_intra: (C_T^i, F_m^i); (C_T^j, F_m^j) for j in N^i u O^i
    for fb in (F_T, F_V, F_A):
        add(i, C_T, i, fb, one, False, C_T)
        add(part, C_T, part, fb, part_ok, False, 3 + slot)
    # eq. 3, N_inter: (C_m^i, C_m^k) for k in O^i
    for f in (C_T, C_V, C_A):
        add(i, f, outl, f, outl_ok, False, f)
    groups_per_anchor = 3 + n + m
    out = {k: [] for k in ("a_row", "a_feat", "b_row", "b_feat", "i", "group", "positive")}
    for a_row, a_feat, b_row, b_feat, ok, positive, group in rows:
        shape = torch.broadcast_shapes(torch.as_tensor(a_row).shape, torch.as_tensor(b_row).shape, ok.shape)
        full = lambda v: torch.as_tensor(v, device=neigh.device).expand(shape)  # noqa: E731
        keep = full(ok)
        out["a_row"].append(full(a_row)[keep])
        out["a_feat"].append(full(a_feat)[keep])
        out["b_row"].append(full(b_row)[keep])
        out["b_feat"].append(full(b_feat)[keep])
        out["i"].append(full(i)[keep])
        out["group"].append((full(i) * groups_per_anchor + full(group))[keep])
        out["positive"].append(full(positive)[keep])
    return {k: torch.cat(v) for k, v in out.items()}


def nt_xent(feats: torch.Tensor, pairs: dict[str, torch.Tensor], B: int, temperature: float,
            denominator: str = "anchor") -> torch.Tensor:
    """Eqs. 8 and 17. feats: (N, 6, d) decomposed features (rows 0..B-1 are the anchors); pairs from
    `contrastive_pairs`. l^i = sum_{(a,p) in P^i} -log exp(s_ap) / sum_{(a,k) in P^i u N^i} exp(s_ak), with
    s = cos / temperature; the denominator runs over pairs with the same anchor a ("anchor") or all of P^i u N^i
    ("all"). Returns L_cl = mean_i l^i.
    "pair" is ConFEDE's form (the authors' code, a pytorch-metric-learning NT-Xent with explicit pair indices):
    each positive (a, p) against itself and the negatives of the same anchor a only,
    -log exp(s_ap) / (exp(s_ap) + sum_{(a,n) in N^i} exp(s_an)), averaged over the positives of sample i
    (l^i is a mean, not a sum), then over i."""
    a = feats[pairs["a_row"], pairs["a_feat"]]
    b = feats[pairs["b_row"], pairs["b_feat"]]
    s = F.cosine_similarity(a, b, dim=-1) / temperature  # (P,)
    pos = pairs["positive"]
    if denominator == "pair":
        g = pairs["group"]
        neg = torch.zeros(int(g.max()) + 1, dtype=s.dtype, device=s.device).index_add(0, g[~pos], s[~pos].exp())
        per = torch.log(s[pos].exp() + neg[g[pos]]) - s[pos]  # (P+,)
        i = pairs["i"][pos]
        total = torch.zeros(B, dtype=s.dtype, device=s.device).index_add(0, i, per)
        count = torch.zeros(B, dtype=s.dtype, device=s.device).index_add(0, i, torch.ones_like(per))
        return (total / count.clamp(min=1)).mean()
    g = pairs["group"] if denominator == "anchor" else pairs["i"]
    denom = torch.zeros(int(g.max()) + 1 if len(g) else 1, dtype=s.dtype, device=s.device).index_add(0, g, s.exp())
    return (denom[g[pos]].log() - s[pos]).sum() / B
