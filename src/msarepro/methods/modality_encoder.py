"""The per-modality encoder of AE-MT (Feng et al. 2024, eqs. 1-2): what the `aemt` method fine-tunes and what
`msarepro pretrain` (pretrain/autoencoder.py) pretrains inside its autoencoders. Not a method itself.

Per modality m in {text, audio, vision} (B = batch, L = sequence length, D_m = input width, d = model width):
    text: the vector of the first word (section 3.2.1, `text_input: first_word`) -> (B, 1, D_t), or the whole
        token sequence (`text_input: sequence`)
    X_m (B, L, D_m) --average pooling to `pool_len` positions (section 4.2.1; optional; a first-word text stays
        one position)--> --Conv1D, kernel k_m (eq. 1)--> F_m (B, L, d) --E_m (eq. 2)--> H_m (B, L, d)
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


TEXT_INPUTS = ("first_word", "sequence")


@dataclass(frozen=True)
class EncoderSpec:
    """The architecture of the modality encoders; stored with pretrained weights and checked when loading."""
    dim: int  # d
    heads: int
    layers: int  # encoder layers (Table 2: 3)
    kernel_text: int  # k_m of eq. 1 per modality, odd (length is kept)
    kernel_audio: int
    kernel_vision: int
    arch: str  # "transformer" | "lstm" (Table 5, w/o TR)
    dropout: float
    pool_len: int  # common length every modality is average-pooled to (section 4.2.1); 0 = not pooled
    text_input: str = "first_word"  # first_word (section 3.2.1) | sequence (every token)

    def kernel(self, modality: str) -> int:
        return getattr(self, f"kernel_{modality}")

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


def encoder_inputs(inputs: Inputs, spec: EncoderSpec) -> Inputs:
    """What the encoders read, in pretraining and fine-tuning alike. text_input "first_word": the text is its
    first position only (B, 1, D_t), "the vector of the first word as the whole sentence embedding" (section
    3.2.1; BERT's [CLS] in MMSA's features) and is not pooled; the other modalities (and a "sequence" text) are
    average-pooled to `pool_len` (section 4.2.1)."""
    if spec.text_input not in TEXT_INPUTS:
        raise ValueError(f"text_input {spec.text_input!r}: expected one of {', '.join(TEXT_INPUTS)}")
    if spec.text_input == "sequence":
        return pool_inputs(inputs, spec.pool_len)
    x, mask = inputs["text"]
    out = pool_inputs({m: v for m, v in inputs.items() if m != "text"}, spec.pool_len)
    return {"text": (x[:, :1], torch.ones_like(mask[:, :1])), **out}


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

    def __init__(self, in_dim: int, spec: EncoderSpec, modality: str):
        super().__init__()
        self.in_dim, self.spec = in_dim, spec
        self.conv = same_conv1d(in_dim, spec.dim, spec.kernel(modality))  # eq. 1, kernel k_m
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
