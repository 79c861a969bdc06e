"""nets.py: the ConvNet's first layer under bfloat16 autocast."""

from __future__ import annotations

import torch
from torch import nn

from medcondense.nets import ConvNet, Float32Conv2d


def test_few_channel_inputs_get_a_float32_first_conv_and_wide_inputs_a_plain_one():
    for channels in (1, 3):
        first = ConvNet(channels, 4, 16, width=8).features[0]
        assert isinstance(first, Float32Conv2d)
    first = ConvNet(8, 4, 16, width=8).features[0]
    assert type(first) is nn.Conv2d
    assert all(type(m) is nn.Conv2d for m in ConvNet(1, 4, 16, width=8).features[1:] if isinstance(m, nn.Conv2d))


def test_trained_first_conv_runs_in_float32_under_autocast_and_matches_plain_conv():
    torch.manual_seed(0)
    conv = Float32Conv2d(1, 8, 3, padding=3)
    plain = nn.Conv2d(1, 8, 3, padding=3)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(4, 1, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
        rounded = plain(x)
    assert out.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    assert torch.equal(out, plain(x)), "float32 under autocast is exactly the float32 conv"
    grad = torch.autograd.grad(out.sum(), conv.weight)[0]
    assert grad.dtype == torch.float32


def test_frozen_first_conv_stays_under_autocast():
    conv = Float32Conv2d(1, 8, 3, padding=1).requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(2, 1, 8, 8)).dtype == torch.bfloat16
    assert conv(torch.randn(2, 1, 8, 8)).dtype == torch.float32  # no autocast: plain float32


def test_state_dict_keys_are_those_of_the_reference_layout():
    keys = list(ConvNet(1, 4, 16, width=8).state_dict())
    assert keys[:2] == ["features.0.weight", "features.0.bias"]
