"""Tests for medcondense.augment: DSA ops, Siamese sharing, determinism, gradients."""

from __future__ import annotations

import pytest
import torch

from medcondense.augment import (
    AUG_OPS,
    DSA_RATIOS,
    AugParams,
    SiameseAugment,
    apply_aug,
    default_ops,
    sample_params,
    validate_ops,
)
from medcondense.errors import ConfigError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _batch(n: int, seed: int, channels: int = 1, size: int = 16) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("op", AUG_OPS)
def test_gradients_flow_to_the_images(op):
    x = _batch(4, 0, channels=3).requires_grad_(True)
    gen = torch.Generator().manual_seed(1)
    # Color draws are never the identity; for flip, force the flip so the test is about gradients.
    params = sample_params([op], gen, "cpu")
    if op == "flip":
        params = AugParams("flip", {"flip": torch.tensor(True)})
    y = apply_aug(x, params)
    (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", AUG_OPS)
def test_shared_params_transform_two_batches_alike(op):
    real, syn = _batch(5, 0), _batch(3, 1)
    for seed in range(5):
        params = sample_params([op], torch.Generator().manual_seed(seed), "cpu")
        together = apply_aug(torch.cat([real, syn]), params)
        torch.testing.assert_close(together[:5], apply_aug(real, params))
        torch.testing.assert_close(together[5:], apply_aug(syn, params))


def test_crop_shifts_a_known_image_with_zero_padding():
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16) + 1
    shift = int(16 * DSA_RATIOS["crop"] + 0.5)  # 2 pixels
    # u = 1 - eps maps to the largest shift (+2) on both axes: out[i, j] = x[i + 2, j + 2].
    params = AugParams("crop", {"u_x": torch.tensor(0.999), "u_y": torch.tensor(0.999)})
    y = apply_aug(x, params)[0, 0]
    torch.testing.assert_close(y[: 16 - shift, : 16 - shift], x[0, 0, shift:, shift:])
    assert torch.all(y[16 - shift :, :] == 0) and torch.all(y[:, 16 - shift :] == 0)
    # u = 0 maps to -2: the image moves down-right, zeros enter at the top-left.
    y = apply_aug(x, AugParams("crop", {"u_x": torch.tensor(0.0), "u_y": torch.tensor(0.0)}))[0, 0]
    torch.testing.assert_close(y[shift:, shift:], x[0, 0, : 16 - shift, : 16 - shift])
    # The middle value is no shift at all.
    y = apply_aug(x, AugParams("crop", {"u_x": torch.tensor(0.5), "u_y": torch.tensor(0.5)}))
    torch.testing.assert_close(y, x)


def test_flip_mirrors_the_last_axis_only_when_drawn():
    x = _batch(2, 3)
    torch.testing.assert_close(apply_aug(x, AugParams("flip", {"flip": torch.tensor(True)})), x.flip(3))
    torch.testing.assert_close(apply_aug(x, AugParams("flip", {"flip": torch.tensor(False)})), x)


def test_cutout_zeroes_a_half_size_square():
    x = torch.ones(2, 1, 16, 16)
    y = apply_aug(x, AugParams("cutout", {"u_x": torch.tensor(0.5), "u_y": torch.tensor(0.5)}))
    # offset = floor(0.5 * 17) = 8, square rows/cols [8 - 4, 8 + 4) = [4, 12).
    expected = torch.ones(16, 16)
    expected[4:12, 4:12] = 0
    torch.testing.assert_close(y[0, 0], expected)
    torch.testing.assert_close(y[1, 0], expected)


def test_color_on_one_channel_matches_hand_computation():
    x = _batch(2, 4)
    v = {"brightness": torch.tensor(0.2), "saturation": torch.tensor(1.7), "contrast": torch.tensor(0.8)}
    y = apply_aug(x, AugParams("color", v))
    bright = x + 0.2  # saturation is a no-op on one channel
    mean = bright.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(y, (bright - mean) * 0.8 + mean)


