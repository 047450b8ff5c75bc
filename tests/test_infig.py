"""INFIG: the alignment objectives pinned on hand-computed cases (eqs. 1-6), the queue and momentum updates, the
ablation switches, the Figure 4 attention map, and a short real run through the training loop."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from msarepro.data import load_dataset
from msarepro.data.loader import to_tensors
from msarepro.methods import build_method, method_config
from msarepro.methods.infig import KeyQueue, fine_grained_loss, global_infonce, momentum_update, topj_similarity
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


def test_training_step_updates_momentum_encoders_and_queue(params, mvsa):
    ds, train = mvsa
    model = _model(params, ds)
    model.train()
    batch = train.batch(torch.arange(8))
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
    batch = train.batch(torch.arange(6))
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
    batch = train.batch(torch.arange(4))
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
    batch = train.batch(torch.arange(3))
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
