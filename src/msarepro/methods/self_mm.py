"""Self-MM: Self-Supervised Multi-Task Learning (Yu, Xu, Yuan, Wu, AAAI 2021), a baseline of the papers' main tables.
One multimodal task on the human label y_m and three unimodal tasks on labels the model generates itself (the
Unimodal Label Generation Module, ULGM). Settings per dataset: params.yaml; docs/methods/self_mm.md.

Shapes: B batch, L_m sequence length, D_m input width, N the train split's size.
    text:  a BERT-family encoder (`text_encoder`), the first token's last-layer state (B, D_t) as MMSA's Self-MM
           reads it; with precomputed features (`text_encoder: features`) an LSTM like audio's and vision's
    audio, vision: sLSTM, one unidirectional LSTM over the real frames; its final state, dropout, Linear -> (B, o_m)
    heads (paper, "Multi-task"): for s in {m (fusion), t, a, v}, on the concatenation [t; a; v] for m and on the
        modality's vector otherwise: dropout, Linear + ReLU -> F_s (B, d_s), the representation ULGM reads, then
        Linear + ReLU, Linear -> y_hat_s (B,)
    ULGM (paper, "ULGM"), on the stored F_s (N, d_s) of every train sample:
        class centres  C_s^p, C_s^n: the mean F_s over the samples whose label of that task (y_m for the fusion
              head, the generated y_s for a modality) is > 0 / < 0                                `class_centres`
        alpha_s = (D_s^n - D_s^p) / (D_s^p + eps), D_s^{p,n} = ||F_s - C_s^{p,n}||_2             `relative_distance`
        y_s = y_m + delta_sm, delta_sm = (alpha_s - alpha_m)(y_m + alpha_m) / (2 alpha_m): the mean of the ratio
              rule y_m alpha_s / alpha_m and the difference rule y_m + alpha_s - alpha_m, clipped to [-H, H]
                                                                                                  `unimodal_labels`
        momentum update at epoch n >= `label_start` (n counted from 1):
              y_s <- (n-1)/(n+1) y_s + 2/(n+1) y_s^new                                             `momentum_update`
    loss (paper, "Optimization Objectives"):
        L = mean |y_hat_m - y_m| + sum_s mean( tanh(|y_s - y_m|) |y_hat_s - y_s| )               `weighted_l1`
    Order within a training step (MMSA's Self-MM trainer): the loss reads the labels as they are, then, with the
    batch's F_s detached, the labels are updated (from epoch `label_start` on) against the centres of the stored
    representations, the batch's F_s are stored and the centres recomputed.
The labels (N,) per modality are buffers (kept in checkpoints, so a resumed run goes on from them) and are written
after every epoch to the run's epochs/method_NNN.npz (`epoch_artifacts`), with the train ids in row order.
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
from .blocks import Dropout
from .text_encoder import TextEncoder

UNI = ("text", "audio", "vision")
EPS = 1e-8  # MMSA's MIN in the ULGM distances


def class_centres(features: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """features (N, d), labels y (N,) -> (C^p, C^n) each (d,): the mean representation of the positive (y > 0) and
    of the negative (y < 0) samples; zeros where a class has no sample (neutral samples join neither)."""
    out = []
    for sel in (y > 0, y < 0):
        w = sel.to(features.dtype)
        out.append((w[:, None] * features).sum(0) / w.sum().clamp_min(1.0))
    return out[0], out[1]


def relative_distance(f: torch.Tensor, c_pos: torch.Tensor, c_neg: torch.Tensor) -> torch.Tensor:
    """alpha = (D^n - D^p) / (D^p + eps) for f (B, d) against the centres (d,): > 0 nearer the positive centre."""
    d_p = (f - c_pos).norm(dim=-1)
    d_n = (f - c_neg).norm(dim=-1)
    return (d_n - d_p) / (d_p + EPS)


def unimodal_labels(y_m: torch.Tensor, alpha_s: torch.Tensor, alpha_m: torch.Tensor, bound: float) -> torch.Tensor:
    """y_s = 0.5 (y_m alpha_s / alpha_m) + 0.5 (y_m + alpha_s - alpha_m), clipped to [-bound, bound] (B,)."""
    ratio = y_m * alpha_s / (alpha_m + EPS)
    shift = y_m + alpha_s - alpha_m
    return (0.5 * ratio + 0.5 * shift).clamp(-bound, bound)


def momentum_update(old: torch.Tensor, new: torch.Tensor, n: int) -> torch.Tensor:
    """The paper's momentum-based update policy at epoch n (from 1): (n-1)/(n+1) old + 2/(n+1) new."""
    return (n - 1) / (n + 1) * old + 2 / (n + 1) * new


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean over the batch of weight * |pred - target| (B,) -> ()."""
    return (weight * (pred - target).abs()).mean()


class SeqLSTM(nn.Module):
    """(B, L, D), mask (B, L) -> (B, out): one unidirectional LSTM over the real positions, its final hidden state,
    dropout, a Linear (MMSA's AuViSubNet)."""

    def __init__(self, in_dim: int, width: int, out_dim: int, dropout: float):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, width, batch_first=True)
        self.drop = Dropout(dropout)
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.long().sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(packed)  # h (1, B, width)
        return self.out(self.drop(h[0]))


