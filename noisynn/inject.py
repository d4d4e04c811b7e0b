"""How noise is scaled, applied to the targeted weights (noisynn.targets) and undone: NoiseInjector, inject_thermal_noise.

Noise is always computed from the clean weights (as aihwkit does), so levels never stack: at level
``sigma`` a targeted weight is

    W_noisy = W_clean + sigma * u * Z

where ``Z`` is a unit-scale draw of the chosen distribution and ``u`` is the layer's unit
(``absolute``: 1, in weight units; ``relative``: std(W_clean); ``relative_max``: max|W_clean|
over the tensor; ``relative_channel``: max|W_clean| over each output channel, as analog arrays
map one row of conductances). Each layer's ``Z`` comes from its own generator seeded from
(seed, layer name), so noise does not depend on the order in which layers are visited.

Memory: the model plus one tensor's working set. The clean weights and each seed's unit draws wait outside
it (noisynn.clean_weights); device states are formed again from their seed at every ``apply``, per tensor.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterable, Sequence

import torch
from torch import nn

from .clean_weights import CleanWeights, Scratch
from .analog.compensation import ReadoutCompensation
from .errors import NoisyNNError
from .noise import NoiseDistribution, add_scaled, draw, is_additive, unit_draw
from .seeding import derive_seed, make_generator
from .spec import SCALES, NoiseSpec, make_noise_spec
from .targets import Target, count_blocks, is_tied, original_targets, scheduled_block, select


def unit_scale(clean: torch.Tensor, scale: str, out_axis: int = 0) -> torch.Tensor | float:
    """The factor ``u`` that turns sigma into weight units for one tensor (see module doc)."""
    if scale == "absolute":
        return 1.0
    w = clean.detach().float()
    if scale == "relative":
        return float(w.std())
    if scale == "relative_max" or w.dim() < 2:
        return float(w.abs().max())
    if scale == "relative_channel":
        dims = [d for d in range(w.dim()) if d != out_axis]
        return w.abs().amax(dim=dims, keepdim=True).to(clean.dtype)
    raise NoisyNNError(f"unknown scale '{scale}'; known: {', '.join(SCALES)}")


def resolve_schedule(spec: NoiseSpec, model: nn.Module, targets: Sequence[Target]) -> NoiseSpec:
    """``spec`` with its layer schedule's per-block multipliers fixed (``spec.multipliers``), normalized over
    ``targets`` (their element counts per block) on ``model``'s depth; unchanged without a schedule or when
    already fixed. A table of the wrong length is refused here, in one line, before a run folder is touched."""
    if spec.schedule is None or spec.multipliers is not None:
        return spec
    n_blocks = count_blocks(model)
    if n_blocks == 0:
        raise NoisyNNError(f"a layer schedule needs transformer blocks; {type(model).__name__} has none")
    per_block: dict[int, int] = {}
    for t in targets:
        b = scheduled_block(t)
        if b is not None:
            per_block[b] = per_block.get(b, 0) + t.numel
    return replace(spec, multipliers=spec.schedule.multipliers(n_blocks, per_block))


def schedule_record(spec: NoiseSpec) -> dict | None:
    """What run.json records of a resolved layer schedule (None without one): the schedule and the multipliers
    used per block (non-block targets: 1)."""
    if spec.schedule is None:
        return None
    return {**spec.schedule.record(), "n_blocks": len(spec.multipliers or ()),
            "multipliers": list(spec.multipliers or ()), "non_block_targets": 1.0}


class NoiseInjector:
    """Applies noise to a model's targeted weights, and restores them exactly.

    Usage: ``NoiseInjector(model, spec)``; ``realize(seed, sigma)`` at each point (``draw(seed)`` picks the
    realization, ``apply(sigma)`` writes it: every level of a seed has the same unit draws), then ``restore()``.
    Memory: see the module doc. Device models (``pcm``, ``stuck_at``) accept only their ``scales``.
    """

    def __init__(self, model: nn.Module, spec: NoiseSpec | str | NoiseDistribution = "gaussian",
                 scale: str = "absolute", targets: str | Sequence[str] = "blocks", blocks: Iterable[int] | None = None,
                 include_bias: bool = False, noise_params: dict | None = None, *,
                 selected: Sequence[Target] | None = None, clean_weights: str = "auto"):
        """``NoiseInjector(model, spec)`` (or the keyword form ``NoiseInjector(model, "gaussian", "absolute",
        "blocks", ...)``: the same checks); ``selected``: its targets already selected on this model;
        ``clean_weights``: where the clean weights wait (auto, disk, cpu, memory; noisynn.clean_weights)."""
        if not isinstance(spec, NoiseSpec):
            spec = make_noise_spec(spec, noise_params, scale, targets, blocks, include_bias)
        self.targets = list(selected) if selected is not None else select(model, spec)
        spec = resolve_schedule(spec, model, self.targets)  # per-block multipliers, unless the spec has them
        self.model, self.spec = model, spec
        self._base_spec = spec  # set_mapping's params replace this spec's, never a previous mapping's
        self.noise = spec.noise
        self.scale = spec.scale
        self.units = self._units()
        self.clean = CleanWeights([t.param for t in self.targets], clean_weights)
        self._states: list | None = None
        self._draws: CleanWeights | None = None  # the current seed's unit draws, kept beside the clean weights
        # Kept unless they would cross to the GPU from host memory: its own stream draws them faster than that.
        self._keep_draws = not (spec.draw_on == "device" and self.clean.where == "cpu")
        self.seed: int | None = None
        self.compensation = ReadoutCompensation()

    def _units(self, clean=None) -> list:
        """Each target's unit u, from ``clean`` (the clean store) or, at construction, the weights themselves."""
        tensors = clean if clean is not None else (t.param for t in self.targets)
        return [unit_scale(c, self.spec.scale, t.out_axis) for c, t in zip(tensors, self.targets)]

    def attach(self, converters) -> "NoiseInjector":
        """Let drift compensation measure through these ``ConverterHooks`` (None: none), as aihwkit's tiles do:
        with a device model's ``compensation_method = "readout"``, each ``apply`` then sets a factor per tile of
        every converter layer (applied after its ADC) and folds the exact per-tile factor into the other targets
        (noisynn.analog.compensation). Other converters drop the cached reference readouts (measured through the old)."""
        if converters is not self.compensation.converters:
            self.compensation.clear()
            self.compensation = ReadoutCompensation(converters)
        self.compensation.clear()
        return self

    def set_mapping(self, scale: str, **params) -> None:
        """Map the same targets another way (an analog preset's device fields): the noise rebuilt with ``params``
        over the spec the injector was built with, units from ``scale``. Nothing changes when both are as they are; otherwise the next
        ``realize`` draws again (the same seed gives the same unit draws: common random numbers across mappings)."""
        merged = {**self._base_spec.params, **params}  # over the spec it was built with, not the last mapping
        if "tile_size" in merged:
            merged["tile_size"] = tuple(merged["tile_size"])
        if scale == self.spec.scale and merged == self.spec.params:
            return
        spec = make_noise_spec(self.spec.noise_type, merged, scale, self.spec.targets, self.spec.blocks,
                               self.spec.include_bias, self.spec.digital, self.spec.schedule)
        self.spec = replace(spec, draw_on=self.spec.draw_on, multipliers=self.spec.multipliers)
        self.noise, self.scale = spec.noise, spec.scale
        self.units = self._units(self.clean)
        self.draw(0)  # drop the kept draws: the rebuilt noise draws again
        self.seed, self._states = None, None
        self.compensation.clear()

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.targets)

    @property
    def states(self) -> list:
        """Each target's state at the last ``apply``, emptied of tensors (a device model keeps its per-read
        statistics there, e.g. ``PCMState.l1_read``; ``state(i)`` forms the whole state again from the seed).
        None for the additive noises, whose state is the unit draw itself."""
        return list(self._states or [])

    def _generator(self, param: torch.Tensor, *keys) -> torch.Generator:
        # A CPU stream by default (``draw`` moves samples to the weight's device), so a model sharded across
        # devices gets the same noise as the same model on one device; ``draw_on="device"``: the weight's own
        # device's stream (fast on a GPU, other numbers than the CPU's: see docs/scaling_out.md).
        where = param.device if self.spec.draw_on == "device" else "cpu"
        return make_generator(derive_seed(self.seed, *keys), where)

    def draw(self, seed: int) -> None:
        """Choose realization ``seed`` (each tensor's ``noise.program`` seeded from it and the tensor's name). Unit
        draws are formed at the first ``apply`` and kept where the clean weights are; device states at each."""
        self.seed = int(seed)
        self._states = [None] * len(self.targets)
        if self._draws is not None:
            self._draws.close()
        self._draws = None

    def state(self, i: int):
        """Target i's whole state for the current seed (e.g. for ``programmed_weights``), formed again."""
        return self._state(i, self.clean[i])

    def _state(self, i: int, clean: torch.Tensor, scratch: torch.Tensor | None = None):
        """Target i's state for the current seed: a kept unit draw (read into ``scratch`` when given), or
        ``noise.program`` (kept when a tensor)."""
        if self._draws is not None and i < len(self._draws):
            return self._draws.read(i, scratch)
        t = self.targets[i]
        state = self.noise.program(clean, self.units[i], self._generator(clean, t.name), t.out_axis)
        if isinstance(state, torch.Tensor) and self._keep_draws:
            if self._draws is None:
                self._draws = CleanWeights([], self.clean.where)
            if len(self._draws) == i:  # targets are visited in order: index i is the i-th tensor kept
                self._draws.append(state)
        return state

    def realize(self, seed: int, sigma: float) -> None:
        """Realization ``seed`` at level ``sigma``: ``draw(seed)`` (when the seed changed), then ``apply(sigma)``."""
        if self.seed != int(seed):
            self.draw(seed)
        self.apply(sigma)

    def level(self, t: Target, sigma: float) -> float:
        """The level target ``t`` gets at ``sigma``: ``sigma * m_b`` under a layer schedule (m_b: its block's
        multiplier; 1 for non-block targets), else ``sigma`` itself (the unscheduled path, bit for bit)."""
        b = scheduled_block(t) if self.spec.multipliers is not None else None
        return sigma if b is None else sigma * self.spec.multipliers[b]

    @torch.no_grad()
    def apply(self, sigma: float) -> None:
        """Every targeted weight at ``sigma`` (``W_clean + sigma * u * Z`` for the built-in distributions), from the
        clean weights, one tensor at a time; exactly ``W_clean`` at 0. Under a layer schedule a target of block b
        gets ``sigma * m_b`` (``level``) whatever sigma means to the noise type: the std multiplier of the additive
        noises and of pcm / pcm_afm, the step of quantize, the fault fraction of stuck_at. The per-level stream
        (read noise, noises drawn afresh at each level) is keyed by that level, so block b under a schedule is
        exactly block b of an unscheduled run at ``sigma * m_b``."""
        if self.seed is None:
            raise RuntimeError("call draw(seed) before apply(sigma)")
        self.compensation.clear()
        scratch = Scratch(self.clean.largest())
        for i, t in enumerate(self.targets):
            w = t.param.data
            level = self.level(t, sigma)
            if level == 0:  # sigma 0, or a block the schedule leaves clean
                self.clean.restore(i, w)
                self._states[i] = None
                continue
            c = self.clean.read(i, scratch.get("clean", w.dtype))
            state = self._state(i, c, scratch.get("draw", w.dtype))
            self.noise.weights(c, state, level, self.units[i], self._generator(c, t.name, float(level)), out=w)
            self.compensation.apply_target(self, t, c, state, level)  # readout drift compensation, if asked for
            self._states[i] = _emptied(state)
            del c, state

    @torch.no_grad()
    def accumulate(self, sigma: float) -> None:
        """Add ``sigma * u * Z`` (the current draw) to the weights *as they are now*: a random-walk step (temporal_drift
        ``--accumulate``). Calls stack: after draws Z_1..Z_k with steps s_1..s_k the weights are
        ``W_clean + u * sum_i s_i Z_i``; ``u`` is the clean weights', and ``restore()`` is still bit-exact.
        Under a layer schedule each step is ``sigma * m_b`` on block b (``level``)."""
        if self.seed is None:
            raise RuntimeError("call draw(seed) before accumulate(sigma)")
        if not is_additive(self.noise):
            raise NoisyNNError(f"accumulating drift needs an additive noise; '{self.noise.name}' is a device model "
                               "(it programs conductances once)")
        if sigma == 0:
            return
        for i, t in enumerate(self.targets):
            w = t.param.data
            if self.level(t, sigma) == 0:  # a block the schedule leaves clean
                continue
            state = self._state(i, w if type(self.noise).program is NoiseDistribution.program else self.clean[i])
            level = self.level(t, sigma)
            z, level = unit_draw(self.noise, state, w, level, self._generator(w, t.name, float(level)))
            add_scaled(w, z, level, self.units[i], out=w)
            del state, z

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the clean weights back: bit-exact (and drop the compensation factors)."""
        for i, t in enumerate(self.targets):
            self.clean.restore(i, t.param.data)
        self.compensation.clear()

    def weight_unit_rms(self) -> float:
        """RMS over targeted elements of the unit u (1 for absolute): sigma * this = noise scale in weight units."""
        total = sq = 0.0
        for t, u in zip(self.targets, self.units):
            sq += float((torch.as_tensor(u, dtype=torch.float32) ** 2).mean()) * t.numel
            total += t.numel
        return (sq / total) ** 0.5

    def describe(self) -> dict:
        """What gets recorded in run.json about the injection."""
        kinds: dict[str, int] = {}
        for t in self.targets:
            kinds[t.cls.kind] = kinds.get(t.cls.kind, 0) + t.numel
        out = {"noise": self.noise.describe(), "scale": self.scale, "n_tensors": len(self.targets),
               "n_params": self.n_params, "params_by_kind": kinds,
               "head_untied": not is_tied(self.model) and any(t.cls.kind == "head" for t in self.targets)}
        if self.spec.schedule is not None:  # absent without a schedule: run.json as before
            out["layer_schedule"] = schedule_record(self.spec)
        return out


def _emptied(state):
    """What ``states`` keeps of one tensor's state: its numbers (e.g. ``l1_read``), none of its tensors."""
    if isinstance(state, torch.Tensor):
        return None
    release = getattr(state, "release", None)
    if callable(release):
        release()
    if dataclasses.is_dataclass(state):
        for f in dataclasses.fields(state):
            if isinstance(getattr(state, f.name), torch.Tensor):
                setattr(state, f.name, None)
    return state


