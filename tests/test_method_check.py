"""Method.check, for every registered method: it passes on the embedded dataset of each family the method handles,
and refuses (one ConfigError, one line, naming the problem) a dataset of another family, one without an array the
model reads, one without the token ids its text encoder needs; it runs before any weights load."""
from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

from msarepro.config import ConfigError
from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import all_methods, build_method, get_method, method_config

FAMILY_DATASET = {"trimodal": "synth-mosi", "image_text": "synth-mvsa"}
CASES = [(m, f) for m, cls in sorted(all_methods().items()) for f in cls.families]
OTHER_FAMILY = [(m, f) for m, cls in sorted(all_methods().items()) for f in FAMILY_DATASET if f not in cls.families]
TEXT_ENCODER_METHODS = sorted(m for m, cls in all_methods().items()
                              if "text_encoder" in {f.name for f in fields(cls.Config)} and "trimodal" in cls.families)
# What each method reads from the embedded data of a family as configured there, token ids aside (pinned by hand:
# the completeness test below proves every other modality can go).
READS = {"trimodal": {"text", "audio", "vision"}, "image_text": {"image"}}
READS_EXCEPT = {("text_only", "trimodal"): {"text"}, ("text_only", "image_text"): set(),
                ("mag_bert", "trimodal"): {"audio", "vision"}}  # its BERT reads token ids, never the text features


def token_module():
    from msarepro.data import tokens
    return tokens


def _case(method, family, small_data, params, **changes):
    ds = load_dataset(small_data[FAMILY_DATASET[family]])
    cls = get_method(method)
    cfg = replace(method_config(params, method, ds.manifest.preset), **changes)
    if cls.text_source(cfg, ds.manifest) != "features":
        token_module()  # the check asks the token module whether the ids can be had
    return cls, cfg, ds


