"""INFIG: integrating hierarchical fine-grained and global information with the assistance of CLIP
(anonymous EMNLP submission, docs/methods/infig.md; its base is CLMLF, Li et al. 2022).

    image (B, 3, H, W) -> ResNet grid (B, C_r, h, w) -> Linear -> [CLS; n_i = h*w tokens] + positions
                       -> N_i transformer layers                   image layers, each (B, 1 + n_i, d)
    text ids (B, L)    -> DeBERTa-v3 (N_t layers)                   text layers, each (B, L, d); position 0 = [CLS]
    GAM   (eqs. 1-2):  i_g = [i_cls ; i_clip], t_g = [t_cls ; t_clip] (B, d + P), InfoNCE against the current
                       batch's momentum keys and queues of the M most recent momentum keys, learnable tau (0.07)
    HFAM  (eqs. 3-6):  token-to-token cosine similarity, sum of the top-j per token (padding excluded),
                       S_p2q / S_q2p over all (image, text) pairs of the batch, InfoNCE, mean over the last layers
    fusion (eqs. 7-11): transformer encoder over [image tokens ; text tokens] (B, n_i + n_t, d), attention
                       pooling, GELU projection, classifier; cross-entropy
    loss  (eq. 12):    L = L_sc + lambda_g L_g + lambda_f L_f

The image transformer runs at the text encoder's width d, so image and text tokens share one space for the
cosine similarities of HFAM and the fusion encoder. The ResNet runs on the pixels, end to end (INFIG reads the
`image` array, never precomputed `image_features`). CLIP is a frozen prior; only the linear projections that
follow it learn (`clip_projection: trainable`, initialised from CLIP's own projections; `frozen` keeps CLIP's
fixed ones): they sit in the online encoders, so the momentum encoders carry their own copies for the keys.

Where the paper is silent (our choices, each a Config field): momentum 0.995 and the queue length (ALBEF/MoCo
style; the queue holds only keys already computed, no random initial entries); the positive key of eq. 1 is the
pair's momentum representation, as in MoCo; the cls and CLIP halves of i_g / t_g are each L2-normalised before
concatenation (`gam_normalize_parts`); eq. 5's denominator runs over the whole batch including the positive
(standard InfoNCE); when a text has fewer than j real tokens, the top-j sum is divided by the number it has.
Eq. 11 applies GELU to the logits as printed (`gelu_on_logits`). Mixed precision is bfloat16 autocast inside
forward on CUDA (no loss scaler needed in the shared loop). The CLIP variant (the paper names none) is ours:
openai/clip-vit-base-patch32.

Inputs (the contract with the data layer, `token_requests`): batch["text_ids"] / ["text_ids_mask"] written by the
text encoder's own tokenizer (at most `text_max_len` tokens) and, when GAM uses CLIP, batch["clip_ids"] /
["clip_ids_mask"] written by CLIP's tokenizer (for tiny-clip: the dataset's own ids). Pixels: CLIP's resolution,
mean and std come from the CLIP model's image-processor config, the ResNet's mean and std from its own; the
tiny-* encoders get processor objects built in code (`image_processor`).

Text encoders: `tiny-deberta` (a small random DeBERTa-v3 architecture over the dataset's own ids; also what
`features` means here), `tiny-bert`, `packaged-minilm`, or any Hugging Face name or local model folder (AutoModel).
Image encoders: `tiny-resnet` or any ResNet name or folder. CLIP: `tiny-clip` (random, over the dataset's own
ids) or any CLIP name or folder.

Ablations (Table 3, Figure 3): use_clip, use_gam, use_hfam, gam_layer. Figure 4: `fusion_word_attention`, drawn
by the `figures` stage (msarepro.report.figures_papers.infig_word_attention).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import sinusoidal_positions, transformer_encoder
from .image_text import (TextTower, _build_resnet, _load_pretrained, _processor_class, image_processor,  # noqa: F401
                         pixel_spec, resnet_stride)

# ----------------------------------------------------------------------------------------------------------------
# The alignment objectives as plain functions (pinned by tests/test_infig.py on hand-computed cases).

def topj_similarity(p_tok: torch.Tensor, q_tok: torch.Tensor, p_mask: torch.Tensor, q_mask: torch.Tensor,
                    j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 3-4 for every (p, q) pair of a batch.

    p_tok (Bp, n_p, d) image tokens, q_tok (Bq, n_q, d) text tokens; masks True on real positions.
    Returns S_p2q (Bp, Bq): for each real token of p, the top-j cosine similarities with the real tokens of q,
    summed and divided by j (eq. 3), averaged over p's real tokens (eq. 4: 1 / (j n_p)); and S_q2p (Bq, Bp) the
    same from the text side. A token with fewer than j candidates sums what it has and divides by that count.
    """
    a, b = F.normalize(p_tok.float(), dim=-1), F.normalize(q_tok.float(), dim=-1)
    sim = torch.einsum("pkd,qld->pqkl", a, b)  # (Bp, Bq, n_p, n_q): sigma(p_k, q_l)

    def directed(s: torch.Tensor, cand_mask: torch.Tensor, anchor_mask: torch.Tensor) -> torch.Tensor:
        # s (A, C, n_anchor, n_cand); cand_mask (C, n_cand); anchor_mask (A, n_anchor)
        s = s.masked_fill(~cand_mask[None, :, None, :], float("-inf"))
        top = s.topk(min(j, s.size(-1)), dim=-1).values  # (A, C, n_anchor, j')
        real = torch.isfinite(top)
        per_token = torch.where(real, top, torch.zeros_like(top)).sum(-1) / real.sum(-1).clamp_min(1)  # eq. 3 / j
        w = anchor_mask[:, None, :].float()  # (A, 1, n_anchor)
        return (per_token * w).sum(-1) / w.sum(-1).clamp_min(1)  # eq. 4

    s_p2q = directed(sim, q_mask, p_mask)  # (Bp, Bq)
    s_q2p = directed(sim.permute(1, 0, 3, 2), p_mask, q_mask)  # (Bq, Bp)
    return s_p2q, s_q2p


