"""INFIG: the alignment objectives and the fusion head pinned on hand-computed cases (eqs. 1-12), the queue and
momentum updates, the CLIP projections, the pixels each encoder is fed (from its processor config), what INFIG asks
of a dataset (token requests, image checks, frozen modules), the ablation switches, the Figure 4 attention map,
and a short real run through the training loop."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import build_method, method_config
from msarepro.config import ConfigError
from msarepro.methods.base import Method
from msarepro.methods.infig import (INFIG, ClipPrior, ImageEncoder, KeyQueue, TextTower, attention_pool, classify,
                                    fine_grained_loss, fusion_sequence, global_infonce, momentum_update,
                                    topj_similarity, weighted_terms)
from msarepro.report.figures_papers import plot_word_attention

from .conftest import fast_params

R2 = math.sqrt(0.5)


def _padded_case():
    """One image with tokens e1, e2; two texts, the second padded. Padding rows would change every result."""
    img = torch.tensor([[[1., 0, 0], [0, 3, 0]]])  # (1, 2, 3); scale must not matter (cosine)
    txt = torch.tensor([[[2., 0, 0], [0, 1, 0], [1, 1, 0], [2, 0, 0]],  # last token is padding
                        [[0., 0, 1], [1, 0, 0], [0, 2, 0], [0, 2, 0]]])  # last two are padding
    img_mask = torch.ones(1, 2, dtype=torch.bool)
    txt_mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    return img, txt, img_mask, txt_mask


def test_topj_similarity_hand_computed_with_padding():
    img, txt, img_mask, txt_mask = _padded_case()
    s_p2q, s_q2p = topj_similarity(img, txt, img_mask, txt_mask, j=2)
    assert s_p2q.shape == (1, 2) and s_q2p.shape == (2, 1)
    # image -> text 0: e1 vs [1, 0, r2] -> (1 + r2) / 2; e2 vs [0, 1, r2] -> (1 + r2) / 2; mean over 2 tokens
    # image -> text 1: e1 vs [0, 1] -> 1 / 2; e2 vs [0, 0] -> 0; mean 1/4
    assert torch.allclose(s_p2q, torch.tensor([[(1 + R2) / 2, 0.25]]), atol=1e-6)
    # text 0 -> image: t1 [1, 0] -> 1/2, t2 [0, 1] -> 1/2, t3 [r2, r2] -> r2; mean over the 3 real tokens
    # text 1 -> image: t1 [0, 0] -> 0, t2 [1, 0] -> 1/2; mean 1/4
    assert torch.allclose(s_q2p, torch.tensor([[(1 + R2) / 3], [0.25]]), atol=1e-6)
    # unmasked, the padding would enter both the top-j and the mean: the mask is what makes the numbers above
    full = torch.ones_like(txt_mask)
    leaky_p2q, leaky_q2p = topj_similarity(img, txt, img_mask, full, j=2)
    assert not torch.allclose(leaky_p2q, s_p2q) and not torch.allclose(leaky_q2p, s_q2p)


def test_topj_similarity_top1_is_max_and_short_texts_divide_by_what_they_have():
    img, txt, img_mask, txt_mask = _padded_case()
    s1, _ = topj_similarity(img, txt, img_mask, txt_mask, j=1)
    assert torch.allclose(s1, torch.tensor([[1.0, 0.5]]), atol=1e-6)  # FILIP's max similarity
    s3, _ = topj_similarity(img, txt, img_mask, txt_mask, j=3)
    # text 1 has 2 real tokens: e1 -> (0 + 1) / 2, e2 -> 0; text 0: e1 (1 + r2 + 0) / 3 twice
    assert torch.allclose(s3, torch.tensor([[(1 + R2) / 3, 0.25]]), atol=1e-6)


def test_fine_grained_infonce_hand_computed():
    s_p2q = torch.tensor([[0.8, 0.2], [0.1, 0.5]])
    s_q2p = torch.tensor([[0.7, 0.1], [0.3, 0.6]])
    tau = torch.tensor(0.5)
    # row b: -log softmax(S[b] / tau)[b], two candidates -> log(1 + exp(-(S[b,b] - S[b,other]) / tau))
    l_i = (math.log1p(math.exp(-1.2)) + math.log1p(math.exp(-0.8))) / 2
    l_t = (math.log1p(math.exp(-1.2)) + math.log1p(math.exp(-0.6))) / 2
    assert fine_grained_loss(s_p2q, s_q2p, tau).item() == pytest.approx(l_i + l_t, abs=1e-6)


def test_global_infonce_hand_computed_with_queue():
    i_g = torch.tensor([[3., 0], [0, 2]])  # cosine similarity: scale must not matter
    t_g = torch.tensor([[1., 0], [0, 5]])
    keys = torch.tensor([[1., 0], [0, 1]])
    queue_t, queue_i = torch.tensor([[-1., 0]]), torch.tensor([[0., -1]])
    e = math.e
    # i2t: row 0 sims [1, 0, -1], row 1 [0, 1, 0]; t2i: row 0 [1, 0, 0], row 1 [0, 1, -1]; tau = 1
    l_i2t = (-math.log(e / (e + 1 + 1 / e)) - math.log(e / (1 + e + 1))) / 2
    l_t2i = (-math.log(e / (e + 1 + 1)) - math.log(e / (1 + e + 1 / e))) / 2
    got = global_infonce(i_g, t_g, keys, keys, queue_i, queue_t, torch.tensor(1.0))
    assert got.item() == pytest.approx(0.5 * (l_i2t + l_t2i), abs=1e-6)
    # the temperature divides the similarities
    sharp = global_infonce(i_g, t_g, keys, keys, queue_i, queue_t, torch.tensor(0.07))
    assert sharp.item() < got.item()


def test_queue_is_a_ring_buffer_of_normalised_keys():
    q = KeyQueue(size=3, dim=2)
    assert q.contents()[0].shape == (0, 2)
    a, b, c, d = (torch.tensor([[float(k), 0.0]]) * s for k, s in ((1, 2), (1, -1), (1, 5), (1, -3)))
    q.enqueue(torch.cat([a, b]), torch.cat([b, a]))
    img, txt = q.contents()
    assert torch.equal(img, torch.tensor([[1., 0], [-1, 0]])) and torch.equal(txt, torch.tensor([[-1., 0], [1, 0]]))
    assert int(q.ptr) == 2 and int(q.filled) == 2
    snapshot = q.contents()[0]
    q.enqueue(torch.cat([c, d]), torch.cat([c, d]))  # rows 2 then 0 (wraps around), oldest overwritten
    assert torch.equal(q.image, torch.tensor([[-1., 0], [-1, 0], [1, 0]]))
    assert int(q.ptr) == 1 and int(q.filled) == 3
    assert torch.equal(snapshot, torch.tensor([[1., 0], [-1, 0]])), "contents() must be a copy"
    q.enqueue(torch.tensor([[0., 1], [0, 2], [0, 3], [0, 4]]), torch.zeros(4, 2))  # more than M: last M kept
    assert int(q.filled) == 3 and int(q.ptr) == 1  # (1 + 3) mod 3
    assert torch.equal(q.image, torch.tensor([[0., 1], [0, 1], [0, 1]]))


def test_momentum_update_moves_the_copy_toward_the_online_weights():
    online, copy_ = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 2.0]]))
        online.bias.fill_(4.0)
        copy_.weight.zero_()
        copy_.bias.fill_(-6.0)
    momentum_update(online, copy_, 0.9)
    assert torch.allclose(copy_.weight, torch.tensor([[0.1, 0.2]]))
    assert torch.allclose(copy_.bias, torch.tensor([-5.0]))  # 0.9 * -6 + 0.1 * 4


@pytest.fixture(scope="module")
def mvsa(small_data):
    ds = load_dataset(small_data["synth-mvsa"])
    return ds, to_tensors(ds)["train"]


def _model(params, ds, **changes):
    torch.manual_seed(0)
    cfg = dataclasses.replace(method_config(params, "infig", ds.manifest.preset), **changes)
    return build_method("infig", cfg, ds.manifest)


def _batch(train, n: int) -> dict[str, torch.Tensor]:
    """The first n training samples with clip_ids as the data layer provides them for tiny-clip (whose tokenizer
    is the dataset's own: the same ids and mask as text_ids)."""
    batch = train.batch(torch.arange(n))
    batch["clip_ids"], batch["clip_ids_mask"] = batch["text_ids"].clone(), batch["text_ids_mask"].clone()
    return batch


def test_training_step_updates_momentum_encoders_and_queue(params, mvsa):
    ds, train = mvsa
    model = _model(params, ds)
    model.train()
    batch = _batch(train, 8)
    online = model.encoders["text"].model.embeddings.word_embeddings.weight
    mom = model.momentum_encoders["text"].model.embeddings.word_embeddings.weight
    assert torch.equal(online, mom) and int(model.queue.filled) == 0
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    out = model(batch)
    terms = model.losses(out, batch, 0)
    assert set(terms) == {"sc", "global", "fine"}
    assert int(model.queue.filled) == 8
    assert model.queue.image.shape[1] == 64 + model.clip.out_dim  # i_g = [i_cls ; i_clip]
    sum(terms.values()).backward()
    opt.step()
    before = mom.detach().clone()
    model.losses(model(batch), batch, 0)
    m = model.cfg.momentum
    assert torch.allclose(mom, m * before + (1 - m) * online.detach(), atol=1e-6)
    assert int(model.queue.filled) == 16
    assert not any(p.requires_grad for p in model.clip.parameters())
    assert not model.clip.training, "the frozen CLIP prior stays in eval mode"


def test_hierarchical_loss_is_the_mean_over_the_last_layers(params, mvsa):
    ds, train = mvsa
    model = _model(params, ds, hfam_layers=2)
    model.train()
    batch = _batch(train, 6)
    out = model(batch)
    t_mask = batch["text_ids_mask"][:, 1:]
    per_layer = []
    for m in (1, 2):
        i_tok, t_tok = out["image_layers"][-m][:, 1:], out["text_layers"][-m][:, 1:]
        s = topj_similarity(i_tok, t_tok, torch.ones(i_tok.shape[:2], dtype=torch.bool), t_mask, model.cfg.top_j)
        per_layer.append(fine_grained_loss(*s, model.tau()))
    expected = (per_layer[0] + per_layer[1]) / 4  # eq. 6: 1 / (2M) with M = 2
    assert torch.allclose(model.fine_grained_alignment_loss(out, batch), expected, atol=1e-6)


def test_ablation_switches(params, mvsa):
    ds, train = mvsa
    batch = _batch(train, 4)
    no_clip = _model(params, ds, use_clip=False)
    assert no_clip.clip is None and no_clip.queue.image.shape[1] == 64
    no_clip.train()
    out = no_clip(batch)
    assert torch.equal(out["i_g"], out["image_layers"][-1][:, 0])
    layer2 = _model(params, ds, gam_layer=2)
    layer2.train()
    out = layer2(batch)
    assert torch.allclose(out["t_g"][:, :64], torch.nn.functional.normalize(out["text_layers"][-2][:, 0], dim=-1))
    no_gam = _model(params, ds, use_gam=False)
    assert not hasattr(no_gam, "momentum_encoders") and not hasattr(no_gam, "clip")
    no_gam.train()
    assert set(no_gam.losses(no_gam(batch), batch, 0)) == {"sc", "fine"}
    no_hfam = _model(params, ds, use_hfam=False)
    no_hfam.train()
    assert set(no_hfam.losses(no_hfam(batch), batch, 0)) == {"sc", "global"}
    neither = _model(params, ds, use_gam=False, use_hfam=False)
    assert not hasattr(neither, "temp")
    neither.train()
    assert set(neither.losses(neither(batch), batch, 0)) == {"sc"}
    with pytest.raises(ValueError, match="gam_layer"):
        _model(params, ds, gam_layer=5)


def test_fusion_word_attention_and_plot(params, mvsa, tmp_path):
    ds, train = mvsa
    model = _model(params, ds)
    batch = _batch(train, 3)
    att = model.fusion_word_attention(batch, torch.tensor([1, 2, 1]))
    assert att.shape == (3, 4, 4)  # the tiny ResNet's 4 x 4 grid of a 32 x 32 image
    assert (att >= 0).all() and torch.allclose(att.sum((1, 2)), torch.ones(3), atol=1e-5)
    assert model.training, "the previous mode is restored"
    path = tmp_path / "fig4.png"
    plot_word_attention(batch["image"][0], att[0], "t7", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_short_run_through_the_training_loop(small_data, tmp_path):
    from msarepro.train import RunSpec, run

    params = fast_params(max_epochs=2, **{"data.root": str(small_data["synth-mvsa"].parent)})
    result = run(params, RunSpec("infig", "synth-mvsa", 1111, tmp_path / "run", progress=False))
    assert set(result["test"]) >= {"Accuracy", "F1_score"}
    import pandas as pd
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert {"train_sc", "train_global", "train_fine"} <= set(hist.columns)
    assert hist["train_sc"].iloc[1] < hist["train_sc"].iloc[0]


# ---- eqs. 7-12: the fusion head and the total loss, on hand-computed cases ------------------------------------

def test_fusion_sequence_is_image_patches_then_text_tokens_eq7():
    i_tok = torch.tensor([[[1., 1]], [[2., 2]]])  # (2, 1, 2)
    t_tok = torch.tensor([[[3., 0], [4, 0]], [[5., 0], [6, 0]]])  # (2, 2, 2)
    t_mask = torch.tensor([[True, True], [True, False]])
    x, mask = fusion_sequence(i_tok, t_tok, t_mask)
    assert torch.equal(x, torch.tensor([[[1., 1], [3, 0], [4, 0]], [[2., 2], [5, 0], [6, 0]]]))
    assert torch.equal(mask, torch.tensor([[True, True, True], [True, True, False]]))


def test_attention_pool_hand_computed_eqs8_9():
    f = torch.tensor([[[1., 0], [0, 2], [5, 5]]])  # (1, 3, 2); the last position is padding
    scores = torch.tensor([[0.0, math.log(2.0), 100.0]])
    mask = torch.tensor([[True, True, False]])
    k_tilde, g = attention_pool(f, scores, mask)
    # eq. 8: softmax over the real positions [1, 2] / 3; eq. 9: 1/3 [1, 0] + 2/3 [0, 2]
    assert torch.allclose(g, torch.tensor([[1 / 3, 2 / 3, 0.0]]), atol=1e-6)
    assert torch.allclose(k_tilde, torch.tensor([[1 / 3, 4 / 3]]), atol=1e-6)
    leaky, _ = attention_pool(f, scores, torch.ones_like(mask))  # the mask is what keeps the padding out
    assert not torch.allclose(leaky, k_tilde)


def _gelu(x: float) -> float:
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


def test_gelu_projection_and_gelu_on_logits_hand_computed_eqs10_11():
    proj_k, classifier = nn.Linear(2, 2), nn.Linear(2, 3)
    with torch.no_grad():
        proj_k.weight.copy_(torch.eye(2))
        proj_k.bias.copy_(torch.tensor([0.0, -1.0]))
        classifier.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, -3.0]]))
        classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    k_tilde = torch.tensor([[1.0, -1.0]])
    k, logits = classify(k_tilde, proj_k, classifier, gelu_on_logits=True)
    k_ref = [_gelu(1.0), _gelu(-2.0)]  # eq. 10: GELU(K~ W_K + b_K)
    raw = [k_ref[0] + k_ref[1], 2 * k_ref[0], -3 * k_ref[1] + 0.5]  # K W + b
    assert torch.allclose(k, torch.tensor([k_ref]), atol=1e-6)
    assert torch.allclose(logits, torch.tensor([[_gelu(v) for v in raw]]), atol=1e-6)  # eq. 11 as printed
    _, plain = classify(k_tilde, proj_k, classifier, gelu_on_logits=False)
    assert torch.allclose(plain, torch.tensor([raw]), atol=1e-6)
    assert not torch.allclose(plain, logits)


