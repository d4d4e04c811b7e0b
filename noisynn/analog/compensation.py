"""Global drift compensation as aihwkit does it: one factor per tile, measured through the tile, after the ADC.

aihwkit (commit 4545f11): at programming the inference tile sends its drift read-out probe, the one-hot vectors
``eye(in_size)``, through its own noisy analog forward and keeps r_ref = mean|y| (``inference/compensation/
base.py`` ``init_baseline`` l.25-39, ``drift.py`` ``GlobalDriftCompensation.readout`` l.28-38: clamped at 1e-4);
after each drift it sends the same probe through the drifted weights, alpha = r_ref / mean|y_t| (``base.py``
``apply`` l.55-61, ``simulator/tiles/inference.py`` ``drift_weights`` l.255-266), and multiplies the tile's output
by alpha in evaluation, after the ADC (``inference.py`` ``post_forward`` l.268-282). Tiles are separate
``InferenceTile`` objects, so each has its own factor.

Here (``compensation_method = "readout"`` of a device model that offers ``programmed_weights``):
  a layer with converters (noisynn.analog.hooks): per tile, r_ref from W_prog (once per realization: seed and
  level), r_t from the current weights, both through ``converters.tile_readout`` (noise, ADC and bound
  management included, fresh draws seeded by layer and read time); alpha multiplies that tile's output after
  the ADC (``AnalogLayer.alpha``).
  a layer without converters: the readout of a noiseless linear map is exact, mean_j |W e_j| = sum|W| / n, so
  alpha = sum|W_prog| / sum|W_t| per tile block (the device model's ``tile_size``), folded into the block.
"""

from __future__ import annotations

import torch

from .mvm import tile_readout
from .hooks import ConverterHooks
from ..seeding import derive_seed, make_generator


def uses_readout(noise) -> bool:
    """True when ``noise`` asks for aihwkit's readout compensation (else it compensates itself, or not at all)."""
    return (bool(getattr(noise, "drift_compensation", False))
            and getattr(noise, "compensation_method", None) == "readout" and hasattr(noise, "programmed_weights"))


class ReadoutCompensation:
    """Per-tile drift compensation of one NoiseInjector's targets (and of its converters, when attached).

    ``apply_target(injector, target, clean, state, level)`` runs after the injector has written one target's
    uncompensated W_t; it sets a converter layer's ``alpha`` (n_in, n_out) or folds the exact per-block factor
    into another target. The injector calls ``clear`` before its first target. ``factors``:
    the mean alpha of each target at the last apply (also written to the device state's ``alpha``).
    """

    def __init__(self, converters: ConverterHooks | None = None):
        self.converters = converters
        self._baseline: dict[str, tuple] = {}  # target name -> ((seed, level), reference readout)
        self.factors: dict[str, float] = {}

    def clear(self) -> None:
        """Factors back to 1 (clean weights restored, or compensation off)."""
        if self.converters is not None:
            for layer in self.converters.layers:
                layer.alpha = None
        self.factors = {}

    def _layer(self, target):
        if self.converters is None or not target.name.endswith(".weight"):
            return None
        return self.converters.by_name.get(target.name[: -len(".weight")])

    @torch.no_grad()
    def apply_target(self, injector, t, clean: torch.Tensor, state, level: float) -> None:
        """Compensate target ``t`` just written (uncompensated W_t) by the injector from ``clean`` and ``state``."""
        noise = injector.noise
        if not uses_readout(noise) or level == 0:
            return
        seed = injector.seed
        when = repr(float(getattr(noise, "t_seconds", 0.0)))
        layer = self._layer(t)
        key = (seed, float(level))
        cached = self._baseline.get(t.name)
        if layer is not None:
            if cached is None or cached[0] != key:
                w_prog = noise.programmed_weights(clean, state, level)
                w_prog = w_prog if t.out_axis == 0 else w_prog.t()
                ref = tile_readout(w_prog.to(clean.dtype), layer.io, scales=layer.scales,
                                   generator=_generator(seed, t.name, "baseline", device=clean.device))
                cached = self._baseline[t.name] = (key, ref)
                del w_prog
            current = tile_readout(layer.weight().detach(), layer.io, scales=layer.scales,
                                   generator=_generator(seed, t.name, "readout", when, device=clean.device))
            layer.alpha = cached[1] / current
            alpha = float(layer.alpha.mean())
        else:
            from ..tiling import tile_index

            blocks = tile_index(clean.shape, getattr(noise, "tile_size", (0, 0)), t.out_axis)
            if cached is None or cached[0] != key:
                w_prog = noise.programmed_weights(clean, state, level)
                cached = self._baseline[t.name] = (key, [_l1(w_prog[idx]) for idx in blocks])
                del w_prog
            w = t.param.data
            alphas = []
            for idx, ref in zip(blocks, cached[1]):
                cur = _l1(w[idx])
                alphas.append(ref / cur if cur > 0 else 1.0)
                if alphas[-1] != 1.0:
                    w[idx] *= alphas[-1]
            alpha = sum(alphas) / len(alphas)
        self.factors[t.name] = alpha
        if hasattr(state, "alpha"):
            state.alpha = alpha


def _l1(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x, 1, dtype=torch.float64))


def _generator(seed, *keys, device) -> torch.Generator:
    return make_generator(derive_seed(seed, "drift-compensation", *keys), device)
