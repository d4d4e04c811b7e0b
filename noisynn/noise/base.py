"""The ``NoiseDistribution`` base class, its registry, and the additive update written once.

A distribution draws i.i.d. samples with a *scale* in weight units. Every built-in is a
location-scale family centred at zero, ``sample(shape, s) == s * sample(shape, 1)``, which lets
the injector draw one unit-scale tensor per trial and reuse it at every noise level (common
random numbers). A user class that is not location-scale sets ``location_scale = False`` and
is sampled afresh at each level.

Register a class with the decorator ``@register_noise("name")`` or, as in the original
toolkit, by plain assignment ``NOISE_REGISTRY["name"] = MyNoise`` (which may replace a built-in).
The original toolkit's classes declare ``name`` as a read-only property and ``sample(shape,
scale, device)`` without a generator; both work here.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from ..errors import NoisyNNError, UnknownNameError


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
    # (noisynn.noise.pcm, .faults, .quantize) override both to program conductances once and read them.

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
        z, level = unit_draw(self, state, clean, level, generator)
        add_scaled(clean, z, level, unit, out)

    def describe(self) -> dict:
        return {"name": self.name, "class": type(self).__qualname__, "params": getattr(self, "params", {}),
                "location_scale": self.location_scale}


def is_additive(noise: NoiseDistribution) -> bool:
    """True for W = W_clean + level * unit * Z (the built-ins and user classes); False for device models."""
    return type(noise).weights is NoiseDistribution.weights


def unit_draw(noise: NoiseDistribution, state, clean: torch.Tensor, level: float, generator: torch.Generator):
    """(Z, factor) with ``level * u * Z == factor * u * Z_used``: the stored unit draw, or for a class that is
    not location-scale (``state`` None) a draw at scale ``level`` with factor 1."""
    if state is not None:
        return state, level
    return draw(noise, clean.shape, level, clean.device, generator).to(clean.dtype), 1.0


def add_scaled(base: torch.Tensor, z: torch.Tensor, level: float, unit, out: torch.Tensor) -> None:
    """The additive update, ``out = base + level * unit * z`` (``unit``: a number or a per-channel tensor).

    ``out`` may be ``base`` itself (an in-place step, as temporal_drift's random walk takes).
    """
    if isinstance(unit, torch.Tensor):
        torch.addcmul(base, z, unit * level, out=out)
    elif abs(level * unit) <= torch.finfo(base.dtype).max:
        torch.add(base, z, alpha=level * unit, out=out)
    else:  # beyond the dtype's range torch refuses the scalar; the weights overflow to inf instead
        torch.add(base, z * (level * unit), out=out)


NOISE_REGISTRY: dict[str, type[NoiseDistribution]] = {}


def register_noise(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register_noise("laplacian")``. Duplicate names and non-subclasses raise.

    The same class registered again (a plugin file loaded twice) is not a duplicate: a class with the
    same qualified name from a module of the same file replaces the earlier one.
    """

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, NoiseDistribution)):
            raise TypeError(f"cannot register {cls!r} as noise '{name}': it is not a NoiseDistribution subclass")
        old = NOISE_REGISTRY.get(name)
        if old is not None and old is not cls and not _same_source(old, cls):
            raise ValueError(f"noise '{name}' is already registered ({old.__qualname__})")
        if not isinstance(inspect.getattr_static(cls, "name", None), property):
            cls.name = name
        NOISE_REGISTRY[name] = cls
        return cls

    return decorator


def _same_source(a: type, b: type) -> bool:
    """Two classes of one qualified name defined in the same file (that file imported twice)."""
    try:
        return a.__qualname__ == b.__qualname__ and inspect.getfile(a) == inspect.getfile(b)
    except (TypeError, OSError):
        return False


def noise_parameters(noise) -> frozenset | None:
    """The named parameters of the constructor of noise ``noise`` (a registered name, a class or an instance) and
    of its bases'; None when unknown: not registered, or a user class that takes any (``**kwargs``). The built-ins
    pass ``**params`` on to ``NoiseDistribution`` to be recorded; their named parameters are the ones they use."""
    cls = NOISE_REGISTRY.get(noise) if isinstance(noise, str) else noise if isinstance(noise, type) else type(noise)
    if not (isinstance(cls, type) and issubclass(cls, NoiseDistribution)):
        return None
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass in (NoiseDistribution, object):
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind is p.VAR_KEYWORD for p in params) and not klass.__module__.startswith(__package__ + "."):
            return None
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self")
    return frozenset(names)


