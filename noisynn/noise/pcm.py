"""PCM (``pcm``): programming noise, drift and 1/f read noise, as aihwkit's PCMLikeNoiseModel computes them.

Sources: Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11, 2473, 2020; aihwkit
``PCMLikeNoiseModel``, ``src/aihwkit/inference/noise/pcm.py``, cited below as pcm.py:LINE (the code is ours).

Programming, once per realization, both devices of every pair (aihwkit ``apply_programming_noise``,
``inference/noise/base.py`` lines 89-98), conductances in units of g_max:
    targets       gT+ = clip(W / w_max, 0, 1), gT- = clip(-W / w_max, 0, 1)    (noisynn.noise.mapping, per tile)
    programming   g_prog = max(0, gT + s(gT) xi),  s(gT) = (0.26348 + 1.9650 gT - 1.1731 gT^2) / 25  (pcm.py:101-118)
    drift exp.    nu = |mu_nu + sigma_nu xi'|, mu_nu = clip(-0.0155 ln gT + 0.0244, 0.049, 0.1),
                  sigma_nu = clip(-0.0125 ln gT - 0.0059, 0.008, 0.045), gT floored at 1e-7      (pcm.py:121-130)
                  drawn from the *target* gT of each device (base.py line 95), not from g_prog
    W_prog = (g_prog+ - g_prog-) w_max                                       (``programmed_weights``)
Each read, t seconds after programming, applies to a conductance g (pcm.py:133-158):
    drift         g(t) = g ((t + t0) / t0)^(-nu),  t0 = 20 s
    read (1/f)    g = max(0, g(t) + |g(t)| sigma_rel xi''),  sigma_rel = Q_s sqrt(ln((t + t0 + t_read) / (2 t_read))),
                  Q_s = min(0.0088 / max(|g|^0.65, 1e-3), 0.2) at the *programmed* |g| (pcm.py:148-150; aihwkit has
                  always evaluated it there, never at gT),  t_read = 250 ns
What g is, ``pair``:
    "tile" (default)  aihwkit's inference tile: ``program_weights`` stores W_prog (simulator/tiles/inference.py
        lines 206-210), and every ``drift_weights`` converts W_prog back into a *fresh* pair (inference.py lines
        250-252 -> base.py lines 117-125 -> ``SinglePairConductanceConverter``, inference/converter/conductance.py
        lines 54-65): the device of W_prog's sign holds |W_prog| / max|W_prog| (max over the tile: the converter's
        abs-max, conductance.py line 55) and its partner holds 0. That device drifts with the nu drawn at
        programming for its slot (g+ or g-; the partner's nu when programming noise flipped the sign) and Q_s is
        taken at its conductance; the partner, at 0, carries no drift and no read noise. So
        W_t = W_prog ((t + t0) / t0)^(-nu) (1 + sigma_rel xi)_+. Physically: the programmed *difference* is
        what is stored; a partner device's programming error becomes part of the weight and then drifts as the
        weight does (as if the pair were re-balanced after programming, one device left at 0).
    "independent"  both programmed devices drift with their own nu and take read noise at their own |g_prog|
        (what aihwkit's one-shot ``apply_noise`` does, base.py lines 59-70, there redrawn at every call):
        W_t = (g+(t) - g-(t)) w_max. Physically: two real devices, each with its own programming error, drift
        and 1/f noise, the partner's small conductance included (its nu the largest, about 0.1; its Q_s mostly the
        0.2 cap).
Drift compensation (``drift_compensation``; aihwkit ``GlobalDriftCompensation``, inference/compensation/drift.py):
    one factor per tile, alpha = mean|y_prog| / mean|y_t| on the one-hot probe (drift.py lines 27-38) =
    sum|W_prog| / sum|W_t| over the tile, applied digitally to the tile's output (inference.py lines 255-281).
    (aihwkit's probe runs on the tile's stored weights, inference.py lines 150-157: with per-row scaling,
    relative_channel, that is sum|g_prog| / sum|g_t| in conductance units; "exact" below keeps weight units.)
    ``compensation_method``:
    "readout" (default)  ``weights`` writes the uncompensated W_t (and sets state.alpha = 1); noisynn.analog.compensation
        measures the factor per tile through the layer's analog forward and applies it after the ADC, as aihwkit
        does (it records its mean factor in state.alpha).
    "exact"   the exact per-tile factor above is folded into the weights (state.alpha_tiles; state.alpha their
        mean): before output noise and ADC when converters are on. With tile_size 0 this is the former per-layer
        factor.
  ``sigma`` in a sweep multiplies the programming-noise std, the drift exponents and the read-noise std
  together (aihwkit's prog_noise_scale = drift_scale = read_noise_scale = sigma): 1 is the device as
  measured, 0 the clean model. The time is ``t_seconds``.
  The mapping to conductances (tiles of ``tile_size`` = (inputs, outputs), default 512 x 512) is
  noisynn.noise.mapping's; stuck devices as noisynn.noise.mapping.stuck_mask (with pair "tile" a weight whose
  re-derived device is stuck stays at its programmed value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import NoisyNNError
from ..seeding import derive_seed, make_generator
from .base import register_noise
from ..analog.fields import FIELDS, default
from ..tiling import tile_index, tile_shape
from .mapping import G_MAX_US, DeviceModel, conductance_targets, mapping_range, stuck_mask

PROG_COEFF_US = (0.26348, 1.9650, -1.1731)  # programming-noise std polynomial in gT, in uS at g_max = 25 uS
T0 = 20.0  # s: time of the first read after programming (drift reference)
T_READ = 250e-9  # s: read duration in the 1/f fit
NU_MU = (-0.0155, 0.0244, 0.049, 0.1)  # mu_nu = clip(a ln gT + b, lo, hi)
NU_SIGMA = (-0.0125, -0.0059, 0.008, 0.045)  # sigma_nu = clip(a ln gT + b, lo, hi)
Q_S = (0.0088, 0.65, 0.2)  # Q_s = min(c / max(g^e, Q_S_FLOOR), cap)
Q_S_FLOOR = 1e-3  # floor of g^0.65 in Q_s (pcm.py:148)
G_FLOOR = 1e-7  # gT floor inside ln (aihwkit's _ZERO_CLIP, pcm.py:24); also the floor of a tile's range
PAIRS = FIELDS["pair"].choices  # declared with the flag (noisynn.analog.fields)
COMPENSATION_METHODS = FIELDS["compensation_method"].choices


# ---------------------------------------------------------------- formulas (tensors or floats, g in g_max)

def programming_noise_std(g_t):
    """s(gT) = (0.26348 + 1.9650 gT - 1.1731 gT^2) / 25, in units of g_max."""
    c0, c1, c2 = PROG_COEFF_US
    return (c0 + g_t * (c1 + c2 * g_t)) / G_MAX_US


def drift_nu_params(g_t):
    """(mu_nu, sigma_nu) of the drift exponent for target conductance gT (in g_max)."""
    if isinstance(g_t, torch.Tensor):
        ln = g_t.clamp(min=G_FLOOR).log()
        return (ln * NU_MU[0] + NU_MU[1]).clamp_(NU_MU[2], NU_MU[3]), (ln * NU_SIGMA[0] + NU_SIGMA[1]).clamp_(
            NU_SIGMA[2], NU_SIGMA[3])
    ln = math.log(max(float(g_t), G_FLOOR))
    clip = lambda v, lo, hi: min(max(v, lo), hi)  # noqa: E731
    return clip(NU_MU[0] * ln + NU_MU[1], *NU_MU[2:]), clip(NU_SIGMA[0] * ln + NU_SIGMA[1], *NU_SIGMA[2:])


def drift_factor(t_seconds: float, nu):
    """g(t) / g_prog = ((t + t0) / t0)^(-nu)."""
    log_ratio = math.log((float(t_seconds) + T0) / T0)
    return torch.exp(-nu * log_ratio) if isinstance(nu, torch.Tensor) else math.exp(-nu * log_ratio)


def read_noise_growth(t_seconds: float) -> float:
    """sqrt(ln((t + t0 + t_read) / (2 t_read))): the 1/f read noise's growth with time."""
    return math.sqrt(math.log((float(t_seconds) + T0 + T_READ) / (2 * T_READ)))