def test_loss_weighting_hand_computed_eq12():
    one, two, four = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)
    terms = weighted_terms(one, two, four, 0.3, 0.2)
    assert set(terms) == {"sc", "global", "fine"}
    assert sum(terms.values()).item() == pytest.approx(1 + 0.3 * 2 + 0.2 * 4)
    assert weighted_terms(one, None, four, 0.3, 0.2) == {"sc": one, "fine": 0.2 * four}


def test_model_loss_terms_follow_the_lambdas_eq12(params, mvsa):
    ds, train = mvsa
    batch = _batch(train, 6)
    terms = []
    for lg, lf in ((0.3, 0.2), (0.6, 0.1)):
        model = _model(params, ds, lambda_g=lg, lambda_f=lf)
        model.train()
        torch.manual_seed(1)  # the same dropout masks in both
        terms.append(model.losses(model(batch), batch, 0))
    assert torch.equal(terms[0]["sc"], terms[1]["sc"])
    assert terms[1]["global"].item() == pytest.approx(2 * terms[0]["global"].item(), rel=1e-6)
    assert terms[1]["fine"].item() == pytest.approx(0.5 * terms[0]["fine"].item(), rel=1e-6)


def test_gelu_on_logits_switch_changes_the_prediction(params, mvsa):
    ds, train = mvsa
    batch = _batch(train, 6)
    on, off = _model(params, ds, gelu_on_logits=True).eval(), _model(params, ds, gelu_on_logits=False).eval()
    with torch.no_grad():
        p_on, p_off = on(batch)["pred"], off(batch)["pred"]
    assert torch.allclose(p_on, torch.nn.functional.gelu(p_off), atol=1e-6)  # same weights: only eq. 11's GELU
    assert not torch.allclose(p_on, p_off)


