"""Tiny Hugging Face model folders for the offline end-to-end tests (not collected): the builders of
msarepro.presetcheck.localmodels at tiny sizes, with deliberately unusual processor constants:

    deberta_v3_folder  like microsoft/deberta-v3-base: a sentencepiece unigram model `spm.model` (no tokenizer.json,
                       so loading it converts the sentencepiece model, as the real one does) with DeBERTa-v3's
                       special tokens [PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3, [MASK], and a DebertaV2Model with v3's
                       architecture switches (relative attention, position buckets, p2c|c2p, shared attention key,
                       layer-normed relative embeddings) at a tiny width
    clip_folder        like openai/clip-vit-base-patch32: a byte-level BPE CLIP tokenizer (vocab.json + merges.txt
                       with "</w>" word ends, <|startoftext|>, <|endoftext|>), a tiny CLIPModel, and a
                       CLIPImageProcessor with a small crop and a deliberately unusual image_mean / image_std
                       (`CLIP_MEAN`, `CLIP_STD`), so that code using OpenAI's constants gives different pixels
    resnet_folder      like microsoft/resnet-50: a tiny ResNetModel and its image processor config (unusual
                       mean / std too)

Every folder loads with HF_HUB_OFFLINE=1 through AutoTokenizer / AutoModel / AutoImageProcessor.
"""
from __future__ import annotations

from pathlib import Path

from msarepro.presetcheck import localmodels
from msarepro.presetcheck.localmodels import WORDS, bytes_to_unicode, corpus, learn_clip_bpe  # noqa: F401

DEBERTA_SPECIALS = localmodels.DEBERTA_SPECIALS
CLIP_MEAN = (0.25, 0.6, 0.85)  # deliberately far from OpenAI's (0.481, 0.458, 0.408)
CLIP_STD = (0.1, 0.35, 0.05)  # and from (0.269, 0.261, 0.276)
CLIP_SIDE = 32  # the processor's crop and the vision tower's image_size
RESNET_MEAN = (0.7, 0.2, 0.5)
RESNET_STD = (0.15, 0.4, 0.08)


def deberta_v3_folder(folder: str | Path, vocab_size: int = 300, hidden: int = 32, layers: int = 2,
                      heads: int = 4, seed: int = 0) -> Path:
    return localmodels.deberta_v3_folder(folder, vocab_size=vocab_size, hidden=hidden, layers=layers, heads=heads,
                                         seed=seed)


def clip_folder(folder: str | Path, n_merges: int = 120, hidden: int = 32, projection: int = 16,
                seed: int = 0) -> Path:
    return localmodels.clip_folder(folder, CLIP_MEAN, CLIP_STD, side=CLIP_SIDE, n_merges=n_merges,
                                   text_hidden=hidden, vision_hidden=hidden, projection=projection, seed=seed)


def resnet_folder(folder: str | Path, seed: int = 0) -> Path:
    """A ResNet folder like microsoft/resnet-50's (ResNetModel + ConvNext-style image processor), two small stages."""
    return localmodels.resnet_folder(folder, RESNET_MEAN, RESNET_STD, seed=seed)


def build_all(root: str | Path) -> dict[str, Path]:
    """The three folders under root: {"deberta": ..., "clip": ..., "resnet": ...}. Folder names carry the model
    family ("deberta-v3-...", "clip-...") as the Hugging Face names do."""
    root = Path(root)
    return {"deberta": deberta_v3_folder(root / "tiny-deberta-v3"), "clip": clip_folder(root / "tiny-clip-vit"),
            "resnet": resnet_folder(root / "tiny-resnet")}