def read_noise_q(g):
    """Q_s = min(0.0088 / max(|g|^0.65, 1e-3), 0.2), g the *programmed* conductance in g_max (pcm.py:148-150)."""
    c, e, cap = Q_S
    if isinstance(g, torch.Tensor):
        return g.abs().pow_(e).clamp_(min=Q_S_FLOOR).reciprocal_().mul_(c).clamp_(max=cap)
    return min(c / max(abs(float(g)) ** e, Q_S_FLOOR), cap)


def read_noise_std(g, t_seconds: float):
    """Relative read-noise std sigma_rel = Q_s(|g|) sqrt(ln((t + t0 + t_read) / (2 t_read))), g programmed."""
    return read_noise_q(g) * read_noise_growth(t_seconds)


@dataclass
class PCMState:
    """One tensor's programmed pair: drawn once (``seed``), computed at the first read of a level, reused.

    ``g_on``/``g_off``, ``nu_on``/``nu_off``: the two programmed devices (signed: g_on + g_off = W_prog / w_max;
    g_on is the device of W's sign) and their drift exponents, the same for both ``pair`` settings.
    """

    seed: int
    w_max: torch.Tensor | float
    tiles: list = field(default_factory=lambda: [(Ellipsis,)])  # each tile's index into the weight
    level: float | None = None
    g_on: torch.Tensor | None = None  # signed: sign(W) g_prog of the device carrying W
    g_off: torch.Tensor | None = None  # signed: -sign(W) g_prog of the partner device (target 0)
    nu_on: torch.Tensor | None = None
    nu_off: torch.Tensor | None = None
    stuck_on: torch.Tensor | None = None  # bool masks of stuck devices (None without stuck devices)
    stuck_off: torch.Tensor | None = None
    read_range: list | None = None  # max|g_on + g_off| per tile: the re-derived pair's g_max (pair "tile")
    l1_programmed_tiles: list = field(default_factory=list)  # sum |W_prog| per tile
    l1_programmed: float = float("nan")  # sum |W_prog| (reference of drift compensation)
    l1_read_tiles: list = field(default_factory=list)
    l1_read: float = float("nan")  # sum |W_t| at the last read, before compensation
    alpha: float = 1.0  # compensation factor folded into the weights at the last read (mean over tiles)
    alpha_tiles: list | None = None  # compensation_method "exact": the factor of each tile

    def release(self) -> None:
        self.g_on = self.g_off = self.nu_on = self.nu_off = self.stuck_on = self.stuck_off = None
        self.level = None


