"""The per-modality encoder of AE-MT (Feng et al. 2024, eqs. 1-2): what the `aemt` method fine-tunes and what
`msarepro pretrain` (pretrain/autoencoder.py) pretrains inside its autoencoders. Not a method itself.

Per modality m in {text, audio, vision} (B = batch, L = sequence length, D_m = input width, d = model width):
    X_m (B, L, D_m) --average pooling to `pool_len` positions (section 4.2.1; optional)
        --Conv1D, kernel k_m (eq. 1)--> F_m (B, L, d) --E_m (eq. 2)--> H_m (B, L, d)
E_m is a transformer stack (Table 2) or an LSTM (Table 5, "w/o TR"); the transformer gets sinusoidal positions
added to F_m (the paper does not say how E_m learns order).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .blocks import sinusoidal_positions, transformer_encoder

MODS = ("text", "audio", "vision")
Inputs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (sequence (B, L, D), mask (B, L))


@dataclass(frozen=True)
class EncoderSpec:
    """The architecture of one modality encoder; stored with pretrained weights and checked when loading."""
    dim: int  # d
    heads: int
    layers: int  # encoder layers (Table 2: 3)
    kernel: int  # k_m, odd (length is kept)
    arch: str  # "transformer" | "lstm" (Table 5, w/o TR)
    dropout: float
    pool_len: int  # common length every modality is average-pooled to (section 4.2.1); 0 = not pooled

    def as_dict(self) -> dict:
        return asdict(self)


def average_pool(x: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool each sample's real positions to `length` bins (section 4.2.1).

    x: (B, L, D), mask: (B, L) right-padded -> ((B, length, D), (B, length) all True). Bin j of a sample with
    n real positions averages positions [floor(j n / length), ceil((j + 1) n / length)), as adaptive average
    pooling does, so a sample's result does not depend on the other samples in its batch.
    """
    n = mask.long().sum(1).clamp_min(1)[:, None]  # (B, 1)
    j = torch.arange(length, device=x.device)[None, :]  # (1, P)
    start = (j * n) // length  # (B, P)
    end = ((j + 1) * n + length - 1) // length
    pos = torch.arange(x.size(1), device=x.device)[None, None, :]  # (1, 1, L)
    w = ((pos >= start[..., None]) & (pos < end[..., None])).to(x.dtype)  # (B, P, L)
    w = w / w.sum(-1, keepdim=True)
    return w @ x, torch.ones(x.size(0), length, dtype=torch.bool, device=x.device)


def pool_inputs(inputs: Inputs, length: int) -> Inputs:
    """`average_pool` every modality to `length` positions; length <= 0 leaves the inputs as they are."""
    if length <= 0:
        return inputs
    return {m: average_pool(x, mask, length) for m, (x, mask) in inputs.items()}


def same_conv1d(in_dim: int, out_dim: int, kernel: int) -> nn.Conv1d:
    """Conv1D that keeps the sequence length (odd kernel, symmetric padding): eq. 1 and eq. 4."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"Conv1D kernel k_m must be odd and positive (the sequence length is kept); got {kernel}")
    return nn.Conv1d(in_dim, out_dim, kernel, padding=(kernel - 1) // 2)


def conv_seq(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    return conv(x.transpose(1, 2)).transpose(1, 2)  # (B, L, Din) -> (B, L, Dout)


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run `lstm` over each sample's real positions only: (B, L, D) -> (B, L, D_out), zeros at padding."""
    lengths = mask.long().sum(1).clamp_min(1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0]


class ModalityEncoder(nn.Module):
    """Eqs. 1-2: X_m (B, L, D_m) -> H_m (B, L, d)."""

    def __init__(self, in_dim: int, spec: EncoderSpec):
        super().__init__()
        self.in_dim, self.spec = in_dim, spec
        self.conv = same_conv1d(in_dim, spec.dim, spec.kernel)  # eq. 1
        if spec.arch == "transformer":
            self.body = transformer_encoder(spec.dim, spec.heads, spec.layers, dropout=spec.dropout)
        elif spec.arch == "lstm":
            self.body = nn.LSTM(spec.dim, spec.dim, spec.layers, batch_first=True,
                                dropout=spec.dropout if spec.layers > 1 else 0.0)
        else:
            raise ValueError(f"encoder architecture {spec.arch!r}: expected 'transformer' or 'lstm'")

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f = conv_seq(self.conv, x)  # F_m (B, L, d), eq. 1
        if self.spec.arch == "lstm":
            return run_lstm(self.body, f, mask)  # eq. 2 with an LSTM
        f = f + sinusoidal_positions(f.size(1), f.size(2), f.device)
        return self.body(f, src_key_padding_mask=~mask)  # H_m, eq. 2
