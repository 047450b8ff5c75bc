"""MFN: the Delta-memory attention and the Multi-view Gated Memory update on cases worked by hand, the resampling of
unaligned audio / vision to the text's length, one model step recomputed from its parts, padding invariance, the
task loss, and the real presets carrying MMSA's published settings."""
from __future__ import annotations

import math

import pytest
import torch

from msarepro.data.format import Manifest
from msarepro.methods import build_method, method_config
from msarepro.methods.mfn import MFN, delta_attention, gated_memory, resample_to

MODS = ("text", "audio", "vision")
DIMS = (6, 5, 4)


def _manifest() -> Manifest:
    return Manifest(name="t", family="trimodal", task="regression", metric_family="mosi", label_range=(-3.0, 3.0),
                    modalities={m: {"dim": d, "max_len": 9} for m, d in zip(MODS, DIMS)},
                    splits={"train": 8, "valid": 4, "test": 4})


def _batch(lens_t, lens_a, lens_v, L=(5, 9, 7), seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d, n, length in zip(MODS, DIMS, (lens_t, lens_a, lens_v), L):
        mask = torch.arange(length)[None] < torch.tensor(n)[:, None]
        out[m], out[f"{m}_mask"] = torch.randn(len(n), length, d, generator=g) * mask[..., None], mask
    out["y"] = torch.zeros(len(lens_t))
    return out


def test_delta_attention_by_hand():
    """c = [1, 2 | 3, 4]; D_a gives log [1, 1, 1, 5], so the softmax is [1, 1, 1, 5] / 8 and c_hat = [1, 2, 3, 20] / 8."""
    seen = []

    def d_a(c):
        seen.append(c)
        return torch.log(torch.tensor([[1.0, 1.0, 1.0, 5.0]]))
    c_hat = delta_attention(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]), d_a)
    assert torch.equal(seen[0], torch.tensor([[1.0, 2.0, 3.0, 4.0]]))  # D_a reads [c_{t-1}; c_t]
    assert torch.allclose(c_hat, torch.tensor([[1.0, 2.0, 3.0, 20.0]]) / 8)


def test_gated_memory_by_hand():
    """u_{t-1} = 2; D_g1 -> 0 (gamma1 = 0.5), D_g2 -> log 3 (gamma2 = 0.75), D_u -> atanh 0.8: u_t = 1 + 0.6 = 1.6.
    The gates read [c_hat; u_{t-1}], the candidate c_hat only."""
    c_hat, u = torch.tensor([[0.25, -1.0]]), torch.tensor([[2.0]])
    reads = {}

    def net(name, value):
        def f(x):
            reads[name] = x
            return torch.full((1, 1), value)
        return f
    out = gated_memory(c_hat, u, net("u", math.atanh(0.8)), net("g1", 0.0), net("g2", math.log(3.0)))
    assert out.item() == pytest.approx(1.6)
    assert torch.equal(reads["u"], c_hat) and torch.equal(reads["g1"], torch.tensor([[0.25, -1.0, 2.0]]))
    assert torch.equal(reads["g2"], reads["g1"])
    # gamma1 = 0 keeps nothing of the old memory, gamma2 = 0 writes nothing new
    assert gated_memory(c_hat, u, net("u", 5.0), net("g1", -1e4), net("g2", 1e4)).item() == pytest.approx(math.tanh(5))
    assert gated_memory(c_hat, u, net("u", 5.0), net("g1", 1e4), net("g2", -1e4)).item() == pytest.approx(2.0)


def test_resample_to_the_text_length_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 0.0, 0.0]])[..., None]  # (2, 4, 1)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    two = torch.tensor([[True, True, False], [True, True, True]])  # 4 frames -> 2 words; 2 frames -> 3 words
    out = resample_to(x, mask, two)[..., 0]
    assert torch.allclose(out, torch.tensor([[1.5, 3.5, 0.0], [1.0, 1.5, 2.0]]))
    three = torch.tensor([[True] * 3, [True] * 3])  # 4 frames -> 3 words: [0, 2), [1, 3), [2, 4)
    assert torch.allclose(resample_to(x, mask, three)[0, :, 0], torch.tensor([1.5, 2.5, 3.5]))
    same = resample_to(x, mask, mask)  # aligned data: the identity
    assert torch.equal(same, x)