# ---- CLIP's branch: trainable linear projections (sec. 3.2) -----------------------------------------------------

def _clip_half_after_one_step(params, ds, batch, mode):
    model = _model(params, ds, clip_projection=mode)
    model.train()
    d = model.encoders["text"].out_dim
    before = model(batch)["i_g"][:, d:].detach().clone(), model(batch)["t_g"][:, d:].detach().clone()
    out = model(batch)
    l_g = model.global_alignment_loss(out, batch)
    l_g.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    opt.step()
    out = model(batch)
    after = out["i_g"][:, d:].detach(), out["t_g"][:, d:].detach()
    return model, before, after, with_grad


def test_clip_projection_trainable_learns_from_the_global_loss(params, mvsa):
    ds, train = mvsa
    batch = _batch(train, 8)
    model, before, after, with_grad = _clip_half_after_one_step(params, ds, batch, "trainable")
    assert {"encoders.clip_image.weight", "encoders.clip_text.weight"} <= with_grad
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])
    # initialised from CLIP's own projections; the momentum encoders hold copies and use them for the keys
    frozen_model, f_before, f_after, f_grad = _clip_half_after_one_step(params, ds, batch, "frozen")
    assert torch.allclose(before[0], f_before[0], atol=1e-6) and torch.allclose(before[1], f_before[1], atol=1e-6)
    assert torch.equal(f_before[0], f_after[0]) and torch.equal(f_before[1], f_after[1])  # a fixed offset
    assert not any("clip" in n for n in f_grad) and "clip_image" not in frozen_model.encoders
    mom = model.momentum_encoders["clip_image"]
    assert not mom.weight.requires_grad
    pooled = model.clip(batch)
    i_key, _ = model._global(model.momentum_encoders, *model._encode(model.momentum_encoders, batch)[:2], pooled)
    d = model.encoders["text"].out_dim
    assert torch.allclose(i_key[:, d:], torch.nn.functional.normalize(mom(pooled[0]), dim=-1), atol=1e-6)
    online = model.encoders["clip_image"].weight.detach().clone()
    old = mom.weight.detach().clone()
    model.losses(model(batch), batch, 0)  # one more momentum update
    m = model.cfg.momentum
    assert torch.allclose(mom.weight, m * old + (1 - m) * online, atol=1e-7)


