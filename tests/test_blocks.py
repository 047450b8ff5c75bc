"""The lean CPU building blocks (methods/blocks.py) against torch's own modules: same parameters, same outputs in
eval mode; the fast dropout's rate, scale and randomness."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from msarepro.methods.blocks import (Dropout, MultiheadAttention, attention_bias, dropout, transformer_encoder)


def _mask(lengths, L):
    return torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_rate_scale_and_eval(p):
    torch.manual_seed(0)
    x = torch.ones(200, 500)
    y = dropout(x, p, True)
    zero = (y == 0).float().mean().item()
    assert abs(zero - p) < 0.01  # 100,000 draws: the binomial std is < 0.0016
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))  # inverted dropout's scale
    assert dropout(x, p, False) is x and dropout(x, 0.0, True) is x
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))


def test_dropout_masks_are_independent_and_seeded():
    torch.manual_seed(1)
    a, b = dropout(torch.ones(64, 64), 0.5), dropout(torch.ones(64, 64), 0.5)
    assert not torch.equal(a, b)
    torch.manual_seed(1)
    assert torch.equal(a, dropout(torch.ones(64, 64), 0.5))  # reproducible from the seed
    # every 16-bit slice of the 64-bit draws is used: no position of the four is biased
    torch.manual_seed(2)
    kept = (dropout(torch.ones(4, 100_000), 0.5) != 0).float().view(4, -1, 4).mean(dim=(0, 1))
    assert torch.all((kept - 0.5).abs() < 0.01)


def test_dropout_gradient_is_the_mask():
    torch.manual_seed(3)
    x = torch.randn(10, 20, requires_grad=True)
    y = Dropout(0.25).train()(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() / 0.75)


def test_attend_equals_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiheadAttention(24, 4, dropout=0.2).eval()
    ref = nn.MultiheadAttention(24, 4, dropout=0.2, batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())
    q, kv = torch.randn(3, 5, 24), torch.randn(3, 7, 24)
    mask = _mask([7, 3, 1], 7)
    want, _ = ref(q, kv, kv, key_padding_mask=~mask, need_weights=False)
    assert torch.allclose(ours.attend(q, kv, attention_bias(mask)), want, atol=1e-5)
    want, _ = ref(kv, kv, kv, key_padding_mask=~mask, need_weights=False)  # self-attention: one packed projection
    assert torch.allclose(ours.attend(kv, kv, attention_bias(mask)), want, atol=1e-5)


def test_attend_training_applies_dropout_to_the_weights_only_when_asked():
    torch.manual_seed(0)
    att = MultiheadAttention(16, 2, dropout=0.5).train()
    q, mask = torch.randn(2, 6, 16), _mask([6, 4], 6)
    torch.manual_seed(5)
    a = att.attend(q, q, attention_bias(mask))
    att.dropout = 0.0
    b = att.attend(q, q, attention_bias(mask))
    assert not torch.allclose(a, b)
    assert torch.allclose(b, att.eval().attend(q, q, attention_bias(mask)), atol=1e-6)


@pytest.mark.parametrize("norm_first,activation", [(True, "relu"), (False, "relu"), (False, "gelu")])
def test_transformer_encoder_equals_torch(norm_first, activation):
    torch.manual_seed(0)
    ours = transformer_encoder(16, 4, 2, 32, dropout=0.1, activation=activation, norm_first=norm_first).eval()
    torch.manual_seed(0)  # torch's modules, built in the same order, draw the same initial weights
    layer = nn.TransformerEncoderLayer(16, 4, 32, 0.1, activation=activation, batch_first=True, norm_first=norm_first)
    ref = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))
    x, mask = torch.randn(3, 6, 16), _mask([6, 2, 4], 6)
    with torch.no_grad():
        got, want = ours(x, src_key_padding_mask=~mask), ref(x, src_key_padding_mask=~mask)
    assert torch.allclose(got[mask], want[mask], atol=1e-5)  # padded positions are never read