def fine_grained_loss(s_p2q: torch.Tensor, s_q2p: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Eq. 5 for one layer: L_I + L_T, InfoNCE over the batch; the pair (p, p) is the positive. -> scalar."""
    target = torch.arange(s_p2q.size(0), device=s_p2q.device)
    return F.cross_entropy(s_p2q / tau, target) + F.cross_entropy(s_q2p / tau, target)


def global_infonce(i_g: torch.Tensor, t_g: torch.Tensor, i_key: torch.Tensor, t_key: torch.Tensor,
                   queue_i: torch.Tensor, queue_t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Eqs. 1-2. i_g, t_g (B, D): online global representations; i_key, t_key (B, D): the momentum encoders'
    representations of the same pairs (positives at matching rows, negatives otherwise); queue_i, queue_t (M, D):
    earlier momentum keys, L2-normalised. sigma is cosine similarity. -> L_g = (L_i2t + L_t2i) / 2 (batch mean)."""
    i, t = F.normalize(i_g.float(), dim=-1), F.normalize(t_g.float(), dim=-1)
    all_t = torch.cat([F.normalize(t_key.float(), dim=-1), queue_t.float()])  # (B + M, D)
    all_i = torch.cat([F.normalize(i_key.float(), dim=-1), queue_i.float()])
    target = torch.arange(i.size(0), device=i.device)
    l_i2t = F.cross_entropy(i @ all_t.T / tau, target)  # eq. 1, first line
    l_t2i = F.cross_entropy(t @ all_i.T / tau, target)  # eq. 1, second line
    return 0.5 * (l_i2t + l_t2i)  # eq. 2


def fusion_sequence(i_tok: torch.Tensor, t_tok: torch.Tensor, t_mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7's input: (i_1 .. i_ni, t_1 .. t_nt). i_tok (B, n_i, d) image patches, t_tok (B, n_t, d) text tokens,
    t_mask (B, n_t) True on real text tokens -> (x (B, n_i + n_t, d), mask (B, n_i + n_t)); every patch is real."""
    x = torch.cat([i_tok, t_tok], 1)
    mask = torch.cat([torch.ones(i_tok.shape[:2], dtype=torch.bool, device=x.device), t_mask], 1)
    return x, mask


def attention_pool(f: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 8-9. f (B, n, d) the fused sequence F, scores (B, n) the attention layer's unnormalised scores, mask
    (B, n) True on real positions -> (K~ (B, d) = sum_i g_i f_i, G (B, n)), G a softmax over the real positions."""
    g = scores.float().masked_fill(~mask, float("-inf")).softmax(-1)  # eq. 8
    return (g.unsqueeze(-1) * f.float()).sum(1), g  # eq. 9


def classify(k_tilde: torch.Tensor, proj_k: nn.Linear, classifier: nn.Linear, gelu_on_logits: bool
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 10-11. k_tilde (B, d) -> (K = GELU(K~ W_K + b_K) (B, d), logits (B, C) = GELU(K W + b), or K W + b
    when `gelu_on_logits` is off); cross-entropy is taken on these logits."""
    k = F.gelu(proj_k(k_tilde))  # eq. 10
    logits = classifier(k)  # eq. 11
    return k, (F.gelu(logits) if gelu_on_logits else logits)


def weighted_terms(l_sc: torch.Tensor, l_g: torch.Tensor | None, l_f: torch.Tensor | None, lambda_g: float,
                   lambda_f: float) -> dict[str, torch.Tensor]:
    """Eq. 12, L = L_sc + lambda_g L_g + lambda_f L_f, as the loss terms the training loop sums (a module that is
    switched off passes None and has no term)."""
    terms = {"sc": l_sc}
    if l_g is not None:
        terms["global"] = lambda_g * l_g
    if l_f is not None:
        terms["fine"] = lambda_f * l_f
    return terms


@torch.no_grad()
def momentum_update(online: nn.Module, momentum_copy: nn.Module, m: float) -> None:
    """theta_m <- m theta_m + (1 - m) theta, parameter by parameter (He et al., 2020). A frozen online parameter
    (requires_grad False: a text tower with finetune_text false) never changes, so its copy is left as it is
    (bit-identical, rather than drifting by rounding in m x + (1 - m) x)."""
    for p_m, p in zip(momentum_copy.parameters(), online.parameters()):
        if p.requires_grad:
            p_m.mul_(m).add_(p.detach(), alpha=1.0 - m)


class KeyQueue(nn.Module):
    """Ring buffer of the M most recent (image, text) momentum keys, L2-normalised; only filled rows are used."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("image", torch.zeros(size, dim))
        self.register_buffer("text", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (image keys, text keys), each (filled, D), copies (safe to enqueue afterwards)."""
        n = int(self.filled)
        return self.image[:n].clone(), self.text[:n].clone()

    @torch.no_grad()
    def enqueue(self, i_key: torch.Tensor, t_key: torch.Tensor) -> None:
        size = self.image.size(0)
        i_key, t_key = F.normalize(i_key.float(), dim=-1)[-size:], F.normalize(t_key.float(), dim=-1)[-size:]
        idx = (int(self.ptr) + torch.arange(i_key.size(0), device=i_key.device)) % size
        self.image[idx] = i_key
        self.text[idx] = t_key
        self.ptr.fill_((int(self.ptr) + i_key.size(0)) % size)
        self.filled.fill_(min(int(self.filled) + i_key.size(0), size))


# ----------------------------------------------------------------------------------------------------------------
# Encoders (the ResNet, the text tower and the pixel specs are shared with CLMLF: methods/image_text.py).

class ImageEncoder(nn.Module):
    """ResNet grid features -> tokens -> [CLS; tokens] + sinusoidal positions -> N_i transformer layers."""

    def __init__(self, resnet: nn.Module, feat_dim: int, dim: int, layers: int, heads: int, dropout: float,
                 image_size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.resnet = resnet
        self.image_size = image_size
        self.proj = nn.Linear(feat_dim, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu",
                                                               batch_first=True) for _ in range(layers))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)  # the ResNet's processor
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """image (B, 3, H, W) in [0, 1] -> (per-layer outputs [(B, 1 + h*w, d)] * N_i, grid (h, w))."""
        if self.image_size and image.shape[-1] != self.image_size:
            image = F.interpolate(image, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        grid = self.resnet(pixel_values=(image - self.mean) / self.std).last_hidden_state  # (B, C_r, h, w)
        h, w = grid.shape[-2:]
        x = self.proj(grid.flatten(2).transpose(1, 2))  # (B, n_i, d)
        x = torch.cat([self.cls.expand(x.size(0), -1, -1), x], 1)  # (B, 1 + n_i, d)
        x = x + sinusoidal_positions(x.size(1), x.size(2), x.device).to(x.dtype)
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs, (h, w)


class ClipPrior(nn.Module):
    """Frozen CLIP towers: image (B, 3, H, W), clip_ids -> CLIP's pooled image and text states (B, Dv), (B, Dt),
    before any projection (INFIG projects them: `INFIG._clip_embeddings`)."""

    def __init__(self, source: str, manifest):
        super().__init__()
        from transformers import CLIPConfig, CLIPModel

        side = manifest.modalities["image"]["shape"][-1]
        if source == "tiny-clip":  # over the dataset's own ids (clip_ids holds them), at the stored image side
            spec = manifest.modalities["text_ids"]
            conf = CLIPConfig(
                text_config=dict(vocab_size=spec["vocab_size"], hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 max_position_embeddings=max(64, spec["max_len"]),
                                 pad_token_id=0, bos_token_id=1, eos_token_id=2),
                vision_config=dict(image_size=side, patch_size=max(1, side // 4), hidden_size=32,
                                   intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
                projection_dim=32)
            self.model = CLIPModel(conf)
        else:
            self.model = _load_pretrained(source, "methods.infig.clip_model", CLIPModel)
        self.image_size, mean, std, self.resize_mode = pixel_spec(image_processor(source, side))
        self.out_dim = self.model.config.projection_dim
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # a frozen prior stays in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (image pooled (B, Dv), text pooled (B, Dt)); text pooled at the last real clip_ids position (CLIP's
        end-of-text token: its text tower is causal, so that state has read the whole text)."""
        image = batch["image"]
        if image.shape[-1] != self.image_size:
            image = F.interpolate(image, size=(self.image_size, self.image_size), mode=self.resize_mode,
                                  align_corners=False if self.resize_mode != "nearest" else None)
        i_pool = self.model.vision_model(pixel_values=(image - self.mean) / self.std).pooler_output
        ids, mask = batch["clip_ids"], batch["clip_ids_mask"]
        hidden = self.model.text_model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        last = mask.long().sum(1).clamp_min(1) - 1  # the end-of-text position
        return i_pool, hidden[torch.arange(ids.size(0), device=ids.device), last]

    @torch.no_grad()
    def project(self, i_pool: torch.Tensor, t_pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP's own fixed projections (clip_projection: frozen) -> (i_clip, t_clip), each (B, P)."""
        return self.model.visual_projection(i_pool), self.model.text_projection(t_pool)


# ----------------------------------------------------------------------------------------------------------------

@register("infig")
class INFIG(Method):
    families = ("image_text",)

    @dataclass(frozen=True)
    class Config(MethodConfig):
        # Encoders (Section 4.2): DeBERTa-v3-base; ResNet-50 + 6 transformer layers. The paper names no CLIP
        # variant: ViT-B/32 is ours.
        text_encoder: str = "microsoft/deberta-v3-base"  # or tiny-deberta (= features), tiny-bert, packaged-minilm
        image_encoder: str = "microsoft/resnet-50"  # or tiny-resnet
        clip_model: str = "openai/clip-vit-base-patch32"  # or tiny-clip
        text_max_len: int = 200  # tokens per text (CLMLF's word_length); 0: the tokenizer's own limit
        finetune_text: bool = True
        image_size: int = 224  # images are resized to this before the ResNet (0: as stored)
        image_layers: int = 6  # N_i
        heads: int = 12  # image transformer and fusion heads (must divide the text width)
        tiny_dim: int = 64  # width and depth of the tiny-* text encoders
        tiny_text_layers: int = 3
        fusion_layers: int = 3  # 4 on HFM
        dropout: float = 0.1
        gelu_on_logits: bool = True  # eq. 11 as printed
        amp: bool = True  # bfloat16 autocast on CUDA
        # Global alignment module (eqs. 1-2).
        use_gam: bool = True
        use_clip: bool = True  # Table 3 "w/o CLIP": i_g = i_cls, t_g = t_cls
        clip_projection: str = "trainable"  # i_clip, t_clip "through linear projection": trainable | frozen (CLIP's)
        gam_layer: int = 1  # which layer from the end gives i_cls / t_cls (Figure 3)
        gam_normalize_parts: bool = True
        queue_size: int = 1024  # M (not given in the paper)
        momentum: float = 0.995  # not given in the paper (ALBEF's value)
        temperature: float = 0.07  # initial tau, learnable, shared by eqs. 1 and 5
        lambda_g: float = 0.3
        # Hierarchical fine-grained alignment module (eqs. 3-6).
        use_hfam: bool = True
        hfam_layers: int = 3  # last M layers of both encoders
        top_j: int = 2  # 2 on MVSA, 3 on TumEmo and HFM
        lambda_f: float = 0.2

        CLIP_PROJECTIONS = ("trainable", "frozen")

        def validate(self, where: str) -> None:
            for k in ("image_layers", "fusion_layers", "gam_layer", "hfam_layers", "top_j", "queue_size", "heads"):
                if getattr(self, k) < 1:
                    raise ConfigError(f"{where}.{k}: must be >= 1, got {getattr(self, k)}")
            if self.text_max_len < 0 or self.image_size < 0:
                raise ConfigError(f"{where}: text_max_len and image_size must be >= 0 (0: the tokenizer's limit / "
                                  f"the stored size), got {self.text_max_len} and {self.image_size}")
            if self.clip_projection not in self.CLIP_PROJECTIONS:
                raise ConfigError(f"{where}.clip_projection: {self.clip_projection!r}; expected one of "
                                  f"{', '.join(self.CLIP_PROJECTIONS)}")
            if not 0.0 <= self.momentum < 1.0:
                raise ConfigError(f"{where}.momentum: must be in [0, 1), got {self.momentum}")
            if self.temperature <= 0:
                raise ConfigError(f"{where}.temperature: must be > 0, got {self.temperature}")

    # -- what INFIG needs from a dataset (checked before any tokenizer or weight loads) ----------------------
    @classmethod
    def token_requests(cls, cfg: Config, manifest) -> list:
        """text_ids from the text encoder's tokenizer (cfg.text_max_len tokens); clip_ids from CLIP's (its own
        77-token limit) when the global alignment uses CLIP. tiny-* encoders read the dataset's own ids."""
        from ..data.tokens import TokenRequest, tokenizer_for_encoder

        requests = [TokenRequest("text_ids", tokenizer_for_encoder(cfg.text_encoder), cfg.text_max_len)]
        if cfg.use_gam and cfg.use_clip:
            requests.append(TokenRequest("clip_ids", tokenizer_for_encoder(cfg.clip_model), 0))
        return requests

    @classmethod
    def problems(cls, cfg: Config, manifest) -> list[str]:
        """The shared checks (family, arrays, tokens), then INFIG's image preconditions: one error lists them all."""
        found = super().problems(cfg, manifest)
        if manifest.family in cls.families and "image" in manifest.modalities:
            found += cls.image_problems(cfg, manifest)
        return found

    @classmethod
    def image_problems(cls, cfg: Config, manifest) -> list[str]:
        """INFIG's own preconditions on the images (one sentence each, naming the fix): pixels are stored, and the
        ResNet's last grid has whole cells (a side of at least its stride) and, with HFAM, at least top_j patches
        for each text token's top-j."""
        image = manifest.modalities.get("image")
        if image is None:
            return ["it stores no 'image' array (INFIG runs its ResNet on the pixels; image_features are not read): "
                    "import the dataset with its images (msarepro data import-imagetext)"]
        stored = int(image["shape"][-1])
        side = cfg.image_size or stored
        stride = resnet_stride(cfg.image_encoder)
        if stride is None:
            return []
        where = "the stored side (image_size: 0)" if not cfg.image_size else "image_size"
        grid = -(-side // stride)
        if side < stride:
            return [f"its images enter the ResNet ({cfg.image_encoder}) at {side} x {side} pixels ({where}), below "
                    f"one cell of its grid ({stride} pixels): set methods.infig.image_size to at least {stride} "
                    f"(224 for the paper's 7 x 7 grid)"]
        if cfg.use_hfam and grid * grid < cfg.top_j:
            return [f"the ResNet ({cfg.image_encoder}) gives a {grid} x {grid} grid at {side} pixels ({where}), "
                    f"fewer patches than top_j = {cfg.top_j}: raise methods.infig.image_size or lower top_j"]
        return []

    def frozen_modules(self) -> list[nn.Module]:
        """CLIP (its towers and its own projections; the trainable projections are not in it) and, with
        finetune_text false, the text tower and its momentum copy (momentum_update leaves frozen weights alone)."""
        modules = [self.clip.model] if getattr(self, "clip", None) is not None else []
        if not self.cfg.finetune_text:
            modules.append(self.encoders["text"])
            if hasattr(self, "momentum_encoders"):
                modules.append(self.momentum_encoders["text"])
        return modules

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        text = TextTower(cfg.text_encoder, manifest, cfg.tiny_dim, cfg.tiny_text_layers, 4, cfg.finetune_text,
                         setting="methods.infig.text_encoder")
        d = text.out_dim
        if d % cfg.heads:
            raise ConfigError(f"methods.infig.heads ({cfg.heads}) must divide the text encoder width ({d})")
        resnet, feat_dim = _build_resnet(cfg.image_encoder, "methods.infig.image_encoder")
        _, mean, std, _ = pixel_spec(image_processor(cfg.image_encoder))
        image = ImageEncoder(resnet, feat_dim, d, cfg.image_layers, cfg.heads, cfg.dropout, cfg.image_size, mean, std)
        self.encoders = nn.ModuleDict({"image": image, "text": text})
        depth = min(cfg.image_layers, text.num_layers)
        for k in ("gam_layer", "hfam_layers"):
            if getattr(cfg, k) > depth and (cfg.use_gam if k == "gam_layer" else cfg.use_hfam):
                raise ConfigError(f"methods.infig.{k} ({getattr(cfg, k)}) exceeds the encoders' depth "
                                  f"(image {cfg.image_layers}, text {text.num_layers})")
        # Fusion layers (eqs. 7-11).
        self.fusion = transformer_encoder(d, cfg.heads, cfg.fusion_layers, dropout=cfg.dropout, activation="gelu")
        self.attn_score = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))  # eq. 8's attention layer
        self.proj_k = nn.Linear(d, d)  # eq. 10: W_K, b_K
        self.classifier = nn.Linear(d, self.out_dim)  # eq. 11: W, b
        if cfg.use_gam or cfg.use_hfam:
            self.temp = nn.Parameter(torch.tensor(float(cfg.temperature)))
        if cfg.use_gam:
            self.clip = ClipPrior(cfg.clip_model, manifest) if cfg.use_clip else None
            if self.clip is not None and cfg.clip_projection == "trainable":
                # i_clip, t_clip "through linear projection after applying the CLIP model": projections that
                # learn, starting from CLIP's own (so training starts in CLIP's joint space). Online encoders,
                # so the momentum encoders below get copies.
                for key, own in (("clip_image", self.clip.model.visual_projection),
                                 ("clip_text", self.clip.model.text_projection)):
                    self.encoders[key] = copy.deepcopy(own).requires_grad_(True)
            self.momentum_encoders = copy.deepcopy(self.encoders)
            for p in self.momentum_encoders.parameters():
                p.requires_grad_(False)
            self.queue = KeyQueue(cfg.queue_size, d + (self.clip.out_dim if self.clip is not None else 0))

    # -- encoders -------------------------------------------------------------------------------------------
    def _encode(self, encoders: nn.ModuleDict, batch: dict[str, torch.Tensor]):
        image_layers, grid = encoders["image"](batch["image"])
        text_layers = encoders["text"](batch["text_ids"], batch["text_ids_mask"])
        return image_layers, text_layers, grid

    def _clip_embeddings(self, encoders: nn.ModuleDict, pooled) -> tuple[torch.Tensor, torch.Tensor]:
        """(i_clip, t_clip), each (B, P): CLIP's pooled states through the linear projections (the online or the
        momentum encoders' with clip_projection trainable; CLIP's own, fixed, with frozen)."""
        if self.cfg.clip_projection == "trainable":
            return encoders["clip_image"](pooled[0]), encoders["clip_text"](pooled[1])
        return self.clip.project(*pooled)

    def _global(self, encoders, image_layers, text_layers, clip_pooled) -> tuple[torch.Tensor, torch.Tensor]:
        """i_g, t_g (B, d [+ P]) from the [CLS] states at layer `gam_layer` from the end (and CLIP)."""
        l = self.cfg.gam_layer
        i_cls, t_cls = image_layers[-l][:, 0].float(), text_layers[-l][:, 0].float()
        if clip_pooled is None:
            return i_cls, t_cls
        i_clip, t_clip = (v.float() for v in self._clip_embeddings(encoders, clip_pooled))
        if self.cfg.gam_normalize_parts:
            i_cls, t_cls, i_clip, t_clip = (F.normalize(v, dim=-1) for v in (i_cls, t_cls, i_clip, t_clip))
        return torch.cat([i_cls, i_clip], -1), torch.cat([t_cls, t_clip], -1)

    def _fusion_input(self, image_layers, text_layers, text_mask):
        # [CLS] dropped on both sides: (B, n_i, d) patches and (B, n_t, d) text tokens
        return fusion_sequence(image_layers[-1][:, 1:], text_layers[-1][:, 1:], text_mask[:, 1:])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        use_amp = self.cfg.amp and batch["image"].is_cuda
        # amp off leaves an enclosing autocast (runtime.precision: bf16) in force rather than switching it off
        with torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext():
            image_layers, text_layers, grid = self._encode(self.encoders, batch)
            x, mask = self._fusion_input(image_layers, text_layers, batch["text_ids_mask"])
            f = self.fusion(x, src_key_padding_mask=~mask)  # eq. 7: F (B, n_i + n_t, d)
            k_tilde, _ = attention_pool(f, self.attn_score(f).squeeze(-1), mask)  # eqs. 8-9 (B, d)
            _, logits = classify(k_tilde, self.proj_k, self.classifier, self.cfg.gelu_on_logits)  # eqs. 10-11
        out = {"pred": self.head(logits.float()), "image_layers": image_layers, "text_layers": text_layers}
        if self.training and self.cfg.use_gam:
            # the frozen CLIP prior (eval mode, no gradient) reads only the clip: once per clip (Method.cached)
            clip_pooled = self.cached("clip", batch, self.clip) if self.clip is not None else None
            out["clip"] = clip_pooled
            out["i_g"], out["t_g"] = self._global(self.encoders, image_layers, text_layers, clip_pooled)
        return out

    # -- losses ---------------------------------------------------------------------------------------------
    def tau(self) -> torch.Tensor:
        return self.temp.clamp(0.001, 0.5)

    def global_alignment_loss(self, out, batch) -> torch.Tensor:
        """Eqs. 1-2 with the momentum encoders' keys (their CLIP projections too); updates the momentum encoders
        and the queues."""
        with torch.no_grad():
            momentum_update(self.encoders, self.momentum_encoders, self.cfg.momentum)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cfg.amp and batch["image"].is_cuda):
                image_m, text_m, _ = self._encode(self.momentum_encoders, batch)
            i_key, t_key = self._global(self.momentum_encoders, image_m, text_m, out["clip"])
        queue_i, queue_t = self.queue.contents()
        loss = global_infonce(out["i_g"], out["t_g"], i_key, t_key, queue_i, queue_t, self.tau())
        self.queue.enqueue(i_key, t_key)
        return loss

    def fine_grained_alignment_loss(self, out, batch) -> torch.Tensor:
        """Eq. 6: (1 / 2M) sum over the last M layers of (L_T + L_I), image patches vs real text tokens."""
        m_layers, t_mask = self.cfg.hfam_layers, batch["text_ids_mask"][:, 1:]
        total = 0.0
        for m in range(1, m_layers + 1):
            i_tok, t_tok = out["image_layers"][-m][:, 1:], out["text_layers"][-m][:, 1:]
            i_mask = torch.ones(i_tok.shape[:2], dtype=torch.bool, device=i_tok.device)
            s_p2q, s_q2p = topj_similarity(i_tok, t_tok, i_mask, t_mask, self.cfg.top_j)
            total = total + fine_grained_loss(s_p2q, s_q2p, self.tau())
        return total / (2 * m_layers)

    def losses(self, out, batch, epoch):
        l_sc = self.task_loss(out["pred"], batch["y"])  # eq. 11's cross-entropy
        l_g = self.global_alignment_loss(out, batch) if self.cfg.use_gam else None
        l_f = self.fine_grained_alignment_loss(out, batch) if self.cfg.use_hfam else None
        return weighted_terms(l_sc, l_g, l_f, self.cfg.lambda_g, self.cfg.lambda_f)  # eq. 12

    # -- Figure 4 -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def fusion_word_attention(self, batch: dict[str, torch.Tensor], word_pos: torch.Tensor) -> torch.Tensor:
        """Attention of the last fusion layer (mean over heads) from one text token to the image patches.
        word_pos (B,): the token's position in text_ids (>= 1; 0 is [CLS]) -> (B, h, w), rows sum to 1."""
        was_training = self.training
        self.eval()
        image_layers, text_layers, (h, w) = self._encode(self.encoders, batch)
        x, mask = self._fusion_input(image_layers, text_layers, batch["text_ids_mask"])
        for layer in self.fusion.layers[:-1]:
            x = layer(x, src_key_padding_mask=~mask)
        last = self.fusion.layers[-1]
        hx = last.norm1(x) if last.norm_first else x
        _, att = last.self_attn(hx, hx, hx, key_padding_mask=~mask, need_weights=True, average_attn_weights=True)
        n_i = h * w
        rows = att[torch.arange(x.size(0), device=x.device), n_i + word_pos.to(x.device) - 1]  # (B, n_i + n_t)
        patches = rows[:, :n_i]
        self.train(was_training)
        return (patches / patches.sum(-1, keepdim=True).clamp_min(1e-12)).view(-1, h, w)
