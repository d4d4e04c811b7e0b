"""The built-in additive distributions: gaussian, uniform, cauchy, laplacian, student_t.

Each is a location-scale family centred at zero, ``sample(shape, s) == s * sample(shape, 1)``;
``scale`` is in weight units (times the layer's unit under a relative ``--scale``).
"""

from __future__ import annotations

import math

import torch

from ..errors import NoisyNNError
from ..seeding import derive_seed
from ..analog.fields import default, float32_error
from .base import NoiseDistribution, register_noise


def _uniform_open(shape, device, generator) -> torch.Tensor:
    """Uniform on (0, 1), never exactly 0 (safe under log and tan)."""
    u = torch.rand(shape, device=device, generator=generator)
    return u.clamp_(min=torch.finfo(u.dtype).tiny)


@register_noise("gaussian")
class GaussianNoise(NoiseDistribution):
    """N(0, scale^2): ``scale`` is the standard deviation, in weight units."""

    def sample(self, shape, scale, device=None, generator=None):
        return torch.randn(shape, device=device, generator=generator).mul_(scale)


@register_noise("uniform")
class UniformNoise(NoiseDistribution):
    """U(-scale, +scale): ``scale`` is the half-width (std = scale / sqrt(3))."""

    def sample(self, shape, scale, device=None, generator=None):
        return torch.rand(shape, device=device, generator=generator).mul_(2.0).sub_(1.0).mul_(scale)


@register_noise("cauchy")
class CauchyNoise(NoiseDistribution):
    """Cauchy(0, scale): ``scale`` is the half-width at half-maximum (no finite variance)."""

    def sample(self, shape, scale, device=None, generator=None):
        return _uniform_open(shape, device, generator).sub_(0.5).mul_(math.pi).tan_().mul_(scale)


@register_noise("laplacian")
class LaplacianNoise(NoiseDistribution):
    """Laplace(0, b = scale): density exp(-|x|/b) / 2b, std = sqrt(2) * scale."""

    def sample(self, shape, scale, device=None, generator=None):
        # Difference of two Exp(1) variables is Laplace(0, 1).
        e1 = _uniform_open(shape, device, generator).log_().neg_()
        e2 = _uniform_open(shape, device, generator).log_().neg_()
        return e1.sub_(e2).mul_(scale)


@register_noise("student_t")
class StudentTNoise(NoiseDistribution):
    """scale * T_df, Student's t with ``df`` degrees of freedom (default 3); std = scale sqrt(df/(df-2))."""

    def __init__(self, df: float = default("df"), **params):
        if not (math.isfinite(df) and df > 0):
            raise NoisyNNError(f"student_t needs df > 0, got {df}")
        degenerate = float32_error(float(df))  # df 1e-300 is 0 in float32: the draw would be exactly zero
        if degenerate:
            raise NoisyNNError(f"student_t df {degenerate}")
        super().__init__(df=float(df), **params)
        self.df = float(df)

    def sample(self, shape, scale, device=None, generator=None):
        # T = Z / sqrt(V / df), V ~ chi2(df) = Gamma(df/2, scale 2). torch's gamma sampler takes
        # no generator, so seed a forked global stream from ours.
        z = torch.randn(shape, device=device, generator=generator)
        seed = derive_seed(int(torch.randint(0, 2**62, (1,), generator=generator).item()), "chi2")
        devices = [device] if device is not None and torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            chi2 = torch._standard_gamma(torch.full(tuple(shape), self.df / 2, device=device)).mul_(2.0)
        return z.div_(chi2.div_(self.df).sqrt_()).mul_(scale)
