"""Differentiable Siamese augmentation (DSA) in plain torch.

Follows the reference (VICO-UoE/DatasetCondensation ``utils.py``: ``ParamDiffAug`` and
``DiffAugment`` with strategy ``color_crop_cutout_flip_scale_rotate`` in mode ``'S'``): each call
picks *one* op at random and draws its parameters *once*; the same draw is then applied to the
real batch and to the synthetic batch, which is what makes the augmentation "Siamese". Every op is
differentiable with respect to the images, so gradients reach the synthetic pixels.

The two halves are split (TorchIO-style "random sampler + deterministic twin"):

* :func:`sample_params` draws an :class:`AugParams` (op name + parameter tensors);
* :func:`apply_aug` applies it, deterministically, to any batch of any size.

Ops and their parameters (``AugParams.values``):

=========  =================================================================================
op         values
=========  =================================================================================
color      ``brightness`` (added, ``(u - 0.5) * 1.0``), ``saturation`` (factor ``u * 2``),
           ``contrast`` (factor ``u + 0.5``), applied in this order as in the reference.
           Saturation mixes towards the channel mean, so it is a no-op on 1-channel images.
crop       ``u_x``, ``u_y`` in [0, 1): translation by an integer number of pixels in
           ``[-s, s]``, ``s = round(0.125 * size)``, with zero padding. Kept as unit draws
           because the image size is only known when applying.
cutout     ``u_x``, ``u_y`` in [0, 1): the centre of a ``0.5 size x 0.5 size`` square set to 0.
flip       ``flip`` (bool): horizontal flip (last axis), probability 0.5.
scale      ``sx``, ``sy`` in ``[1/1.2, 1.2]``: affine scaling via ``affine_grid`` + ``grid_sample``.
rotate     ``angle`` in degrees, in ``[-15, 15]``: rotation via ``affine_grid`` + ``grid_sample``.
=========  =================================================================================

With the same drawn values, every op gives the reference's output (checked against its
``DiffAugment`` on torch 2.13: exact for color, crop, cutout, flip, scale; rotate within 2e-6).

Each value is a 0-d tensor (one draw shared by the whole batch: Siamese mode), or, with
``sample_params(..., per_sample=N)``, a tensor of N draws, one per image: the reference's
non-Siamese mode, which it uses when it trains evaluation networks with DSA augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medcondense.errors import ConfigError

AUG_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
# The reference's ParamDiffAug defaults.
DSA_RATIOS = dict(scale=1.2, rotate=15.0, crop=0.125, cutout=0.5, brightness=1.0, saturation=2.0, contrast=0.5)
FLIP_PROBABILITY = 0.5


@dataclass
class AugParams:
    """One sampled op and its parameters, shared by the real and the synthetic batch.

    Parameters
    ----------
    op : one of :data:`AUG_OPS`
    values : parameter name -> tensor (0-d for one shared draw, or [N] for one draw per image)
    """

    op: str
    values: dict[str, torch.Tensor]

    def as_record(self) -> dict:
        """A JSON-friendly copy (floats, lists) so a run can log or replay its augmentations."""
        return {"op": self.op, "values": {k: v.detach().cpu().tolist() for k, v in self.values.items()}}


def validate_ops(ops: str | Iterable[str]) -> list[str]:
    """Check op names; return them as a list without duplicates (order kept).

    ``ops`` may be a list or a comma-separated string (``"color,crop,scale"``).
    Raises :class:`ConfigError` naming the valid ops for an unknown name or an empty list.
    """
    names = ops.split(",") if isinstance(ops, str) else list(ops)
    cleaned: list[str] = []
    for name in (str(n).strip().lower() for n in names):
        if not name:
            continue
        if name not in AUG_OPS:
            raise ConfigError(f"unknown augmentation {name!r}; valid ones are {', '.join(AUG_OPS)}")
        if name not in cleaned:
            cleaned.append(name)
    if not cleaned:
        raise ConfigError(f"no augmentation ops given; choose from {', '.join(AUG_OPS)}")
    return cleaned


def default_ops(laterality: bool) -> list[str]:
    """All of :data:`AUG_OPS`, but without ``flip`` when left/right carries meaning."""
    return [op for op in AUG_OPS if not (laterality and op == "flip")]


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    # Draw on the generator's own device (a CPU generator cannot fill a CUDA tensor).
    return torch.rand(shape, generator=generator, device=generator.device) * (high - low) + low


def _draw_values(op: str, generator: torch.Generator, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    r = DSA_RATIOS
    if op == "color":
        # Independent draws, as the reference re-seeds with an incremented seed before each.
        return {
            "brightness": _uniform(generator, shape, -0.5, 0.5) * r["brightness"],
            "saturation": _uniform(generator, shape, 0.0, 1.0) * r["saturation"],
            "contrast": _uniform(generator, shape, 0.0, 1.0) + r["contrast"],
        }
    if op in ("crop", "cutout"):
        return {"u_x": _uniform(generator, shape, 0.0, 1.0), "u_y": _uniform(generator, shape, 0.0, 1.0)}
    if op == "flip":
        return {"flip": _uniform(generator, shape, 0.0, 1.0) < FLIP_PROBABILITY}
    if op == "scale":
        low, high = 1.0 / r["scale"], r["scale"]
        return {"sx": _uniform(generator, shape, low, high), "sy": _uniform(generator, shape, low, high)}
    if op == "rotate":
        return {"angle": _uniform(generator, shape, -r["rotate"], r["rotate"])}
    raise ConfigError(f"unknown augmentation {op!r}; valid ones are {', '.join(AUG_OPS)}")


def sample_params(
    ops: list[str],
    generator: torch.Generator,
    device: torch.device | str | None = None,
    *,
    per_sample: int | None = None,
) -> AugParams:
    """Pick one op of ``ops`` and draw its parameters (the reference's mode ``'S'``).

    Parameters
    ----------
    ops : op names (see :data:`AUG_OPS`)
    generator : the source of randomness; the same seed gives the same draws
    device : where the parameter tensors should live (default: the generator's device)
    per_sample : ``None`` for one draw shared by the whole batch (Siamese); an int N for N
        independent draws, one per image of a batch of N (used when training evaluation nets)
    """
    if not ops:
        raise ConfigError(f"no augmentation ops given; choose from {', '.join(AUG_OPS)}")
    choice = int(torch.randint(len(ops), (1,), generator=generator, device=generator.device).item())
    shape = () if per_sample is None else (per_sample,)
    values = _draw_values(ops[choice], generator, shape)
    target = generator.device if device is None else torch.device(device)
    return AugParams(ops[choice], {k: v.to(target) for k, v in values.items()})


def _per_image(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A 0-d or [N] parameter as a [N or 1, 1, 1, 1] tensor that broadcasts over ``x``."""
    return value.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)


def _color(x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
    x = x + _per_image(v["brightness"], x)
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * _per_image(v["saturation"], x) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * _per_image(v["contrast"], x) + image_mean


def _unit_to_int(u: torch.Tensor, count: int, device: torch.device) -> torch.Tensor:
    """Map u in [0, 1) to an integer in [0, count) (same law as ``randint(0, count)``)."""
    return torch.clamp((u.to(device) * count).floor().long(), 0, count - 1).reshape(-1, 1, 1)


def _crop(x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
    n, _, h, w = x.shape
    shift_h, shift_w = int(h * DSA_RATIOS["crop"] + 0.5), int(w * DSA_RATIOS["crop"] + 0.5)
    tx = _unit_to_int(v["u_x"], 2 * shift_h + 1, x.device) - shift_h
    ty = _unit_to_int(v["u_y"], 2 * shift_w + 1, x.device) - shift_w
    # out[i, j] = x[i + tx, j + ty], zero where that falls outside the image (the reference's
    # pad-by-one + clamp does the same). Gather by index so each image may have its own shift.
    rows = torch.arange(h, device=x.device).view(1, h, 1) + tx
    cols = torch.arange(w, device=x.device).view(1, 1, w) + ty
    inside = ((rows >= 0) & (rows < h)) & ((cols >= 0) & (cols < w))
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    moved = x.permute(0, 2, 3, 1)[batch, rows.clamp(0, h - 1), cols.clamp(0, w - 1)].permute(0, 3, 1, 2)
    return moved * inside.unsqueeze(1).to(x.dtype)


def _cutout(x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
    _, _, h, w = x.shape
    size_h, size_w = int(h * DSA_RATIOS["cutout"] + 0.5), int(w * DSA_RATIOS["cutout"] + 0.5)
    # Offsets as in the reference: randint(0, size + (1 - cut % 2)), square starts at offset - cut // 2.
    top = _unit_to_int(v["u_x"], h + (1 - size_h % 2), x.device) - size_h // 2
    left = _unit_to_int(v["u_y"], w + (1 - size_w % 2), x.device) - size_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def _flip(x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.where(v["flip"].to(x.device).reshape(-1, 1, 1, 1), x.flip(3), x)


def _affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` with the 2x2 matrix [[a, b], [c, d]] (no translation), as the reference does."""
    n = x.shape[0]
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([a, b, zero], -1), torch.stack([c, d, zero], -1)], -2)
    theta = theta.to(device=x.device, dtype=x.dtype).reshape(-1, 2, 3).expand(n, 2, 3)
    # align_corners=False and zero padding: the reference's (torch default) settings.
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _scale(x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
    sx, sy = v["sx"], v["sy"].to(v["sx"].device)
    zero = torch.zeros_like(sx)
    return _affine(x, sx, zero, zero, sy)


def _rotate(x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
    radians = v["angle"] * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    return _affine(x, cos, -sin, sin, cos)


_APPLY = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip, "scale": _scale, "rotate": _rotate}


def apply_aug(x: torch.Tensor, params: AugParams) -> torch.Tensor:
    """Apply ``params`` to a batch ``x`` [N, C, H, W]; differentiable with respect to ``x``.

    With shared (0-d) parameters any batch size works, and images are transformed independently
    of the batch they are in; with per-image parameters the batch must have that many images.
    """
    try:
        fn = _APPLY[params.op]
    except KeyError:
        raise ConfigError(f"unknown augmentation {params.op!r}; valid ones are {', '.join(AUG_OPS)}") from None
    if x.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
    return fn(x, params.values).contiguous()


class SiameseAugment(nn.Module):
    """A thin module around :func:`sample_params` / :func:`apply_aug` (kornia-style).

    Usage in a matching step::

        aug = SiameseAugment(default_ops(laterality))
        params = aug.sample(generator, device)
        loss = match(net(aug(real, params)), net(aug(syn, params)))
    """

    def __init__(self, ops: str | Iterable[str] = AUG_OPS):
        super().__init__()
        self.ops = validate_ops(ops)

    def sample(self, generator: torch.Generator, device: torch.device | str | None = None) -> AugParams:
        """One shared draw for the next real/synthetic pair."""
        return sample_params(self.ops, generator, device)

    def forward(self, x: torch.Tensor, params: AugParams) -> torch.Tensor:
        return apply_aug(x, params)

    def random_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One op, per-image draws (the reference's training-time DSA); fits ``train.Augment``."""
        return apply_aug(x, sample_params(self.ops, generator, x.device, per_sample=x.shape[0]))

    def extra_repr(self) -> str:
        return f"ops={self.ops}"