def test_identity_scale_and_rotation_return_the_input():
    x = _batch(3, 5, channels=2)
    same_scale = AugParams("scale", {"sx": torch.tensor(1.0), "sy": torch.tensor(1.0)})
    no_rotation = AugParams("rotate", {"angle": torch.tensor(0.0)})
    torch.testing.assert_close(apply_aug(x, same_scale), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_aug(x, no_rotation), x, atol=1e-5, rtol=1e-5)


def test_rotation_by_90_degrees_transposes_like_rot90():
    x = _batch(1, 6)
    y = apply_aug(x, AugParams("rotate", {"angle": torch.tensor(90.0)}))
    candidates = [torch.rot90(x, 1, (2, 3)), torch.rot90(x, -1, (2, 3))]
    assert min((y - c).abs().max().item() for c in candidates) < 1e-4


def test_scale_above_one_zooms_out():
    # A larger sampling grid (sx > 1) shrinks the content: the corners become zero padding.
    x = torch.ones(1, 1, 16, 16)
    y = apply_aug(x, AugParams("scale", {"sx": torch.tensor(1.2), "sy": torch.tensor(1.2)}))
    assert y[0, 0, 0, 0] < 0.5 and y[0, 0, 8, 8] == pytest.approx(1.0)


def test_default_ops_drop_flip_when_laterality_matters():
    assert "flip" not in default_ops(True)
    assert default_ops(False) == list(AUG_OPS)
    assert set(default_ops(True)) == set(AUG_OPS) - {"flip"}


def test_sampling_is_deterministic_under_a_seed():
    ops = list(AUG_OPS)
    first = [sample_params(ops, g, "cpu").as_record() for g in [torch.Generator().manual_seed(7)] for _ in range(20)]
    gen = torch.Generator().manual_seed(7)
    second = [sample_params(ops, gen, "cpu").as_record() for _ in range(20)]
    assert first == second
    assert len({r["op"] for r in first}) > 1  # one op per call, chosen at random


def test_every_op_is_chosen_and_ranges_hold():
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(300):
        p = sample_params(list(AUG_OPS), gen)
        seen.add(p.op)
        if p.op == "scale":
            assert 1 / 1.2 <= float(p.values["sx"]) <= 1.2
        if p.op == "rotate":
            assert -15 <= float(p.values["angle"]) <= 15
        if p.op == "color":
            assert -0.5 <= float(p.values["brightness"]) <= 0.5
            assert 0.5 <= float(p.values["contrast"]) <= 1.5
    assert seen == set(AUG_OPS)


def test_per_sample_draws_differ_between_images():
    x = torch.ones(6, 1, 16, 16)
    params = sample_params(["rotate"], torch.Generator().manual_seed(0), per_sample=6)
    assert params.values["angle"].shape == (6,)
    y = apply_aug(x, params)
    assert not torch.allclose(y[0], y[1])
    aug = SiameseAugment(["crop", "cutout"])
    assert aug.random_batch(_batch(6, 2), torch.Generator().manual_seed(3)).shape == (6, 1, 16, 16)


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_tensor_device(device):
    aug = SiameseAugment(AUG_OPS)
    gen = torch.Generator().manual_seed(0)
    x = _batch(4, 0).to(device).requires_grad_(True)
    for _ in range(12):
        params = aug.sample(gen, device)
        y = aug(x, params)
        assert y.device == x.device and y.shape == x.shape
        y.sum().backward()


def test_validate_ops_names_valid_ones():
    assert validate_ops("color, crop,crop") == ["color", "crop"]
    with pytest.raises(ConfigError, match="valid ones are color, crop, cutout, flip, scale, rotate"):
        validate_ops(["color", "blur"])
    with pytest.raises(ConfigError):
        validate_ops([])
    with pytest.raises(ConfigError):
        SiameseAugment(["zoom"])