@register_noise("pcm")
class PCMNoise(DeviceModel):
    """PCM-like conductances: programming noise, power-law drift, 1/f read noise (see the module doc).

    ``t_seconds``: time of the read after programming. ``drift_compensation``: global factor per tile, measured
    as ``compensation_method`` says ("readout": by noisynn.analog.compensation after the ADC; "exact": folded into the
    weights). ``pair``: "tile" (aihwkit's inference tile) or "independent". ``tile_size``: (inputs, outputs)
    of the mapping's tiles, 0 = the whole layer. ``stuck_fraction``/``stuck_on_ratio``: stuck devices.
    ``clip_std``: clip the mapping at k std(W). ``prog_scale``/``drift_scale``/``read_scale``: per-effect
    multipliers (times sigma).
    """

    sigma_meaning = ("multiplier of the PCM model's programming-noise std, drift exponents nu and read-noise std "
                     "(1 = as measured, 0 = clean), read t_seconds after programming")

    # Defaults of the flags' fields: declared once in noisynn.analog.fields (t_seconds: one day).
    def __init__(self, t_seconds: float = default("t_seconds"),
                 drift_compensation: bool = default("drift_compensation"),
                 stuck_fraction: float = default("stuck_fraction"), stuck_on_ratio: float = default("stuck_on_ratio"),
                 clip_std: float | None = default("clip_std"), prog_scale: float = 1.0, drift_scale: float = 1.0,
                 read_scale: float = 1.0, pair: str = default("pair"),
                 compensation_method: str = default("compensation_method"), tile_size=default("tile_size"),
                 **params):
        t_seconds = float(t_seconds)
        if not (math.isfinite(t_seconds) and t_seconds >= 0):
            raise NoisyNNError(f"pcm needs t_seconds >= 0, got {t_seconds}")
        if not 0 <= stuck_fraction <= 1 or not 0 <= stuck_on_ratio <= 1:
            raise NoisyNNError("stuck_fraction and stuck_on_ratio must lie in [0, 1]")
        if clip_std is not None and not clip_std > 0:
            raise NoisyNNError(f"clip_std must be > 0, got {clip_std}")
        if pair not in PAIRS:
            raise NoisyNNError(f"pcm: pair must be one of {', '.join(PAIRS)}, got '{pair}'")
        if compensation_method not in COMPENSATION_METHODS:
            raise NoisyNNError(f"pcm: compensation_method must be one of {', '.join(COMPENSATION_METHODS)}, "
                               f"got '{compensation_method}'")
        self.tile_size = tile_shape(tile_size)
        super().__init__(t_seconds=t_seconds, drift_compensation=bool(drift_compensation),
                         stuck_fraction=float(stuck_fraction), stuck_on_ratio=float(stuck_on_ratio), clip_std=clip_std,
                         prog_scale=float(prog_scale), drift_scale=float(drift_scale), read_scale=float(read_scale),
                         pair=pair, compensation_method=compensation_method, tile_size=list(self.tile_size),
                         **params)
        self.t_seconds = t_seconds
        self.drift_compensation = bool(drift_compensation)
        self.stuck_fraction, self.stuck_on_ratio = float(stuck_fraction), float(stuck_on_ratio)
        self.clip_std = clip_std
        self.prog_scale, self.drift_scale, self.read_scale = float(prog_scale), float(drift_scale), float(read_scale)
        self.pair, self.compensation_method = pair, compensation_method

    def describe(self) -> dict:
        out = super().describe()
        out["params"] = {**out["params"], "t_seconds": self.t_seconds, "drift_compensation": self.drift_compensation,
                         "pair": self.pair, "compensation_method": self.compensation_method,
                         "tile_size": list(self.tile_size)}
        out["constants"] = {"g_max_uS": G_MAX_US, "prog_coeff_uS": PROG_COEFF_US, "t0_s": T0, "t_read_s": T_READ,
                            "nu_mu": NU_MU, "nu_sigma": NU_SIGMA, "q_s": Q_S, "q_s_floor": Q_S_FLOOR}
        return out

    def program(self, clean, unit, generator, out_axis=0) -> PCMState:
        """Draw this tensor's programming seed and its per-tile mapping; conductances follow at the first read."""
        return PCMState(self._generator_seed(generator),
                        mapping_range(clean, unit, self.clip_std, out_axis, self.tile_size),
                        tile_index(clean.shape, self.tile_size, out_axis))

    @torch.no_grad()
    def programmed(self, clean: torch.Tensor, state: PCMState, level: float) -> PCMState:
        """Program the pair at noise multiplier ``level`` (once; the same random numbers at every level)."""
        if state.level == level and state.g_on is not None:
            return state
        state.release()
        gen = make_generator(state.seed, clean.device)
        g_t, sign = conductance_targets(clean, state.w_max)
        shape, dev, dt = g_t.shape, g_t.device, g_t.dtype
        prog, drift = level * self.prog_scale, level * self.drift_scale
        # Programming: the device carrying W aims at gT, its partner at 0 (both noisy, clipped at 0).
        g_on = torch.randn(shape, generator=gen, device=dev, dtype=dt).mul_(programming_noise_std(g_t))
        g_on.mul_(prog).add_(g_t).clamp_(min=0.0)
        g_off = torch.randn(shape, generator=gen, device=dev, dtype=dt).mul_(prog * programming_noise_std(0.0))
        g_off.clamp_(min=0.0)
        # Drift exponents, drawn once per device from its target conductance (base.py line 95).
        mu, sd = drift_nu_params(g_t)
        nu_on = torch.randn(shape, generator=gen, device=dev, dtype=dt).mul_(sd).add_(mu).abs_().mul_(drift)
        mu0, sd0 = drift_nu_params(0.0)
        nu_off = torch.randn(shape, generator=gen, device=dev, dtype=dt).mul_(sd0).add_(mu0).abs_().mul_(drift)
        del mu, sd
        if self.stuck_fraction > 0:
            state.stuck_on = stuck_mask(g_on, self.stuck_fraction, self.stuck_on_ratio, gen)
            nu_on.masked_fill_(state.stuck_on, 0.0)
            state.stuck_off = stuck_mask(g_off, self.stuck_fraction, self.stuck_on_ratio, gen)
            nu_off.masked_fill_(state.stuck_off, 0.0)
        state.g_on, state.g_off = g_on.mul_(sign), g_off.mul_(sign).neg_()
        state.nu_on, state.nu_off = nu_on, nu_off
        x_prog = state.g_on + state.g_off
        state.l1_programmed_tiles = [_l1(x_prog[idx], _part(state.w_max, idx)) for idx in state.tiles]
        state.l1_programmed = sum(state.l1_programmed_tiles)
        # The converter's range when W_prog is turned back into a pair: abs-max per tile (conductance.py:55-56).
        state.read_range = [max(float(x_prog[idx].abs().max()), G_FLOOR) if x_prog[idx].numel() else G_FLOOR
                            for idx in state.tiles]
        state.level = level
        return state

    @torch.no_grad()
    def programmed_weights(self, clean: torch.Tensor, state: PCMState, level: float | None = None) -> torch.Tensor:
        """W_prog in weight units (programming noise; no drift, no read noise), ``clean``'s dtype.

        ``level``: the noise multiplier (default: the one the state was last programmed at, else 1).
        """
        if level is None:
            level = state.level if state.level is not None else 1.0
        self.programmed(clean, state, level)
        return torch.add(state.g_on, state.g_off).mul_(state.w_max).to(clean.dtype)

    @torch.no_grad()
    def read(self, state: PCMState, t_seconds: float, generator: torch.Generator | None) -> torch.Tensor:
        """W_t / w_max: the programmed pair read at time t (``pair``); ``generator`` None = no read noise."""
        log_ratio = math.log((t_seconds + T0) / T0)
        growth = read_noise_growth(t_seconds)
        read = (state.level or 0.0) * self.read_scale
        if self.pair == "tile":
            return self._read_tile(state, log_ratio, growth * read, generator)
        acc = None
        for g, nu, stuck in ((state.g_on, state.nu_on, state.stuck_on), (state.g_off, state.nu_off, state.stuck_off)):
            factor = torch.mul(nu, -log_ratio).exp_()  # drift ((t + t0) / t0)^-nu
            if generator is not None:
                xi = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
                q = read_noise_q(g)  # at this device's |g_prog| (pcm.py:148)
                if stuck is not None:
                    q.masked_fill_(stuck, 0.0)
                factor.addcmul_(factor, xi.mul_(q), value=growth * read)  # factor (1 + sigma_rel xi)
                factor.clamp_(min=0.0)  # conductances stay >= 0
            if acc is None:
                acc = factor.mul_(g)
            else:
                acc.addcmul_(factor, g)
        return acc

    def _read_tile(self, state: PCMState, log_ratio: float, noise_scale: float, generator) -> torch.Tensor:
        """W_prog turned into a fresh pair per tile: only the device of W_prog's sign drifts and is read noisily."""
        x = torch.add(state.g_on, state.g_off)  # W_prog / w_max
        on = state.g_on.abs() >= state.g_off.abs()  # W_prog keeps W's sign: the g_on slot holds it
        factor = torch.where(on, state.nu_on, state.nu_off).mul_(-log_ratio).exp_()
        if generator is not None:
            xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            q = torch.empty_like(x)
            for idx, r in zip(state.tiles, state.read_range):
                q[idx] = read_noise_q(x[idx] / r)  # Q_s at the re-derived conductance |W_prog| / max|W_prog|
            if state.stuck_on is not None:
                q.masked_fill_(torch.where(on, state.stuck_on, state.stuck_off), 0.0)
            factor.addcmul_(factor, xi.mul_(q), value=noise_scale).clamp_(min=0.0)
        return factor.mul_(x)

    @torch.no_grad()
    def weights(self, clean, state: PCMState, level, unit, generator, out) -> None:
        self.programmed(clean, state, level)
        read_gen = make_generator(derive_seed(self._generator_seed(generator), "read", repr(self.t_seconds)),
                                  clean.device)
        x = self.read(state, self.t_seconds, read_gen)
        exact = self.drift_compensation and self.compensation_method == "exact"
        state.l1_read_tiles, alphas = [], []
        for idx, l1_prog in zip(state.tiles, state.l1_programmed_tiles):
            w_max = _part(state.w_max, idx)
            l1 = _l1(x[idx], w_max)
            state.l1_read_tiles.append(l1)
            alphas.append(l1_prog / l1 if exact and l1 > 0 else 1.0)
            out[idx] = x[idx] * (w_max * alphas[-1] if alphas[-1] != 1.0 else w_max)
        state.l1_read = sum(state.l1_read_tiles)
        state.alpha_tiles = alphas if exact else None
        state.alpha = sum(alphas) / len(alphas) if exact else 1.0


def _part(w_max, idx):
    """The part of w_max (a number, a per-row or a full tensor) over the tile ``idx``."""
    if not isinstance(w_max, torch.Tensor) or idx == (Ellipsis,):
        return w_max
    return w_max[tuple(s if w_max.shape[d] > 1 else slice(None) for d, s in enumerate(idx))]


def _l1(x: torch.Tensor, w_max) -> float:
    """sum |x w_max| (w_max: a number, or a tensor broadcastable to x), without materializing the product if cheap."""
    if not isinstance(w_max, torch.Tensor):
        return float(torch.linalg.vector_norm(x, 1, dtype=torch.float64)) * w_max
    dims = [d for d in range(x.dim()) if w_max.shape[d] == 1 and x.shape[d] > 1]
    if not dims:
        return float(torch.mul(x, w_max).abs_().sum(dtype=torch.float64))
    return float((torch.linalg.vector_norm(x, 1, dim=dims, keepdim=True).double() * w_max).sum())