class Head(nn.Module):
    """in (B, D) -> (F_s (B, d), y_hat_s (B, 1)): dropout, Linear + ReLU (F_s), Linear + ReLU, Linear."""

    def __init__(self, in_dim: int, d: int, dropout: float, out_dim: int = 1):
        super().__init__()
        self.drop = Dropout(dropout)
        self.layer1, self.layer2, self.layer3 = nn.Linear(in_dim, d), nn.Linear(d, d), nn.Linear(d, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = F.relu(self.layer1(self.drop(x)))
        return feat, self.layer3(F.relu(self.layer2(feat)))


@register("self_mm")
class SelfMM(Method):
    @dataclass(frozen=True)
    class Config(MethodConfig):
        # Defaults: MMSA's MOSI settings (config_regression.json, "self_mm"); params.yaml carries them per dataset.
        text_encoder: str = "features"  # features (an LSTM over them) | tiny-bert | HF name (bert-base-uncased)
        finetune: bool = True  # fine-tune the text encoder (MMSA use_finetune)
        text_rnn_hidden: int = 64  # with text features: the text LSTM's width; its output is `text_out` wide
        text_out: int = 64  # with text features: the text vector's width (with BERT: BERT's width)
        audio_rnn_hidden: int = 16  # a_lstm_hidden_size
        vision_rnn_hidden: int = 32  # v_lstm_hidden_size
        audio_out: int = 16
        vision_out: int = 32  # video_out
        rnn_dropout: float = 0.0  # a_lstm_dropout / v_lstm_dropout, on the LSTM's final state
        fusion_dim: int = 128  # post_fusion_dim
        text_dim: int = 32  # post_text_dim
        audio_dim: int = 16  # post_audio_dim
        vision_dim: int = 32  # post_video_dim
        fusion_dropout: float = 0.0  # post_fusion_dropout
        text_dropout: float = 0.1  # post_text_dropout
        audio_dropout: float = 0.1  # post_audio_dropout
        vision_dropout: float = 0.0  # post_video_dropout
        label_bound: float = 3.0  # H: generated labels are clipped to [-H, H] (MOSI/MOSEI 3, CH-SIMS 1)
        label_start: int = 2  # the first epoch (counted from 1) whose steps update the unimodal labels
        unimodal_weight: float = 1.0  # scales the three unimodal terms (1: the paper's loss)
        lr_text: float = 0.0  # learning rate of the text encoder (0: `lr`), MMSA learning_rate_bert
        lr_audio: float = 0.0  # of the audio LSTM (0: `lr`)
        lr_vision: float = 0.0  # of the vision LSTM (0: `lr`)
        weight_decay_text: float = -1.0  # (-1: `weight_decay`), MMSA weight_decay_bert
        weight_decay_audio: float = -1.0
        weight_decay_vision: float = -1.0

        def validate(self, where: str) -> None:
            super().validate(where)
            sizes = ("text_rnn_hidden", "text_out", "audio_rnn_hidden", "vision_rnn_hidden", "audio_out",
                     "vision_out", "fusion_dim", "text_dim", "audio_dim", "vision_dim", "label_start")
            for key in sizes:
                if getattr(self, key) < 1:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected >= 1")
            for key in ("rnn_dropout", "fusion_dropout", "text_dropout", "audio_dropout", "vision_dropout"):
                if not 0.0 <= getattr(self, key) < 1.0:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected a rate in [0, 1)")
            if self.label_bound <= 0 or self.unimodal_weight < 0:
                raise ConfigError(f"{where}: label_bound must be > 0 and unimodal_weight >= 0 "
                                  f"(got {self.label_bound}, {self.unimodal_weight})")
            for key in ("lr_text", "lr_audio", "lr_vision"):
                if getattr(self, key) < 0:
                    raise ConfigError(f"{where}.{key}: {getattr(self, key)}; expected a rate >= 0 (0: lr)")

    @classmethod
    def problems(cls, cfg: Config, manifest) -> list[str]:
        out = super().problems(cfg, manifest)
        if manifest.family == "trimodal" and manifest.task != "regression":
            out.append(f"Self-MM generates unimodal labels from a sentiment score; dataset {manifest.name!r} is "
                       f"{manifest.task} (use a regression dataset)")
        return out

    def __init__(self, cfg: Config, manifest):
        super().__init__(cfg, manifest)
        mods = manifest.modalities
        self.text = TextEncoder(cfg.text_encoder, manifest, finetune=cfg.finetune)
        self.rnn = nn.ModuleDict()
        widths = {}
        if self.text.model is None:
            self.rnn["text"] = SeqLSTM(mods["text"]["dim"], cfg.text_rnn_hidden, cfg.text_out, 0.0)
            widths["text"] = cfg.text_out
        else:
            widths["text"] = self.text.out_dim
        for m, width, out in (("audio", cfg.audio_rnn_hidden, cfg.audio_out),
                              ("vision", cfg.vision_rnn_hidden, cfg.vision_out)):
            self.rnn[m] = SeqLSTM(mods[m]["dim"], width, out, cfg.rnn_dropout)
            widths[m] = out
        self.heads = nn.ModuleDict({
            "fusion": Head(sum(widths.values()), cfg.fusion_dim, cfg.fusion_dropout),
            "text": Head(widths["text"], cfg.text_dim, cfg.text_dropout),
            "audio": Head(widths["audio"], cfg.audio_dim, cfg.audio_dropout),
            "vision": Head(widths["vision"], cfg.vision_dim, cfg.vision_dropout)})
        n = int(manifest.splits["train"])
        dims = {"fusion": cfg.fusion_dim, "text": cfg.text_dim, "audio": cfg.audio_dim, "vision": cfg.vision_dim}
        # ULGM's state over the train split, row i = the split's i-th sample (batch["index"])
        self.register_buffer("label_m", torch.zeros(n))  # y_m
        self.register_buffer("labels_ready", torch.zeros((), dtype=torch.bool))
        for s, d in dims.items():
            self.register_buffer(f"feat_{s}", torch.zeros(n, d))  # the stored F_s
            self.register_buffer(f"centre_pos_{s}", torch.zeros(d))
            self.register_buffer(f"centre_neg_{s}", torch.zeros(d))
        for m in UNI:
            self.register_buffer(f"label_{m}", torch.zeros(n))  # y_s
        self._train_ids: list[str] = []

    def param_groups(self):
        cfg = self.cfg
        own = {"text": list(self.text.parameters()) + (list(self.rnn["text"].parameters()) if "text" in self.rnn
                                                        else []),
               "audio": list(self.rnn["audio"].parameters()), "vision": list(self.rnn["vision"].parameters())}
        seen = {id(p) for ps in own.values() for p in ps}
        groups = []
        for m, ps in own.items():
            ps = [p for p in ps if p.requires_grad]
            if ps:
                lr, wd = getattr(cfg, f"lr_{m}") or cfg.lr, getattr(cfg, f"weight_decay_{m}")
                groups.append({"params": ps, "lr": lr, "weight_decay": cfg.weight_decay if wd < 0 else wd})
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        groups.append({"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay})
        return groups

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        vec = {}
        if self.text.model is not None:
            seq, _ = self.text(batch)  # (B, L, D_t)
            vec["text"] = seq[:, 0]  # the first ([CLS]) token
        else:
            vec["text"] = self.rnn["text"](batch["text"], batch["text_mask"])
        for m in ("audio", "vision"):
            vec[m] = self.rnn[m](batch[m], batch[f"{m}_mask"])
        out = {}
        inputs = {"fusion": torch.cat([vec[m] for m in UNI], dim=-1), **vec}
        for s, x in inputs.items():
            out[f"feat_{s}"], pred = self.heads[s](x)
            out["pred" if s == "fusion" else f"pred_{s}"] = self.head(pred)
        return out

    # -- ULGM ------------------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, train_split) -> None:
        self._train_ids = list(train_split.ids)
        if not bool(self.labels_ready):  # first epoch of a fresh run: every label starts as y_m
            y = train_split.tensors["y"].to(self.label_m.device, self.label_m.dtype)
            self.label_m.copy_(y)
            for m in UNI:
                getattr(self, f"label_{m}").copy_(y)
            self.labels_ready.fill_(True)

    @torch.no_grad()
    def ulgm_step(self, out: dict[str, torch.Tensor], idx: torch.Tensor, epoch: int) -> None:
        """One batch's ULGM work (after the loss read the labels): update y_s of the batch's samples (from epoch
        `label_start` on), store their F_s, recompute the centres."""
        n = epoch + 1
        feats = {s: out[f"feat_{s}"].detach().float() for s in ("fusion", *UNI)}
        if n >= self.cfg.label_start:
            y_m = self.label_m[idx]
            alpha_m = relative_distance(feats["fusion"], self.centre_pos_fusion, self.centre_neg_fusion)
            for m in UNI:
                alpha_s = relative_distance(feats[m], getattr(self, f"centre_pos_{m}"),
                                            getattr(self, f"centre_neg_{m}"))
                new = unimodal_labels(y_m, alpha_s, alpha_m, self.cfg.label_bound)
                label = getattr(self, f"label_{m}")
                label[idx] = momentum_update(label[idx], new, n)
        for s, f in feats.items():
            stored = getattr(self, f"feat_{s}")
            stored[idx] = f
            pos, neg = class_centres(stored, self.label_m if s == "fusion" else getattr(self, f"label_{s}"))
            getattr(self, f"centre_pos_{s}").copy_(pos)
            getattr(self, f"centre_neg_{s}").copy_(neg)

    def losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        y_m, idx = batch["y"], batch["index"]
        terms = {"task": F.l1_loss(out["pred"], y_m)}
        for m in UNI:
            y_s = getattr(self, f"label_{m}")[idx]
            weight = torch.tanh((y_s - self.label_m[idx]).abs())
            terms[m] = self.cfg.unimodal_weight * weighted_l1(out[f"pred_{m}"], y_s, weight)
        if self.training:
            self.ulgm_step(out, idx, epoch)
        return terms

    def epoch_artifacts(self, epoch: int) -> dict[str, np.ndarray]:
        """The generated labels after this epoch's steps, rows in the train split's order (ids)."""
        arts = {"ids": np.asarray(self._train_ids, dtype=str), "y_m": self.label_m.cpu().numpy()}
        for m in UNI:
            arts[f"y_{m}"] = getattr(self, f"label_{m}").cpu().numpy()
        return arts