# ---- what INFIG asks of a dataset ---------------------------------------------------------------------------------

def test_token_requests_name_each_encoders_tokenizer(params, mvsa, tmp_path):
    from msarepro.data import tokens
    ds, _ = mvsa
    paper = method_config(params, "infig", "mvsa-single")
    assert INFIG.token_requests(paper, ds.manifest) == [
        tokens.TokenRequest("text_ids", "microsoft/deberta-v3-base", 200),
        tokens.TokenRequest("clip_ids", "openai/clip-vit-base-patch32", 0)]
    synth = method_config(params, "infig", "synth-mvsa")  # tiny-*: the dataset's own ids for both
    assert [(r.key, r.tokenizer) for r in INFIG.token_requests(synth, ds.manifest)] == [
        ("text_ids", tokens.DATASET_TOKENIZER), ("clip_ids", tokens.DATASET_TOKENIZER)]
    folder = str(tmp_path / "my-text-model")
    local = dataclasses.replace(paper, text_encoder=folder, text_max_len=64)
    assert INFIG.token_requests(local, ds.manifest)[0] == tokens.TokenRequest("text_ids", folder, 64)
    for switch in ({"use_clip": False}, {"use_gam": False}):
        reqs = INFIG.token_requests(dataclasses.replace(paper, **switch), ds.manifest)
        assert [r.key for r in reqs] == ["text_ids"]


