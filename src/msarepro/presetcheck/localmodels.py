"""Small Hugging Face model folders built locally in seconds (no network), laid out like the real ones, so that
code which loads `microsoft/deberta-v3-base`, `openai/clip-vit-base-patch32` or `microsoft/resnet-50` through
AutoTokenizer / AutoModel / AutoImageProcessor can run offline (`msarepro check-presets`, the tests):

    deberta_v3_folder  like microsoft/deberta-v3-base: a sentencepiece unigram model `spm.model` (no tokenizer.json,
                       so loading it converts the sentencepiece model, as the real one does) with DeBERTa-v3's
                       special tokens [PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3, [MASK], and a DebertaV2Model with v3's
                       architecture switches (relative attention, position buckets, p2c|c2p, shared attention key,
                       layer-normed relative embeddings) at the width, depth and head count asked for
    clip_folder        like openai/clip-vit-base-patch32: a byte-level BPE CLIP tokenizer (vocab.json + merges.txt
                       with "</w>" word ends, <|startoftext|>, <|endoftext|>), a CLIPModel and a CLIPImageProcessor
                       with the crop, mean and std asked for
    resnet_folder      like microsoft/resnet-50: a ResNetModel of the stages asked for and its image processor
                       config (ConvNext-style, as the real one's)

The weights are random (seeded): these folders stand in for the real models' architecture family, tokenizer
layout and processor, never for their learned weights. Every folder loads with HF_HUB_OFFLINE=1.
"""
from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

# The words of the tests' fixture texts and a few more, so both tokenizers have real pieces.
WORDS = ("happy sunny day great fun love smile beach friends party good nice bright warm joy "
         "sad rain grey cold alone tired bored angry lost broken bad awful dark fear calm quiet "
         "tweet post photo image picture the a of and with at on in my our this today is so very "
         "cat dog city street coffee morning night sea sky tree park train music game food team").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Deterministic sentences over WORDS (with some punctuation and digits)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(3, 12))
        words = [WORDS[j] for j in rng.integers(0, len(WORDS), k)]
        out.append(" ".join(words) + (f" #{i % 10}" if i % 3 == 0 else "") + ("!" if i % 4 == 0 else "."))
    return out


# ---------------------------------------------------------------------------------------------- DeBERTa-v3

DEBERTA_SPECIALS = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3}  # as in deberta-v3-base's spm.model


def deberta_v3_folder(folder: str | Path, vocab_size: int = 300, hidden: int = 32, layers: int = 2,
                      heads: int = 4, intermediate: int | None = None, position_buckets: int = 256,
                      seed: int = 0) -> Path:
    """A DeBERTa-v3-style folder: spm.model, tokenizer_config.json, config.json and weights (save_pretrained)."""
    import sentencepiece as spm
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=model, model_type="unigram", vocab_size=vocab_size,
        hard_vocab_limit=False, character_coverage=1.0, num_threads=1, seed_sentencepiece_size=10000,
        pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
        unk_id=3, unk_piece="[UNK]", user_defined_symbols=["[MASK]"], split_digits=True, minloglevel=2)
    (folder / "spm.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n_pieces = sp.get_piece_size()
    # deberta-v3-base's tokenizer_config.json carries exactly these two switches; the model type in config.json
    # tells AutoTokenizer the class.
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "vocab_type": "spm"}))
    conf = DebertaV2Config(
        vocab_size=n_pieces, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate or 2 * hidden, hidden_act="gelu", max_position_embeddings=512,
        type_vocab_size=0, relative_attention=True, position_buckets=position_buckets, max_relative_positions=-1,
        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        layer_norm_eps=1e-7, pad_token_id=0)
    torch.manual_seed(seed)
    DebertaV2Model(conf).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------- CLIP

# CLIP's pre-tokenizer pattern with the standard library's classes (letters, single digits, other symbols).
CLIP_PATTERN = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+",
                          re.IGNORECASE)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def learn_clip_bpe(texts: list[str], n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small byte-level BPE in CLIP's layout: vocab = 256 byte symbols, the same with "</w>", the merges in
    order, then <|startoftext|>, <|endoftext|>. Merges: the most frequent adjacent pair, ties by the pair itself."""
    b2u = bytes_to_unicode()
    words = Counter()
    for t in texts:
        for w in CLIP_PATTERN.findall(t.lower()):
            sym = [b2u[b] for b in w.encode("utf-8")]
            sym[-1] += "</w>"
            words[tuple(sym)] += 1
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[a, b] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        new = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    symbols = list(b2u.values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {}
    for s in vocab_list:
        vocab.setdefault(s, len(vocab))
    return vocab, merges


def clip_folder(folder: str | Path, mean: tuple[float, ...], std: tuple[float, ...], side: int = 32,
                patch: int | None = None, n_merges: int = 120, text_hidden: int = 32, text_heads: int = 2,
                vision_hidden: int = 32, vision_heads: int = 2, layers: int = 1, projection: int = 16,
                seed: int = 0) -> Path:
    """A CLIP folder: vocab.json, merges.txt, tokenizer_config.json, preprocessor_config.json, config.json and
    weights of a CLIPModel (text positions 77; vision `side` x `side` in patches of `patch`, default side // 4),
    whose processor centre-crops to `side` and normalises with `mean`, `std`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = learn_clip_bpe(corpus(), n_merges)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>"}))
    conf = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=text_hidden, intermediate_size=2 * text_hidden,
                         num_hidden_layers=layers, num_attention_heads=text_heads, max_position_embeddings=77,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(image_size=side, patch_size=patch or side // 4, hidden_size=vision_hidden,
                           intermediate_size=2 * vision_hidden, num_hidden_layers=layers,
                           num_attention_heads=vision_heads),
        projection_dim=projection)
    torch.manual_seed(seed)
    CLIPModel(conf).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                       image_mean=list(mean), image_std=list(std)).save_pretrained(folder)
    return folder


# -------------------------------------------------------------------------------------------------- ResNet

def resnet_folder(folder: str | Path, mean: tuple[float, ...], std: tuple[float, ...], side: int = 32,
                  crop_pct: float = 1.0, hidden_sizes: tuple[int, ...] = (16, 32), depths: tuple[int, ...] = (1, 1),
                  embedding: int = 16, seed: int = 0) -> Path:
    """A ResNet folder like microsoft/resnet-50's (ResNetModel of basic blocks, `hidden_sizes` per stage, and a
    ConvNext-style image processor resizing to `side` with `crop_pct`, normalising with `mean`, `std`)."""
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    ResNetModel(ResNetConfig(num_channels=3, embedding_size=embedding, hidden_sizes=list(hidden_sizes),
                             depths=list(depths), layer_type="basic")).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": side}, crop_pct=crop_pct, image_mean=list(mean),
                           image_std=list(std)).save_pretrained(folder)
    return folder