def get_noise(name: str | NoiseDistribution, **params) -> NoiseDistribution:
    """An instance of the registered noise ``name`` (an instance passes through unchanged).

    A class whose ``__init__`` raises becomes one NoisyNNError line naming the class.
    """
    if isinstance(name, NoiseDistribution):
        return name
    if name not in NOISE_REGISTRY:
        known = ", ".join(sorted(NOISE_REGISTRY))
        # a ValueError too, as the original toolkit's get_noise_distribution raised
        raise UnknownNameError(f"unknown noise type '{name}'; known: {known} "
                               "(register your own in NOISE_REGISTRY, or with --plugin FILE)")
    cls = NOISE_REGISTRY[name]
    if not (isinstance(cls, type) and issubclass(cls, NoiseDistribution)):
        raise NoisyNNError(f"NOISE_REGISTRY['{name}'] is {cls!r}, not a NoiseDistribution subclass")
    accepted = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    usable = {k: v for k, v in params.items() if v is not None and (takes_kwargs or k in accepted)}
    try:
        instance = cls(**usable)
        getattr(instance, "name", None)  # a user's ``name`` property runs here, not first in run.json's describe()
    except NoisyNNError:
        raise
    except (Exception, SystemExit) as err:  # a user class can raise anything (sys.exit too); report it in one line
        raise NoisyNNError(f"noise '{name}' ({cls.__qualname__}) failed to initialise: "
                           f"{type(err).__name__}: {err}") from None
    if not hasattr(instance, "params"):  # a subclass whose __init__ skipped ours
        instance.params = usable
    # The original toolkit's classes declare ``name`` as a read-only property (a display name): keep it.
    if not isinstance(inspect.getattr_static(cls, "name", None), property):
        if getattr(instance, "name", "base") in ("base", None) or instance.name != name:
            instance.name = name
    return instance


def draw(noise: NoiseDistribution, shape, scale, device, generator: torch.Generator) -> torch.Tensor:
    """``noise.sample`` with a generator, also for user classes whose ``sample`` takes none; checked.

    For those, the global torch RNG is forked and seeded from ``generator``, so the draw is
    still reproducible and leaves global state untouched. Every sample is checked against the
    request (a floating torch.Tensor of ``shape``): a wrong but broadcastable shape would
    otherwise be used silently.
    """
    # Sample where the generator lives (the injector's are on the CPU), then move: the same seed
    # gives the same noise whether a weight sits on a GPU, the CPU, or is split across both.
    where = generator.device
    try:
        if "generator" in inspect.signature(noise.sample).parameters:
            z = noise.sample(shape, scale, where, generator=generator)
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=where).item())
            devices = [where] if where.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                z = noise.sample(shape, scale, where)
    except NoisyNNError:
        raise
    except (Exception, SystemExit) as err:  # a user class can raise anything; sys.exit must not end the run with 0
        raise NoisyNNError(f"{_label(noise)}.sample failed: {type(err).__name__}: {err}") from None
    check_sample(noise, z, shape, where)
    return z.to(device)


def _label(noise: NoiseDistribution) -> str:
    return f"noise class {type(noise).__qualname__}"


def check_sample(noise: NoiseDistribution, z, shape, device) -> None:
    """A sample must be a floating torch.Tensor of exactly ``shape`` on ``device``; else one line naming the class."""
    want = tuple(int(s) for s in shape)
    if not isinstance(z, torch.Tensor):
        raise NoisyNNError(f"{_label(noise)}.sample returned {type(z).__name__}, not a torch.Tensor "
                           f"(shape {want} requested)")
    if tuple(z.shape) != want:
        raise NoisyNNError(f"{_label(noise)}.sample returned shape {tuple(z.shape)}, requested {want}")
    if not z.is_floating_point():
        raise NoisyNNError(f"{_label(noise)}.sample returned dtype {z.dtype}, not a floating-point tensor")
    if z.device != torch.device(device):
        raise NoisyNNError(f"{_label(noise)}.sample returned a tensor on {z.device}, requested {torch.device(device)}")
    if torch.isnan(z).any():  # 0 x nan is nan: even the clean level (sigma 0) would be broken
        raise NoisyNNError(f"{_label(noise)}.sample returned NaN values")