def _manifest_with_side(manifest, side):
    image = {**manifest.modalities["image"], "shape": [3, side, side]}
    return dataclasses.replace(manifest, modalities={**manifest.modalities, "image": image})


def test_image_problems(params, mvsa, tmp_path):
    from transformers import ResNetConfig

    ds, _ = mvsa
    synth = method_config(params, "infig", "synth-mvsa")  # tiny-resnet: a grid cell spans 8 pixels
    assert INFIG.image_problems(synth, ds.manifest) == []
    small = _manifest_with_side(ds.manifest, 4)
    [problem] = INFIG.image_problems(synth, small)
    assert "4 x 4" in problem and "image_size" in problem and "8 pixels" in problem
    assert INFIG.image_problems(dataclasses.replace(synth, image_size=32), small) == []  # resized first
    [problem] = INFIG.image_problems(dataclasses.replace(synth, top_j=17), ds.manifest)  # 4 x 4 = 16 patches
    assert "top_j" in problem
    assert INFIG.image_problems(dataclasses.replace(synth, top_j=17, use_hfam=False), ds.manifest) == []
    no_image = dataclasses.replace(ds.manifest, modalities={"text_ids": ds.manifest.modalities["text_ids"]})
    assert "'image'" in INFIG.image_problems(synth, no_image)[0]
    # a ResNet-50-like config in a local folder (no weights read): grid cells of 32 pixels
    ResNetConfig(hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3]).save_pretrained(tmp_path / "r50")
    r50 = dataclasses.replace(synth, image_encoder=str(tmp_path / "r50"))
    assert "32 pixels" in INFIG.image_problems(r50, _manifest_with_side(ds.manifest, 16))[0]
    assert INFIG.image_problems(r50, _manifest_with_side(ds.manifest, 64)) == []


