"""CLMLF: contrastive learning and multi-layer fusion for image-text sentiment (Li et al., Findings of NAACL 2022;
docs/methods/clmlf.md). The base INFIG builds on. Facts below come from the authors' code (github.com/Link-Li/CLMLF,
model.py, data_process.py, train_process.py, main.py and train-*.sh); the paper itself is not in this repository.

    text ids (B, L)    -> BERT (last layer) (B, L, d_t) -> Linear + GELU            text tokens  (B, L, d)
    image (B, 3, H, W) -> ResNet-50 grid (B, C_r, h, w) -> Linear + GELU on each cell, and on the cell mean
                          (the ResNet's average pool) as an image [CLS]: [cls; cells] (B, 1 + h*w, d)
                       -> N_i transformer layers                                       image tokens (B, 1 + h*w, d)
    multi-layer fusion: N_f transformer layers over [text tokens; image tokens] (B, L + 1 + h*w, d), text padding
                        masked; attention pooling (Linear d -> d/2, GELU, Linear -> 1, softmax over real positions)
                        -> h (B, d)
    classifier:         Dropout, Linear d -> d/2, GELU, Linear -> C; cross-entropy              L_sc
    LBCL:               z = g(h) (g: Linear, GELU, Linear, d -> d); for every anchor i and every j of the batch with
                        y_j = y_i (i itself included): -log softmax_j'(z_i . z_j') [j] / tau, averaged over all
                        such (i, j) pairs of the batch (`lbcl_loss`)                            L_lbcl
    DBCL:               the same model on an augmented copy of the batch -> h'; z' = g'(h') (a second head);
                        cross-entropy of (z_i . z'_j / tau)_j with target j = i (`dbcl_loss`)    L_dbcl
    loss:               L = L_sc + lambda_lbcl L_lbcl + lambda_dbcl L_dbcl   (train_process.py: weights 1 and 1)

As in the authors' code: dot products of the projected features, not cosines; the LBCL temperature divides the
log-probabilities (log_softmax(z z^T) / tau), not the logits; no position embeddings are added to the image tokens
or the fused sequence (the text tokens carry BERT's); the ResNet is fixed (`-fixed_image_model` in every script)
and, with `text_frozen_epochs: K`, the text encoder learns only from epoch K on (train_process.py gives it lr 0 for
its first `train_fuse_model_epoch` = 20 epochs): two training stages of the shared loop.

Deviations (docs/methods/clmlf.md): the authors' augmented text is a back-translation (a JSON shipped with their
data) and their images pass RandAugment(2, 14); offline and without torchvision, the augmented copy here drops a
random `text_drop_rate` of each text's inner tokens through the attention mask and takes a random resized crop
(side fraction in [crop_scale, 1]) with a horizontal flip (probability flip_p) of the stored image, in plain torch.
Their training originals pass the same random augmentation; ours are left as stored. Their grid is read with
`.view(B, -1, C)` on a (B, C, h, w) tensor, which mixes channels and cells; here each cell is one token. A frozen
ResNet stays in eval mode (their BatchNorm layers ran in train mode).

Inputs: batch["image"] (B, 3, H, W) in [0, 1]; batch["text_ids"], batch["text_ids_mask"] in the text encoder's
tokenizer (`token_requests`, at most text_max_len tokens: the authors' word_length). Text encoders as INFIG's
(methods/image_text.py): tiny-bert, tiny-deberta (the dataset's own ids), packaged-minilm or any Hugging Face name
or folder; image encoders tiny-resnet or any ResNet name or folder.

Ablations (the paper's rows without LBCL / without DBCL): use_lbcl, use_dbcl.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, MethodConfig
from . import register
from .base import Method
from .blocks import transformer_encoder
from .image_text import TextTower, _build_resnet, image_processor, pixel_spec, resnet_stride

# ----------------------------------------------------------------------------------------------------------------
# The two contrastive objectives (pinned by tests/test_clmlf.py on hand-computed cases).

def lbcl_loss(z: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """Label-based contrastive loss, as in the authors' CLModel.forward. z (B, D) projected features, y (B,) class
    ids -> scalar: -(1 / (tau |P|)) sum over P = {(i, j): y_j = y_i} (i = j included) of log softmax_j(z_i . z_j),
    the softmax over the whole batch row (self included)."""
    logp = torch.log_softmax(z.float() @ z.float().T, dim=-1)  # (B, B)
    positive = y[:, None] == y[None, :]  # (B, B), diagonal True
    return -(logp[positive] / tau).sum() / positive.sum()


def dbcl_loss(z: torch.Tensor, z_aug: torch.Tensor, tau: float) -> torch.Tensor:
    """Data-based contrastive loss: z (B, D) the originals' projections, z_aug (B, D) their augmented copies'
    (a second head) -> cross-entropy of the rows of z z_aug^T / tau with target i for row i (batch mean)."""
    logits = z.float() @ z_aug.float().T / tau  # (B, B)
    return F.cross_entropy(logits, torch.arange(z.size(0), device=z.device))


# ----------------------------------------------------------------------------------------------------------------
# The offline augmentation of the data-based positive (our stand-in for back-translation and RandAugment).

def drop_tokens(mask: torch.Tensor, rate: float) -> torch.Tensor:
    """mask (B, L) True on real tokens -> a copy with each inner real token (neither the first, [CLS], nor the
    last real one, [SEP]) switched off with probability `rate`."""
    if rate <= 0:
        return mask
    pos = torch.arange(mask.size(1), device=mask.device)
    last = mask.long().sum(1, keepdim=True) - 1  # (B, 1)
    inner = mask & (pos[None] > 0) & (pos[None] < last)
    drop = torch.rand(mask.shape, device=mask.device) < rate
    return mask & ~(inner & drop)


def augment_images(image: torch.Tensor, crop_scale: float, flip_p: float) -> torch.Tensor:
    """image (B, 3, H, W) -> (B, 3, H, W): per image a random square crop of side s * min(H, W), s ~ U(crop_scale,
    1), at a random place, resized back (bilinear), then flipped left-right with probability flip_p."""
    b, _, h, w = image.shape
    scales = crop_scale + (1.0 - crop_scale) * torch.rand(b)
    corner = torch.rand(b, 2)
    flips = torch.rand(b) < flip_p
    out = []
    for k in range(b):
        side = max(1, int(round(float(scales[k]) * min(h, w))))
        top, left = int(float(corner[k, 0]) * (h - side + 1)), int(float(corner[k, 1]) * (w - side + 1))
        crop = image[k:k + 1, :, top:top + side, left:left + side]
        crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False) if side != h or side != w \
            else crop
        out.append(crop.flip(-1) if flips[k] else crop)
    return torch.cat(out)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


@register("clmlf")
class CLMLF(Method):
    families = ("image_text",)

    @dataclass(frozen=True)
    class Config(MethodConfig):
        text_encoder: str = "bert-base-uncased"  # or tiny-bert, tiny-deberta, packaged-minilm, any name or folder
        image_encoder: str = "microsoft/resnet-50"  # or tiny-resnet
        text_max_len: int = 200  # the authors' word_length; 0: the tokenizer's own limit
        finetune_text: bool = True
        text_frozen_epochs: int = 0  # K: the text encoder learns from epoch K on (authors: 20); 0: from the start
        finetune_image: bool = False  # the authors' -fixed_image_model
        image_size: int = 224  # images are resized to this before the ResNet (0: as stored)
        dim: int = 768  # tran_dim
        heads: int = 12  # tran_dim // 64
        image_layers: int = 2  # image_num_layers
        fusion_layers: int = 3  # tran_num_layers
        dropout: float = 0.1
        tiny_dim: int = 64  # width and depth of the tiny-* text encoders
        tiny_text_layers: int = 2
        # Contrastive tasks.
        use_lbcl: bool = True
        use_dbcl: bool = True
        temperature: float = 0.07
        lambda_lbcl: float = 1.0  # cl_self_loss_alpha
        lambda_dbcl: float = 1.0  # cl_loss_alpha
        # The augmented copy (ours; the authors back-translate the text and RandAugment the image).
        text_drop_rate: float = 0.15
        crop_scale: float = 0.6
        flip_p: float = 0.5

        def validate(self, where: str) -> None:
            super().validate(where)
            for k in ("dim", "heads", "image_layers", "fusion_layers"):
                if getattr(self, k) < 1:
                    raise ConfigError(f"{where}.{k}: must be >= 1, got {getattr(self, k)}")
            if self.dim % self.heads or self.dim % 2:
                raise ConfigError(f"{where}: heads ({self.heads}) must divide dim ({self.dim}), and dim be even")
            if self.text_max_len < 0 or self.image_size < 0 or self.text_frozen_epochs < 0:
                raise ConfigError(f"{where}: text_max_len, image_size and text_frozen_epochs must be >= 0, got "
                                  f"{self.text_max_len}, {self.image_size}, {self.text_frozen_epochs}")
            if self.temperature <= 0:
                raise ConfigError(f"{where}.temperature: must be > 0, got {self.temperature}")
            if not (0.0 <= self.text_drop_rate < 1.0 and 0.0 < self.crop_scale <= 1.0 and 0.0 <= self.flip_p <= 1.0):
                raise ConfigError(f"{where}: text_drop_rate must be in [0, 1), crop_scale in (0, 1], flip_p in [0, 1]; "
                                  f"got {self.text_drop_rate}, {self.crop_scale}, {self.flip_p}")

    # -- what CLMLF needs from a dataset ------------------------------------------------------------------------
    @classmethod
    def token_requests(cls, cfg: Config, manifest) -> list:
        from ..data.tokens import TokenRequest, tokenizer_for_encoder

        return [TokenRequest("text_ids", tokenizer_for_encoder(cfg.text_encoder), cfg.text_max_len)]

    @classmethod
    def problems(cls, cfg: Config, manifest) -> list[str]:
        """The shared checks, then: the images enter the ResNet at no less than one cell of its grid."""
        found = super().problems(cfg, manifest)
        image = manifest.modalities.get("image") if manifest.family in cls.families else None
        stride = resnet_stride(cfg.image_encoder) if image is not None else None
        side = (cfg.image_size or int(image["shape"][-1])) if image is not None else 0
        if stride is not None and side < stride:
            found.append(f"its images enter the ResNet ({cfg.image_encoder}) at {side} x {side} pixels, below one "
                         f"cell of its grid ({stride} pixels): set methods.clmlf.image_size to at least {stride} "
                         "(224 for ResNet-50's 7 x 7 grid)")
        return found

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        d = cfg.dim
        self.text = TextTower(cfg.text_encoder, manifest, cfg.tiny_dim, cfg.tiny_text_layers, 4, cfg.finetune_text,
                              setting="methods.clmlf.text_encoder")
        self.resnet, feat_dim = _build_resnet(cfg.image_encoder, "methods.clmlf.image_encoder")
        if not cfg.finetune_image:
            self.resnet.requires_grad_(False)
        _, mean, std, _ = pixel_spec(image_processor(cfg.image_encoder))
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.text_change = nn.Sequential(nn.Linear(self.text.out_dim, d), nn.GELU())
        self.image_change = nn.Sequential(nn.Linear(feat_dim, d), nn.GELU())
        self.image_cls_change = nn.Sequential(nn.Linear(feat_dim, d), nn.GELU())
        # RobertaEncoder layers in the authors' code: post-norm, GELU, feed-forward 4 d
        self.image_encoder = transformer_encoder(d, cfg.heads, cfg.image_layers, dropout=cfg.dropout,
                                                 activation="gelu", norm_first=False)
        self.fusion = transformer_encoder(d, cfg.heads, cfg.fusion_layers, dropout=cfg.dropout, activation="gelu",
                                          norm_first=False)
        self.attention = _mlp(d, d // 2, 1)  # fuse_type att
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout), _mlp(d, d // 2, self.out_dim))
        self.proj = _mlp(d, d, d)  # orgin_linear_change
        self.proj_aug = _mlp(d, d, d)  # augment_linear_change
        self.stage = 1 if cfg.text_frozen_epochs == 0 else 0

    def frozen_modules(self) -> list[nn.Module]:
        return [self.resnet] if not self.cfg.finetune_image else []

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.cfg.finetune_image:
            self.resnet.eval()  # fixed weights and fixed BatchNorm statistics
        return self

    # -- training stages (the authors' first train_fuse_model_epoch epochs leave the text encoder at lr 0) --------
    def stage_starts(self) -> tuple[int, ...]:
        k = self.cfg.text_frozen_epochs
        return (0, k) if 0 < k < self.cfg.max_epochs and self.cfg.finetune_text else (0,)

    def enter_stage(self, stage: int) -> None:
        # one stage: the text encoder learns throughout with K = 0, never when K >= max_epochs
        self.stage = stage if len(self.stage_starts()) > 1 else int(self.cfg.text_frozen_epochs == 0)

    def param_groups(self):
        text = {id(p) for p in self.text.parameters()}
        keep = [p for p in self.parameters() if p.requires_grad and (self.stage == 1 or id(p) not in text)]
        return [{"params": keep}]

    # -- model ----------------------------------------------------------------------------------------------
    def fuse(self, image: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) in [0, 1], ids / mask (B, L) -> the pooled fused representation h (B, d)."""
        t = self.text_change(self.text(ids, mask)[-1])  # (B, L, d)
        if self.cfg.image_size and image.shape[-1] != self.cfg.image_size:
            image = F.interpolate(image, size=(self.cfg.image_size,) * 2, mode="bilinear", align_corners=False)
        grid = self.resnet(pixel_values=(image - self.pixel_mean) / self.pixel_std).last_hidden_state  # (B, C, h, w)
        cells = grid.flatten(2).transpose(1, 2)  # (B, h*w, C)
        v = torch.cat([self.image_cls_change(cells.mean(1, keepdim=True)), self.image_change(cells)], 1)
        v = self.image_encoder(v)  # (B, 1 + h*w, d)
        x = torch.cat([t, v], 1)  # (B, L + 1 + h*w, d)
        real = torch.cat([mask.bool(), torch.ones(v.shape[:2], dtype=torch.bool, device=v.device)], 1)
        f = self.fusion(x, src_key_padding_mask=~real)
        g = self.attention(f).squeeze(-1).masked_fill(~real, float("-inf")).softmax(-1)  # (B, L + 1 + h*w)
        return (g.unsqueeze(-1) * f).sum(1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.fuse(batch["image"], batch["text_ids"], batch["text_ids_mask"])
        out = {"pred": self.head(self.classifier(h)), "h": h}
        if self.training and self.cfg.use_dbcl:
            image_aug = augment_images(batch["image"], self.cfg.crop_scale, self.cfg.flip_p)
            mask_aug = drop_tokens(batch["text_ids_mask"].bool(), self.cfg.text_drop_rate)
            out["h_aug"] = self.fuse(image_aug, batch["text_ids"], mask_aug)
        return out

    def losses(self, out, batch, epoch):
        terms = {"sc": self.task_loss(out["pred"], batch["y"])}
        if self.cfg.use_lbcl or self.cfg.use_dbcl:  # training only: the loop calls losses on training batches
            z = self.proj(out["h"])
            if self.cfg.use_lbcl:
                terms["lbcl"] = self.cfg.lambda_lbcl * lbcl_loss(z, batch["y"], self.cfg.temperature)
            if self.cfg.use_dbcl:
                terms["dbcl"] = self.cfg.lambda_dbcl * dbcl_loss(z, self.proj_aug(out["h_aug"]), self.cfg.temperature)
        return terms
