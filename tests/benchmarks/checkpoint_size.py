"""Checkpoint size of INFIG at the real preset's architecture, with and without the frozen modules' tensors.

    python tests/benchmarks/checkpoint_size.py [--preset mvsa-single] [--frozen-text] [--out checkpoint_size.json]

Builds INFIG as params.yaml's `methods.infig` block resolves for the preset (DeBERTa-v3-base, ResNet-50 and
6 image transformer layers, CLIP ViT-B/32, fusion layers, momentum encoders and queues) with RANDOM weights from
the three models' configurations written out below (nothing is downloaded; sizes do not depend on the values),
gives Adam one step's state over the trainable parameters (exp_avg, exp_avg_sq, step: what a checkpoint after
the first step holds), and serialises {model state, optimizer state} with torch.save:
    before   everything
    after    the tensors of `INFIG.frozen_modules()` left out (what checkpoints keep: frozen weights come from
             outside and never change; momentum encoders and queues stay)
The bytes are counted by a write-only stream rather than kept in a BytesIO (the same count without holding
several GB twice). A few minutes and about 6 GB of memory on a CPU; not part of the default test run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from unittest import mock

import torch

# Values of each model's config.json on the Hugging Face Hub (the sizes follow from these alone).
DEBERTA_V3_BASE = dict(  # microsoft/deberta-v3-base, config.json
    model_type="deberta-v2", vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512, type_vocab_size=0,
    relative_attention=True, position_buckets=256, max_relative_positions=-1, norm_rel_ebd="layer_norm",
    share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, layer_norm_eps=1e-7)
RESNET_50 = dict(  # microsoft/resnet-50, config.json
    model_type="resnet", num_channels=3, embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
    layer_type="bottleneck", hidden_act="relu", downsample_in_first_stage=False)
CLIP_VIT_B32 = dict(  # openai/clip-vit-base-patch32, config.json
    projection_dim=512,
    text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu"),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, hidden_act="quick_gelu"))


def _config(source: str):
    from transformers import CLIPConfig, DebertaV2Config, ResNetConfig

    if "deberta-v3-base" in source:
        return DebertaV2Config(**{k: v for k, v in DEBERTA_V3_BASE.items() if k != "model_type"})
    if "resnet-50" in source:
        return ResNetConfig(**{k: v for k, v in RESNET_50.items() if k != "model_type"})
    if "clip-vit-base-patch32" in source:
        return CLIPConfig(**CLIP_VIT_B32)
    sys.exit(f"checkpoint_size.py: no written-out config for {source!r}; the preset must use deberta-v3-base, "
             "resnet-50 and clip-vit-base-patch32")


def _from_config(source: str, key: str, model_class=None):
    """Stands in for infig._load_pretrained: the architecture from its config, random weights."""
    from transformers import AutoModel

    conf = _config(source)
    return model_class(conf) if model_class is not None else AutoModel.from_config(conf)


def _processor(source: str, side: int = 0):
    """Stands in for infig.image_processor: processors built here (their values do not change any size)."""
    from msarepro.methods.infig import _processor_class
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if "clip" in source:
        return _processor_class("CLIPImageProcessor")()  # transformers' defaults: CLIP's 224 crop
    return _processor_class("ConvNextImageProcessor")(image_mean=list(IMAGENET_DEFAULT_MEAN),
                                                      image_std=list(IMAGENET_DEFAULT_STD))


class _CountingStream:
    """A write-only stream that keeps only the number of bytes written (torch.save's output size)."""

    def __init__(self):
        self.n = 0

    def write(self, b) -> int:
        n = memoryview(b).nbytes
        self.n += n
        return n

    def flush(self) -> None:
        pass


def serialized_bytes(obj) -> int:
    stream = _CountingStream()
    torch.save(obj, stream)
    return stream.n


def _tensor_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))