def test_check_adds_the_image_problems_after_the_shared_checks(params, mvsa):
    ds, _ = mvsa
    synth = method_config(params, "infig", "synth-mvsa")
    INFIG.check(synth, ds.manifest)
    with pytest.raises(ConfigError, match="methods.infig cannot run on dataset 'synth-mvsa': .*image_size"):
        INFIG.check(synth, _manifest_with_side(ds.manifest, 4))
    # one error lists a shared problem (the task loss) and INFIG's own (the image side) together
    bad = dataclasses.replace(synth, task_loss="mse")
    with pytest.raises(ConfigError, match=r"task_loss.*; .*4 x 4"):
        INFIG.check(bad, _manifest_with_side(ds.manifest, 4))


def test_frozen_modules(params, mvsa):
    ds, train = mvsa
    model = _model(params, ds)
    assert model.frozen_modules() == [model.clip.model]
    trainable = {id(p) for p in model.encoders.parameters()}
    assert not trainable & {id(p) for m in model.frozen_modules() for p in m.parameters()}
    assert _model(params, ds, use_clip=False).frozen_modules() == []
    fixed = _model(params, ds, finetune_text=False)
    frozen = fixed.frozen_modules()
    assert frozen == [fixed.clip.model, fixed.encoders["text"], fixed.momentum_encoders["text"]]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    # a training step leaves the frozen text tower's momentum copy bit-identical (not m x + (1 - m) x)
    fixed.train()
    batch = _batch(train, 4)
    opt = torch.optim.SGD([p for p in fixed.parameters() if p.requires_grad], lr=0.5)
    sum(fixed.losses(fixed(batch), batch, 0).values()).backward()
    opt.step()
    fixed.losses(fixed(batch), batch, 0)
    for p, p_m in zip(fixed.encoders["text"].parameters(), fixed.momentum_encoders["text"].parameters()):
        assert torch.equal(p, p_m)