@pytest.mark.parametrize("method,family", CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_check_passes_on_the_embedded_data_it_handles(method, family, small_data, params):
    cls, cfg, ds = _case(method, family, small_data, params)
    assert cls.problems(cfg, ds.manifest) == []
    cls.check(cfg, ds.manifest)


@pytest.mark.parametrize("method,family", OTHER_FAMILY, ids=[f"{m}-{f}" for m, f in OTHER_FAMILY])
def test_check_refuses_another_family(method, family, small_data, params):
    ds = load_dataset(small_data[FAMILY_DATASET[family]])
    cls = get_method(method)
    cfg = method_config(params, method, ds.manifest.preset)
    with pytest.raises(ConfigError) as e:
        cls.check(cfg, ds.manifest)
    msg = str(e.value)
    assert msg.startswith(f"methods.{method} cannot run on dataset {ds.manifest.name!r}: it handles "
                          f"{'/'.join(cls.families)} datasets, and {ds.manifest.name!r} is {family}")
    assert "\n" not in msg


@pytest.mark.parametrize("method,family", CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_check_refuses_exactly_the_missing_arrays_the_model_reads(method, family, small_data, params):
    """Each modality of the embedded data (token ids aside) taken away in turn: the check refuses it, naming it, or
    the model builds and predicts without it. The refused ones are the pinned READS."""
    cls, cfg, ds = _case(method, family, small_data, params)
    m = ds.manifest
    batch = to_tensors(ds)["train"].batch(torch.arange(8))
    refused = set()
    for mod in sorted(set(m.modalities) - {"text_ids"}):
        without = replace(m, modalities={k: v for k, v in m.modalities.items() if k != mod})
        found = cls.problems(cfg, without)
        if found:
            refused.add(mod)
            with pytest.raises(ConfigError, match=rf"the model reads {mod}, which the dataset does not carry"):
                cls.check(cfg, without)
            continue
        torch.manual_seed(0)
        model = cls(cfg, without).eval()
        with torch.no_grad():
            pred = model({k: v for k, v in batch.items() if k not in (mod, f"{mod}_mask")})["pred"]
        assert torch.isfinite(pred).all()
    assert refused == READS_EXCEPT.get((method, family), READS[family])


def test_check_collects_every_problem_in_one_line(small_data, params):
    """CLGSI with an MSE loss on a classification dataset without audio: three problems, one ConfigError."""
    m = load_dataset(small_data["synth-mosi"]).manifest
    bad = replace(m, task="classification", num_classes=3, metric_family="cls",
                  modalities={k: v for k, v in m.modalities.items() if k != "audio"})
    cfg = replace(method_config(params, "clgsi", m.preset), task_loss="mse")
    with pytest.raises(ConfigError) as e:
        build_method("clgsi", cfg, bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.count("; ") >= 2
    assert msg.startswith("methods.clgsi cannot run on dataset 'synth-mosi': ")
    for part in ("methods.clgsi.task_loss: 'mse' does not fit dataset 'synth-mosi' (classification)",
                 "the model reads audio, which the dataset does not carry",
                 "clgsi predicts sentiment intensity, and dataset 'synth-mosi' is classification"):
        assert part in msg


@pytest.mark.parametrize("method", TEXT_ENCODER_METHODS)
def test_a_text_encoder_without_token_ids_is_refused(method, small_data, params):
    """Every trimodal method with a text encoder, on the embedded data stripped of its token ids (precomputed
    features only): refused naming methods.<m>.text_encoder."""
    m = load_dataset(small_data["synth-mosi"]).manifest
    features_only = replace(m, modalities={k: v for k, v in m.modalities.items() if k != "text_ids"})
    cfg = replace(method_config(params, method, m.preset), text_encoder="tiny-bert")
    with pytest.raises(ConfigError, match=rf"methods\.{method}\.text_encoder: 'tiny-bert' reads token ids, but "
                                          "dataset 'synth-mosi' has none"):
        get_method(method).check(cfg, features_only)


@pytest.mark.parametrize("method", TEXT_ENCODER_METHODS)
def test_token_a_text_encoder_reads_token_ids_not_text_features(method, small_data, params):
    """token: with a text encoder, the precomputed text features are not required (and not read)."""
    cls, cfg, ds = _case(method, "trimodal", small_data, params, text_encoder="tiny-bert")
    m = ds.manifest
    assert "text" not in cls.required_modalities(cfg, m)
    without = replace(m, modalities={k: v for k, v in m.modalities.items() if k != "text"})
    cls.check(cfg, without)
    torch.manual_seed(0)
    model = cls(cfg, without).eval()
    batch = to_tensors(ds)["train"].batch(torch.arange(8))
    with torch.no_grad():
        assert torch.isfinite(model({k: v for k, v in batch.items() if k not in ("text", "text_mask")})["pred"]).all()


@pytest.mark.parametrize("method", sorted(m for m, cls in all_methods().items() if "image_text" in cls.families))
def test_token_image_text_without_token_ids_or_raw_text_is_refused(method, small_data, params):
    """token: an image-text method on data that carries neither token ids nor raw text."""
    cls, cfg, ds = _case(method, "image_text", small_data, params)
    m = ds.manifest
    bare = replace(m, modalities={k: v for k, v in m.modalities.items() if k != "text_ids"})
    with pytest.raises(ConfigError, match=rf"^methods\.{method} cannot run on dataset 'synth-mvsa': ") as e:
        cls.check(cfg, bare)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("method", TEXT_ENCODER_METHODS)
def test_token_a_tokenizer_the_dataset_does_not_carry_is_refused(method, small_data, params):
    """token: a Hugging Face text encoder on embedded data whose ids are in the data's own small vocabulary."""
    cls, cfg, ds = _case(method, "trimodal", small_data, params, text_encoder="bert-base-uncased")
    with pytest.raises(ConfigError, match=rf"^methods\.{method} cannot run on dataset 'synth-mosi': .*bert-base-uncased"):
        cls.check(cfg, ds.manifest)


# ---- before any weights load ------------------------------------------------------------------------------------

class WeightsLoaded(Exception):
    pass


@pytest.fixture
def no_weights(monkeypatch):
    """Every way transformers loads pretrained weights or a tokenizer raises WeightsLoaded. Reading a model's
    config file stays allowed: it holds no weights, and INFIG's check reads the ResNet's stride from it."""
    import transformers

    def refuse(*a, **k):
        raise WeightsLoaded(a[:1])
    for name in ("AutoModel", "AutoTokenizer", "AutoImageProcessor", "CLIPModel", "PreTrainedModel",
                 "PreTrainedTokenizerBase"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", classmethod(refuse))


def test_the_check_comes_before_any_weights(no_weights, small_data, params):
    import transformers

    with pytest.raises(WeightsLoaded):  # the patch is live
        transformers.AutoModel.from_pretrained("a-name-never-fetched")  # patched: raises before any lookup
    mvsa = load_dataset(small_data["synth-mvsa"]).manifest
    mosi = load_dataset(small_data["synth-mosi"]).manifest
    almt = replace(method_config(params, "almt", ""), text_encoder="bert-base-uncased")
    with pytest.raises(ConfigError, match="methods.almt cannot run on dataset 'synth-mvsa': it handles trimodal"):
        build_method("almt", almt, mvsa)
    infig = method_config(params, "infig", "")  # DeBERTa-v3, ResNet-50, CLIP: all from_pretrained
    with pytest.raises(ConfigError, match="methods.infig cannot run on dataset 'synth-mosi': it handles image_text"):
        build_method("infig", infig, mosi)


def test_training_checks_before_any_weights_or_output(no_weights, small_data, params, tmp_path):
    from msarepro.train import RunSpec, run

    with pytest.raises(ConfigError, match="methods.infig cannot run on dataset 'synth-mosi'"):
        run(params, RunSpec("infig", str(small_data["synth-mosi"]), 1, tmp_path / "r", progress=False))
    assert not (tmp_path / "r").exists()


def test_token_a_tokenizer_mismatch_is_refused_before_any_weights(no_weights, small_data, params):
    """token: INFIG's paper encoders (DeBERTa-v3 and CLIP tokenizers) on embedded data that carries its own ids:
    refused by the check, naming the requested tokenizer, before DeBERTa, ResNet or CLIP load."""
    token_module()
    mvsa = load_dataset(small_data["synth-mvsa"]).manifest
    with pytest.raises(ConfigError, match="methods.infig cannot run on dataset 'synth-mvsa': .*deberta-v3-base"):
        build_method("infig", method_config(params, "infig", ""), mvsa)
