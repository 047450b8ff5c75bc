"""AE-MT's per-modality autoencoders and the two pretraining tasks (Feng et al. 2024, section 3.2).

Per modality m in {text, audio, vision} (B = batch, L = sequence length, D_m = input width, d = model width):
    X_m (B, L, D_m) --Conv1D, kernel k_m (eq. 1)--> F_m (B, L, d) --E_m (eq. 2)--> H_m (B, L, d)
    H_m --D_m (eq. 3)--> F'_m (B, L, d) --Conv1D, kernel k_m (eq. 4)--> X^_m (B, L, D_m)
    L_recon = sum_m masked-MSE(X^_m, X_m)                                         (eq. 5)
Modality-consistency detection:
    with probability p one modality of a sample is replaced by another sample's; y^tamper = 1 (eq. 6)
    C([mean H_t; mean H_a; mean H_v]) -> logit of P(tampered)                     (eqs. 7-8)
    L_consistency = binary cross-entropy                                          (eq. 9)
    L_ae = L_recon + lambda_1 * L_consistency                                     (eq. 10)

`ModalityEncoder` (Conv1D + E_m, methods/modality_encoder.py) is the part that AE-MT's fine-tuning reuses; the
methods layer owns it and this package builds on it. E_m and D_m are transformer stacks
(Table 2: 3 + 3 layers) or LSTMs (Table 5, "w/o TR"). Choices the paper leaves open, made here:
- eq. 5 writes the target as F_m, but eq. 4 maps back to "the same dimension as the original sample": the
  target is the (pooled) input X_m; padded positions are excluded;
- the transformer decoder's queries are sinusoidal positions attending to H_m (so every reconstruction goes
  through the hidden features); E_m gets sinusoidal positions added to F_m;
- eq. 7 concatenates hidden features of different lengths: each H_m is mean-pooled over its real positions first;
- the donor of a tampered modality is another sample of the same batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.blocks import masked_mean, sinusoidal_positions
from ..methods.modality_encoder import MODS, EncoderSpec, Inputs, ModalityEncoder, conv_seq, run_lstm, same_conv1d


class ModalityDecoder(nn.Module):
    """Eqs. 3-4: H_m (B, L, d) -> X^_m (B, L, D_m)."""

    def __init__(self, out_dim: int, spec: EncoderSpec, layers: int, modality: str):
        super().__init__()
        self.spec = spec
        if spec.arch == "transformer":
            layer = nn.TransformerDecoderLayer(spec.dim, spec.heads, 4 * spec.dim, spec.dropout,
                                               batch_first=True, norm_first=True)
            self.body = nn.TransformerDecoder(layer, layers)
        else:
            self.body = nn.LSTM(spec.dim, spec.dim, layers, batch_first=True,
                                dropout=spec.dropout if layers > 1 else 0.0)
        self.conv = same_conv1d(spec.dim, out_dim, spec.kernel(modality))  # eq. 4, kernel k_m

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.spec.arch == "lstm":
            f = run_lstm(self.body, h, mask)
        else:
            queries = sinusoidal_positions(h.size(1), h.size(2), h.device).expand(h.size(0), -1, -1)
            f = self.body(queries, h, tgt_key_padding_mask=~mask, memory_key_padding_mask=~mask)  # F'_m, eq. 3
        return conv_seq(self.conv, f)  # X^_m, eq. 4


class Autoencoders(nn.Module):
    """The three autoencoders and the consistency classifier C (eqs. 7-8)."""

    def __init__(self, in_dims: dict[str, int], spec: EncoderSpec, decoder_layers: int):
        super().__init__()
        self.spec = spec
        self.encoders = nn.ModuleDict({m: ModalityEncoder(in_dims[m], spec, m) for m in MODS})
        self.decoders = nn.ModuleDict({m: ModalityDecoder(in_dims[m], spec, decoder_layers, m) for m in MODS})
        d = spec.dim
        self.classifier = nn.Sequential(nn.Linear(3 * d, d), nn.ReLU(), nn.Linear(d, 1))

    def forward(self, inputs: Inputs) -> dict:
        """inputs (as `encoder_inputs` gives them) -> hidden {m: (B, L, d)}, recon {m: (B, L, D_m)}, logit (B,)."""
        hidden = {m: self.encoders[m](*inputs[m]) for m in MODS}
        recon = {m: self.decoders[m](hidden[m], inputs[m][1]) for m in MODS}
        pooled = torch.cat([masked_mean(hidden[m], inputs[m][1]) for m in MODS], dim=-1)  # F^tamper (B, 3d), eq. 7
        return {"hidden": hidden, "recon": recon, "logit": self.classifier(pooled).squeeze(-1)}  # eq. 8


def tamper(inputs: Inputs, p: float, generator: torch.Generator) -> tuple[Inputs, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 6: each sample is tampered with probability p: one modality, chosen uniformly, is replaced by the
    same modality of another sample of the batch (with its mask).

    -> (tampered inputs, y^tamper (B,) float in {0, 1}, modality index (B,) into MODS or -1, donor row (B,)).
    """
    x0 = inputs[MODS[0]][0]
    B, device = x0.size(0), x0.device
    rows = torch.arange(B)
    if B < 2:  # nothing to swap with
        return dict(inputs), torch.zeros(B, device=device), torch.full((B,), -1, dtype=torch.long, device=device), rows.to(device)
    tampered = torch.rand(B, generator=generator) < p
    which = torch.randint(0, len(MODS), (B,), generator=generator)
    donor = (rows + torch.randint(1, B, (B,), generator=generator)) % B  # never the sample itself
    out = {}
    for k, m in enumerate(MODS):
        src = torch.where(tampered & (which == k), donor, rows).to(device)
        x, mask = inputs[m]
        out[m] = (x[src], mask[src])
    which = torch.where(tampered, which, torch.full_like(which, -1))
    return out, tampered.float().to(device), which.to(device), donor.to(device)


def reconstruction_loss(recon: dict[str, torch.Tensor], inputs: Inputs) -> torch.Tensor:
    """Eq. 5 summed over modalities: mean squared error over real positions and features."""
    total = 0.0
    for m in MODS:
        x, mask = inputs[m]
        w = mask.unsqueeze(-1).to(x.dtype)
        total = total + (((recon[m] - x) ** 2) * w).sum() / (w.sum() * x.size(-1)).clamp_min(1.0)
    return total


def consistency_loss(logit: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 9: binary cross-entropy of P(tampered) = sigmoid(logit)."""
    return F.binary_cross_entropy_with_logits(logit, y)