def test_one_step_recomputed_from_the_parts():
    """A clip of one word: h_1^m, c_1^m from each LSTM cell on zero state; c_hat from [0; c_1]; u_1 from u_0 = 0;
    the prediction is the output MLP of [h_1^t; h_1^a; h_1^v; u_1]; audio / vision are their frames' means."""
    torch.manual_seed(0)
    model = build_method("mfn", MFN.Config(hidden_text=4, hidden_audio=3, hidden_vision=2, mem_dim=5), _manifest()).eval()
    batch = _batch([1], [3], [2])
    with torch.no_grad():
        x = {"text": batch["text"][:, 0], "audio": batch["audio"][:, :3].mean(1), "vision": batch["vision"][:, :2].mean(1)}
        hc = {m: model.lstms[m](x[m]) for m in MODS}
        c1 = torch.cat([hc[m][1] for m in MODS], 1)
        c_hat = torch.softmax(model.d_a(torch.cat([torch.zeros_like(c1), c1], 1)), 1) * torch.cat([torch.zeros_like(c1), c1], 1)
        both = torch.cat([c_hat, torch.zeros(1, 5)], 1)
        u1 = torch.sigmoid(model.d_g2(both)) * torch.tanh(model.d_u(c_hat))
        expected = model.out(torch.cat([hc["text"][0], hc["audio"][0], hc["vision"][0], u1], 1)).squeeze(-1)
        assert torch.allclose(model(batch)["pred"], expected, atol=1e-6)


def test_padding_and_batch_mates_change_nothing():
    """Steps past a clip's last word leave its states alone: its prediction is the same alone, beside longer
    clips, and with more padding."""
    torch.manual_seed(0)
    model = build_method("mfn", MFN.Config(), _manifest()).eval()
    batch = _batch([2, 5, 3], [4, 9, 6], [3, 7, 5])
    with torch.no_grad():
        together = model(batch)["pred"]
        alone = model({k: v[:1, :2] if k.startswith("text") else v[:1] for k, v in batch.items()})["pred"]
    assert torch.allclose(together[:1], alone, atol=1e-6)


def test_task_loss_by_hand():
    pred, y = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 1.0])
    l1 = build_method("mfn", MFN.Config(task_loss="l1"), _manifest()).losses({"pred": pred}, {"y": y}, 0)
    assert set(l1) == {"task"} and l1["task"].item() == pytest.approx(1.25)


# MMSA's config_regression.json, "mfn" -> datasetParams, written out by hand: hidden_dims (text, audio, vision),
# memsize, (shapes, drop) of NN1, NN2, gamma1, gamma2, out, then batch_size, learning_rate, weight_decay.
MMSA = {
    "mosi": ((256, 32, 256), 400, [(32, .2), (64, 0.), (256, .7), (32, .5), (128, 0.)], 128, 2e-3, 0.0),
    "mosei": ((128, 32, 128), 128, [(128, .2), (128, .5), (256, .7), (256, 0.), (128, .5)], 64, 5e-4, 1e-4),
    "sims": ((64, 16, 64), 64, [(128, .2), (128, 0.), (64, .2), (64, .7), (64, .7)], 32, 1e-3, 0.0),
    "simsv2": ((128, 16, 128), 400, [(32, .2), (128, .5), (32, .5), (32, .2), (64, .2)], 64, 1e-3, 0.0),
}


@pytest.mark.parametrize("preset", sorted(MMSA))
def test_real_presets_are_mmsas(preset, params):
    hidden, mem, nets, batch, lr, wd = MMSA[preset]
    cfg = method_config(params, "mfn", preset)
    assert (cfg.hidden_text, cfg.hidden_audio, cfg.hidden_vision, cfg.mem_dim) == (*hidden, mem)
    got = [(getattr(cfg, f"{n}_hidden"), getattr(cfg, f"{n}_dropout"))
           for n in ("attn", "update", "gamma1", "gamma2", "out")]
    assert got == nets
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.patience, cfg.task_loss) == (batch, lr, wd, 8, "l1")