def measure(preset: str, params_path: str, frozen_text: bool = False) -> dict:
    from msarepro import config
    from msarepro.data.format import Manifest
    from msarepro.methods import image_text, infig, method_config

    params = config.load(params_path)
    cfg = method_config(params, "infig", preset)
    if frozen_text:
        cfg = dataclasses.replace(cfg, finetune_text=False)
    manifest = Manifest(name=f"{preset} (architecture only)", family="image_text", task="classification",
                        metric_family="cls", label_range=(0.0, 2.0), splits={}, num_classes=3, preset=preset,
                        modalities={"image": {"shape": [3, 224, 224]}})
    t0 = time.perf_counter()
    torch.manual_seed(0)
    # the ResNet and text tower are built in methods/image_text.py, CLIP in infig.py: patch both
    with mock.patch.object(infig, "_load_pretrained", _from_config), mock.patch.object(infig, "image_processor",
                                                                                      _processor), \
            mock.patch.object(image_text, "_load_pretrained", _from_config), \
            mock.patch.object(image_text, "image_processor", _processor):
        model = infig.INFIG(cfg, manifest)
    build_s = time.perf_counter() - t0
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=cfg.lr)
    for p in trainable:  # the state Adam holds after its first step
        opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    model_state, opt_state = model.state_dict(), opt.state_dict()

    frozen = model.frozen_modules()
    frozen_ids = {id(t) for m in frozen for t in list(m.parameters()) + list(m.buffers())}
    kept_state = {k: v for k, v in model.state_dict(keep_vars=True).items() if id(v) not in frozen_ids}
    kept_state = {k: model_state[k] for k in kept_state}
    left_out = [k for k in model_state if k not in kept_state]

    t1 = time.perf_counter()
    before = serialized_bytes({"model": model_state, "optimizer": opt_state})
    after = serialized_bytes({"model": kept_state, "optimizer": opt_state})
    save_s = time.perf_counter() - t1

    def part(prefix: str) -> int:
        return _tensor_bytes({k: v for k, v in model_state.items() if k.startswith(prefix)})

    n_params = sum(p.numel() for p in model.parameters())
    return {
        "preset": preset,
        "architecture": {"text_encoder": cfg.text_encoder, "image_encoder": cfg.image_encoder,
                         "clip_model": cfg.clip_model, "image_layers": cfg.image_layers,
                         "fusion_layers": cfg.fusion_layers, "queue_size": cfg.queue_size,
                         "clip_projection": cfg.clip_projection, "finetune_text": cfg.finetune_text},
        "parameters": n_params,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "frozen_modules": [type(m).__name__ for m in frozen],
        "model_state_tensors": len(model_state),
        "left_out_tensors": len(left_out),
        "bytes": {
            "before": before,
            "after": after,
            "saved": before - after,
            "model_state_before": serialized_bytes(model_state),
            "model_state_after": serialized_bytes(kept_state),
            "optimizer_state": serialized_bytes(opt_state),
            "of_which_clip": part("clip."),
            "of_which_momentum_encoders": part("momentum_encoders."),
            "of_which_queue": part("queue."),
        },
        "seconds": {"build": round(build_s, 1), "serialise": round(save_s, 1)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mvsa-single", help="a methods.infig preset with the paper's encoders")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--frozen-text", action="store_true", help="finetune_text: false (the text tower is frozen too)")
    ap.add_argument("--out", default="", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    result = measure(args.preset, args.params, args.frozen_text)
    b = result["bytes"]
    mib = 1024 ** 2
    print(f"INFIG ({args.preset}): {result['parameters'] / 1e6:.1f} M parameters, "
          f"{result['trainable_parameters'] / 1e6:.1f} M trainable; frozen modules: {result['frozen_modules']}")
    print(f"checkpoint (model + Adam state): before {b['before'] / mib:.1f} MiB, after {b['after'] / mib:.1f} MiB "
          f"({b['saved'] / mib:.1f} MiB = {100 * b['saved'] / b['before']:.1f}% left out)")
    print(f"  model state {b['model_state_before'] / mib:.1f} -> {b['model_state_after'] / mib:.1f} MiB; "
          f"Adam state {b['optimizer_state'] / mib:.1f} MiB; CLIP {b['of_which_clip'] / mib:.1f} MiB, momentum "
          f"encoders {b['of_which_momentum_encoders'] / mib:.1f} MiB (kept), queue {b['of_which_queue'] / mib:.1f} MiB")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