# ---- pixels and encoders from Hugging Face folders (built here, offline) ------------------------------------------

def test_clip_pixels_come_from_its_processor_config(mvsa, tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    ds, train = mvsa
    folder = tmp_path / "any-name"  # a local folder; nothing is read from its name
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32),
        vision_config=dict(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2), projection_dim=8)).save_pretrained(folder)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, image_mean=list(mean),
                       image_std=list(std)).save_pretrained(folder)
    prior = ClipPrior(str(folder), ds.manifest)
    assert prior.image_size == 16 and prior.resize_mode == "bicubic" and prior.out_dim == 8
    batch = _batch(train, 3)
    i_pool, t_pool = prior(batch)
    pixels = torch.nn.functional.interpolate(batch["image"], size=(16, 16), mode="bicubic", align_corners=False)
    pixels = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = prior.model.vision_model(pixel_values=pixels).pooler_output
    assert torch.allclose(i_pool, expected, atol=1e-5)
    assert t_pool.shape == (3, 16)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        ClipPrior(str(folder), ds.manifest)


def test_resnet_and_text_encoders_load_from_local_folders(mvsa, tmp_path):
    from transformers import (ConvNextImageProcessor, DebertaV2Config, DebertaV2Model, ResNetConfig, ResNetModel)

    ds, train = mvsa
    from msarepro.methods.infig import _build_resnet, image_processor, pixel_spec
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                             layer_type="basic")).save_pretrained(tmp_path / "vision")
    ConvNextImageProcessor(image_mean=[0.3, 0.3, 0.3], image_std=[0.2, 0.2, 0.2]).save_pretrained(tmp_path / "vision")
    resnet, feat = _build_resnet(str(tmp_path / "vision"))
    assert feat == 16
    _, mean, std, _ = pixel_spec(image_processor(str(tmp_path / "vision")))
    assert mean == (0.3, 0.3, 0.3) and std == (0.2, 0.2, 0.2)
    enc = ImageEncoder(resnet, feat, 8, 1, 2, 0.0, 0, mean, std)
    assert torch.allclose(enc.mean.flatten(), torch.tensor([0.3, 0.3, 0.3]))
    # the tiny ResNet's processor is built in code with the ImageNet mean and std of microsoft/resnet-50's config
    _, mean, std, _ = pixel_spec(image_processor("tiny-resnet"))
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))
    DebertaV2Model(DebertaV2Config(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=32)).save_pretrained(tmp_path / "text")  # no "deberta" in it
    tower = TextTower(str(tmp_path / "text"), ds.manifest, 8, 1, 2, finetune=True,
                      setting="methods.infig.text_encoder")
    assert isinstance(tower.model, DebertaV2Model) and tower.num_layers == 2 and tower.out_dim == 16
    with pytest.raises(ConfigError, match="methods.infig.text_encoder"):
        TextTower(str(tmp_path / "missing"), ds.manifest, 8, 1, 2, finetune=True,
                  setting="methods.infig.text_encoder")
