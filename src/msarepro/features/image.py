"""Image features from a Hugging Face image backbone, added to an image-text dataset as `image_features`.

`model`: a Hugging Face name (microsoft/resnet-50, google/vit-base-patch16-224, the vision tower of
openai/clip-vit-base-patch32, ...) or a local folder with an image-processor config. Output per image:
    CNN backbones (last_hidden_state (C, h, w)): [pooled; the h*w grid] -> (1 + h*w, C), e.g. ResNet-50 at 224:
        1 + 7 x 7 = 50 tokens of 2048
    transformer backbones (last_hidden_state (T, D)): as is, e.g. ViT-B/16 at 224: 197 x 768
Stored as image_features (N, T, D) float32 with image_features_lengths (N,); the uint8 `image` stays. These are
frozen features for methods or analyses that want them: no registered method reads them today. INFIG in
particular runs its own ResNet on the `image` pixels and fine-tunes it end to end. Batched; images are fed
from the stored uint8 array (already resized).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data.format import load_dataset, write_dataset
from ..runtime import progress


class ImageBackbone:
    def __init__(self, model: str, batch_size: int = 32, device: str = "cpu"):
        from transformers import AutoImageProcessor, AutoModel

        self.model_name, self.batch_size = model, batch_size
        self.processor = AutoImageProcessor.from_pretrained(model)
        m = AutoModel.from_pretrained(model)
        self.model = (m.vision_model if hasattr(m, "vision_model") else m).to(device).eval()
        self.device = device

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """images (B, 3, H, W) uint8 -> (B, T, D) float32."""
        import torch

        inputs = self.processor(images=list(images.transpose(0, 2, 3, 1)), return_tensors="pt")
        with torch.no_grad():
            out = self.model(pixel_values=inputs["pixel_values"].to(self.device))
        h = out.last_hidden_state
        if h.ndim == 4:  # (B, C, h, w): pooled token first, then the grid
            grid = h.flatten(2).transpose(1, 2)
            pooled = getattr(out, "pooler_output", None)
            pooled = grid.mean(1, keepdim=True) if pooled is None else pooled.flatten(1)[:, None, :]
            h = torch.cat([pooled, grid], 1)
        return h.float().cpu().numpy()

    def extract(self, images: np.ndarray, desc: str = "images") -> np.ndarray:
        chunks = [self(images[s:s + self.batch_size])
                  for s in progress(range(0, len(images), self.batch_size), desc,
                                    total=-(-len(images) // self.batch_size), unit="batch")]
        return np.concatenate(chunks)


def add_image_features(dataset: str | Path, out: str | Path, model: str, batch_size: int = 32, device: str = "cpu"):
    """Copy an image-text dataset to `out` with `image_features` from `model`; -> (manifest, images/s)."""
    ds = load_dataset(dataset)
    bb = ImageBackbone(model, batch_size, device)
    arrays, t0, n = {}, time.perf_counter(), 0
    for name, split in ds.splits.items():
        feats = bb.extract(split.arrays["image"], f"{name} ({model})")
        arrays[name] = {**split.arrays, "image_features": feats,
                        "image_features_lengths": np.full(len(feats), feats.shape[1], np.int64)}
        n += len(feats)
    speed = n / max(time.perf_counter() - t0, 1e-9)
    import dataclasses
    import pandas as pd
    m = ds.manifest
    mods = {**m.modalities, "image_features": {"dim": int(feats.shape[2]), "max_len": int(feats.shape[1]),
                                               "model": model}}
    man = dataclasses.replace(m, modalities=mods, files={},
                              provenance={**m.provenance, "image_features": {"model": model}})
    labels = pd.concat([s.labels for s in ds.splits.values()], ignore_index=True)
    return write_dataset(out, man, arrays, labels), speed
