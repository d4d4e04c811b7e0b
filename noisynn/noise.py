"""Noise distributions: the ``NoiseDistribution`` base class, its registry, and built-ins.

A distribution draws i.i.d. samples with a *scale* in weight units. Every built-in is a
location-scale family centred at zero, ``sample(shape, s) == s * sample(shape, 1)``, which lets
the injector draw one unit-scale tensor per trial and reuse it at every noise level (common
random numbers). A user class that is not location-scale sets ``location_scale = False`` and
is sampled afresh at each level.

Register a class with the decorator ``@register_noise("name")`` or, as in the original
toolkit, by plain assignment ``NOISE_REGISTRY["name"] = MyNoise``.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch

from .errors import NoisyNNError
from .seeding import derive_seed


class NoiseDistribution:
    """Base class: subclasses implement ``sample(shape, scale, device, generator=None)``.

    ``params`` passed to the constructor (e.g. ``df`` for Student's t) are stored and
    recorded in ``run.json``.
    """

    name: str = "base"
    location_scale: bool = True

    def __init__(self, **params):
        self.params = dict(params)

    def sample(self, shape, scale, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    # The injector's extension point: ``program`` once per realization and tensor, ``weights`` at each
    # level. The defaults are the additive model W = W_clean + level * unit * Z; physical device models
    # (noisynn.devices) override both to program conductances once and read them at any level or time.

    def program(self, clean: torch.Tensor, unit, generator: torch.Generator, out_axis: int = 0):
        """Per-tensor state of one realization, drawn once by ``NoiseInjector.draw(seed)``.

        Default: the unit-scale draw Z (reused at every level), or None for a class that is not
        location-scale (then sampled afresh at each level by ``weights``).
        """
        if not self.location_scale:
            return None
        return draw(self, clean.shape, 1.0, clean.device, generator).to(clean.dtype)

    def weights(self, clean: torch.Tensor, state, level: float, unit, generator: torch.Generator,
                out: torch.Tensor) -> None:
        """Write the tensor at ``level`` into ``out``, computed from the clean snapshot (never stacked).

        Default: ``W_clean + level * unit * Z``; ``generator`` (seeded from the realization, the tensor
        and the level) serves classes that draw afresh at each level.
        """
        if state is None:  # not location-scale: sample at this level
            state, level = draw(self, clean.shape, level, clean.device, generator).to(clean.dtype), 1.0
        if isinstance(unit, torch.Tensor):
            torch.addcmul(clean, state, unit * level, out=out)
        elif abs(level * unit) <= torch.finfo(clean.dtype).max:
            torch.add(clean, state, alpha=level * unit, out=out)
        else:  # beyond the dtype's range torch refuses the scalar; the weights overflow to inf instead
            torch.add(clean, state * (level * unit), out=out)

    def describe(self) -> dict:
        return {"name": self.name, "class": type(self).__qualname__, "params": self.params,
                "location_scale": self.location_scale}


def is_additive(noise: NoiseDistribution) -> bool:
    """True for W = W_clean + level * unit * Z (the built-ins and user classes); False for device models."""
    return type(noise).weights is NoiseDistribution.weights


NOISE_REGISTRY: dict[str, type[NoiseDistribution]] = {}


def register_noise(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register_noise("laplacian")``. Duplicate names and non-subclasses raise."""

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, NoiseDistribution)):
            raise TypeError(f"cannot register {cls!r} as noise '{name}': it is not a NoiseDistribution subclass")
        if name in NOISE_REGISTRY and NOISE_REGISTRY[name] is not cls:
            raise ValueError(f"noise '{name}' is already registered ({NOISE_REGISTRY[name].__qualname__})")
        cls.name = name
        NOISE_REGISTRY[name] = cls
        return cls

    return decorator


def get_noise(name: str | NoiseDistribution, **params) -> NoiseDistribution:
    """An instance of the registered noise ``name`` (an instance passes through unchanged)."""
    if isinstance(name, NoiseDistribution):
        return name
    if name not in NOISE_REGISTRY:
        known = ", ".join(sorted(NOISE_REGISTRY))
        raise NoisyNNError(f"unknown noise type '{name}'; known: {known} (add your own with --plugin FILE)")
    cls = NOISE_REGISTRY[name]
    if not (isinstance(cls, type) and issubclass(cls, NoiseDistribution)):
        raise NoisyNNError(f"NOISE_REGISTRY['{name}'] is {cls!r}, not a NoiseDistribution subclass")
    accepted = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    usable = {k: v for k, v in params.items() if v is not None and (takes_kwargs or k in accepted)}
    instance = cls(**usable)
    if not hasattr(instance, "params"):  # a subclass whose __init__ skipped ours
        instance.params = usable
    if getattr(instance, "name", "base") in ("base", None) or instance.name != name:
        instance.name = name
    return instance


def draw(noise: NoiseDistribution, shape, scale, device, generator: torch.Generator) -> torch.Tensor:
    """``noise.sample`` with a generator, also for user classes whose ``sample`` takes none.

    For those, the global torch RNG is forked and seeded from ``generator``, so the draw is
    still reproducible and leaves global state untouched.
    """
    # Sample where the generator lives (the injector's are on the CPU), then move: the same seed
    # gives the same noise whether a weight sits on a GPU, the CPU, or is split across both.
    where = generator.device
    if "generator" in inspect.signature(noise.sample).parameters:
        return noise.sample(shape, scale, where, generator=generator).to(device)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=where).item())
    devices = [where] if where.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return noise.sample(shape, scale, where).to(device)


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

    def __init__(self, df: float = 3.0, **params):
        if not (math.isfinite(df) and df > 0):
            raise NoisyNNError(f"student_t needs df > 0, got {df}")
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


# The physical device models register themselves in the same registry (imported last: it
# subclasses NoiseDistribution).
from . import devices  # noqa: E402,F401