@contextmanager
def noisy_weights(model: nn.Module, noise_level: float, noise_type: str | NoiseDistribution = "gaussian", *,
                  scale: str = "absolute", targets: str | Sequence[str] = "blocks", blocks: Iterable[int] | None = None,
                  include_bias: bool = False, seed: int | None = None, generator: torch.Generator | None = None,
                  noise_params: dict | None = None):
    """Context manager: the model carries noise inside the block, clean weights after it.

    Restores bit-exactly on exit, also when the block raises. Yields the ``NoiseInjector``.
    """
    injector = NoiseInjector(model, noise_type, scale, targets, blocks, include_bias, noise_params)
    try:
        injector.realize(_resolve_seed(seed, generator), float(noise_level))
        yield injector
    finally:
        injector.restore()


def _resolve_seed(seed: int | None, generator: torch.Generator | None) -> int:
    if seed is not None:
        return int(seed)
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def check_level(noise_level: float) -> float:
    level = float(noise_level)
    if not (level >= 0 and level < float("inf")):
        raise NoisyNNError(f"noise level must be a finite number >= 0, got {noise_level}")
    return level


@torch.no_grad()
def inject_thermal_noise(model: nn.Module, noise_level: float, noise_type: str | NoiseDistribution = "gaussian",
                         in_place: bool = True, *, scale: str = "absolute", targets: str | Sequence[str] | None = None,
                         blocks: Iterable[int] | None = None, include_bias: bool | None = None,
                         generator: torch.Generator | None = None, seed: int | None = None,
                         noise_params: dict | None = None) -> nn.Module:
    """Add noise of ``noise_type`` with scale ``noise_level`` to the targeted weights; return the model.

    The original toolkit's call: ``inject_thermal_noise(model, 0.01)`` adds N(0, 0.01^2) in
    weight units, in place, to what the original noised (``original_targets``): every Linear
    and Conv1D weight and bias, the output head included. One difference: a head tied to the
    input embeddings is untied first, so the embeddings stay clean (the original's noise landed
    in both). ``targets="blocks"`` (with ``include_bias=False``, the default once ``targets`` is
    given) selects what the sweep noises by default: the transformer blocks' projections only.
    ``in_place=False`` works on a deep copy and leaves ``model`` untouched. Calling it twice
    adds noise twice; for noise that is undone afterwards use ``noisy_weights``.
    """
    level = check_level(noise_level)
    original = targets is None
    spec = make_noise_spec(noise_type, noise_params, scale, "all" if original else targets, blocks,
                           include_bias is not False if original else bool(include_bias))
    if not in_place:
        model = copy.deepcopy(model)
    if level == 0:  # as the original: nothing touched (not even untied)
        return model
    base = _resolve_seed(seed, generator)
    chosen = original_targets(model, spec.blocks, spec.include_bias) if original else select(model, spec)
    for t in chosen:
        w = t.param.data
        u = unit_scale(w, spec.scale, t.out_axis)
        if spec.noise.location_scale:  # the same unit draw noisy_weights makes for this seed, scaled
            z, factor = draw(spec.noise, w.shape, 1.0, w.device, make_generator(derive_seed(base, t.name), "cpu")), level
        else:
            z, factor = draw(spec.noise, w.shape, level, w.device, make_generator(derive_seed(base, t.name, level), "cpu")), 1.0
        add_scaled(w, z.to(w.dtype), factor, u, out=w)
    return model


def rounding_report(rounding_std: dict, injector: NoiseInjector, sigmas: Sequence[float], ratio: float = 0.1) -> dict | None:
    """The low-precision rounding of the targeted weights (``LoadedModel.rounding_std``; None for float32) against
    each level's noise scale (sigma x RMS unit): the levels where rounding exceeds ``ratio`` of the noise."""
    if not rounding_std:
        return None
    n = sq = 0.0
    for t in injector.targets:
        count, std = rounding_std.get(t.name, (0, 0.0))
        n += count
        sq += count * std ** 2
    pooled = (sq / n) ** 0.5 if n else 0.0
    unit = injector.weight_unit_rms()
    flagged = [s for s in sigmas if s > 0 and pooled > ratio * s * unit]
    return {"rounding_std": pooled, "noise_unit_rms": unit, "threshold_ratio": ratio,
            "levels_where_rounding_exceeds_threshold": flagged}
