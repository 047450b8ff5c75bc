"""The pretrained encoders the real presets name: their architectures as facts, whether their weights are here,
what stands in for them offline, and the parameter count of a model built with the real ones.

`REAL` holds, per Hugging Face name a preset uses, the fields of that model's config.json (and of its
preprocessor_config.json for image models) that fix its architecture, copied from the model's page on the Hub
(the file named in `source`; the Hub cannot be reached from here, so they are written down as facts). With them
a model of the real architecture is built without its weights (`real_folder`: config files only; the weights
are randomly initialised when loaded), which is how `check-presets` counts a model's parameters with the real
encoder and checks that a preset's sizes fit the real widths (e.g. heads dividing 768).

Stand-ins (`substitute`), used for the training steps when the named weights are not available offline:
    bert (bert-base-uncased, bert-base-chinese, ...)  the packaged MiniLM (`packaged-minilm`: a BertModel, 6 layers,
                       384 wide, bert-base-uncased's WordPiece vocabulary). It reads the ids the dataset carries
                       for the real tokenizer, at their real length (bert-base-chinese's ids are < 21128, inside
                       MiniLM's vocabulary of 30522; they then name other pieces, which changes no shape)
    deberta-v2 (microsoft/deberta-v3-base)  a DeBERTa-v3 folder built here (`localmodels`): sentencepiece
                       tokenizer, v3's attention switches, the real head count at 8 dimensions per head,
                       min(real depth, 4) layers
    clip (openai/clip-vit-base-patch32)  a CLIP folder built here: byte-level BPE tokenizer, 1 layer per tower at the
                       real head counts (8 dimensions per head), the real image side, patch size and projection
                       width, the real processor's crop, mean and std
    resnet (microsoft/resnet-50)  a ResNet folder built here: four stages of one basic block (16-128 channels), so
                       the last grid has the real stride (32: 7 x 7 at 224), the real processor's resize, crop,
                       mean and std
A stand-in times and trains like a small model of the same family; the parameter counts `check-presets` reports
beside it come from the real architecture.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

HUB = "https://huggingface.co/{}/blob/main/{}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_BERT_BASE = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512,
              "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}

# name -> {"config": config.json's architecture fields, "processor": preprocessor_config.json (image models),
#          "source": where the fields were copied from}
REAL: dict[str, dict] = {
    "bert-base-uncased": {"config": {**_BERT_BASE, "vocab_size": 30522},
                          "source": HUB.format("google-bert/bert-base-uncased", "config.json")},
    "bert-base-chinese": {"config": {**_BERT_BASE, "vocab_size": 21128},
                          "source": HUB.format("google-bert/bert-base-chinese", "config.json")},
    "microsoft/deberta-v3-base": {
        "config": {"model_type": "deberta-v2", "hidden_size": 768, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
                   "max_position_embeddings": 512, "vocab_size": 128100, "type_vocab_size": 0,
                   "relative_attention": True, "position_buckets": 256, "max_relative_positions": -1,
                   "norm_rel_ebd": "layer_norm", "share_att_key": True, "pos_att_type": "p2c|c2p",
                   "position_biased_input": False, "layer_norm_eps": 1e-7, "pad_token_id": 0},
        "source": HUB.format("microsoft/deberta-v3-base", "config.json")},
    "openai/clip-vit-base-patch32": {
        "config": {"model_type": "clip", "projection_dim": 512, "logit_scale_init_value": 2.6592,
                   "text_config": {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
                                   "num_hidden_layers": 12, "num_attention_heads": 8,
                                   "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                                   "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1},
                   "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                                     "num_attention_heads": 12, "image_size": 224, "patch_size": 32,
                                     "hidden_act": "quick_gelu"}},
        "processor": {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 224},
                      "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_normalize": True,
                      "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD), "resample": 3},
        "source": HUB.format("openai/clip-vit-base-patch32", "config.json") + ", preprocessor_config.json"},
    "microsoft/resnet-50": {
        "config": {"model_type": "resnet", "num_channels": 3, "embedding_size": 64,
                   "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3], "layer_type": "bottleneck",
                   "hidden_act": "relu", "downsample_in_first_stage": False},
        "processor": {"image_processor_type": "ConvNextImageProcessor", "do_resize": True,
                      "size": {"shortest_edge": 224}, "crop_pct": 0.875, "do_normalize": True,
                      "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD), "resample": 3},
        "source": HUB.format("microsoft/resnet-50", "config.json") + ", preprocessor_config.json"},
}
# The Config fields of a method that name a pretrained model (methods/text_encoder.py, methods/infig.py).
ENCODER_FIELDS = ("text_encoder", "image_encoder", "clip_model")
BUILTIN = ("features", "tiny-bert", "tiny-deberta", "tiny-clip", "tiny-resnet", "packaged-minilm")


def available(name: str) -> bool:
    """True when `name`'s weights load here without a network: a local model folder, or a Hugging Face name whose
    config and weights are in the local cache."""
    if name in BUILTIN or Path(name).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return False
    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        return False
    return any(isinstance(try_to_load_from_cache(name, f), str)
               for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"))


def _heads_width(n_heads: int) -> int:
    return 8 * n_heads  # the real head count, 8 dimensions per head


def substitute(name: str, root: Path) -> str:
    """The stand-in for `name` (see the module docstring): "packaged-minilm" or a folder built under `root` (once;
    reused when present). KeyError for a name without facts in REAL."""
    from . import localmodels

    facts = REAL[name]
    conf, kind = facts["config"], facts["config"]["model_type"]
    if kind == "bert":
        return "packaged-minilm"
    folder = Path(root) / ("standin-" + name.replace("/", "--"))
    if (folder / "config.json").is_file():
        return str(folder)
    tmp = folder.with_name(folder.name + ".partial")
    if kind == "deberta-v2":
        heads = conf["num_attention_heads"]
        localmodels.deberta_v3_folder(tmp, hidden=_heads_width(heads), heads=heads,
                                      layers=min(conf["num_hidden_layers"], 4),
                                      position_buckets=conf["position_buckets"])
    elif kind == "clip":
        t, v, proc = conf["text_config"], conf["vision_config"], facts["processor"]
        localmodels.clip_folder(tmp, proc["image_mean"], proc["image_std"], side=v["image_size"],
                                patch=v["patch_size"], text_hidden=_heads_width(t["num_attention_heads"]),
                                text_heads=t["num_attention_heads"],
                                vision_hidden=_heads_width(v["num_attention_heads"]),
                                vision_heads=v["num_attention_heads"], projection=conf["projection_dim"])
    elif kind == "resnet":
        proc = facts["processor"]
        localmodels.resnet_folder(tmp, proc["image_mean"], proc["image_std"], side=proc["size"]["shortest_edge"],
                                  crop_pct=proc["crop_pct"], hidden_sizes=(16, 32, 64, 128), depths=(1, 1, 1, 1))
    else:  # pragma: no cover - REAL holds only the kinds above
        raise KeyError(name)
    tmp.rename(folder)
    return str(folder)


def real_folder(name: str, root: Path) -> str:
    """A folder holding `name`'s real config.json (and preprocessor_config.json) and an empty weights file: loading
    it builds the real architecture with randomly initialised weights (for counting, never for training)."""
    from safetensors.torch import save_file

    facts = REAL[name]
    folder = Path(root) / ("real-" + name.replace("/", "--"))
    if (folder / "model.safetensors").is_file():
        return str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(facts["config"], indent=1))
    if "processor" in facts:
        (folder / "preprocessor_config.json").write_text(json.dumps(facts["processor"], indent=1))
    save_file({}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return str(folder)


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings (weights initialised from nothing, processor back-ends) and progress bars off inside
    the block: building stand-ins and counting real architectures says nothing a user must act on."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def pretrained_modules(model) -> list:
    """The outermost Hugging Face models inside `model` (PreTrainedModel instances not nested in another one)."""
    from transformers import PreTrainedModel

    out, inside = [], set()
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, PreTrainedModel):
            out.append(m)
            inside.add(name)
    return out


def reference_count(name: str) -> int:
    """Parameters of `name`'s real architecture as its model class builds it from its config alone (BertModel with
    its pooler, DebertaV2Model, CLIPModel, ResNetModel): the number a model card quotes."""
    import torch
    from transformers import AutoConfig, AutoModel

    conf = AutoConfig.for_model(**REAL[name]["config"])
    with torch.device("meta"):
        return count(AutoModel.from_config(conf))
