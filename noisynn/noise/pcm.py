"""PCM (``pcm``; Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11, 2473, 2020; aihwkit
``PCMLikeNoiseModel``). Every device of the pair, both at programming time (once per realization):
    programming   g_prog = max(0, gT + s(gT) xi),  s(gT) = (0.26348 + 1.9650 gT - 1.1731 gT^2) / 25   [g_max]
    drift exp.    nu = |mu_nu + sigma_nu xi'|, mu_nu = clip(-0.0155 ln gT + 0.0244, 0.049, 0.1),
                  sigma_nu = clip(-0.0125 ln gT - 0.0059, 0.008, 0.045)                  (gT floored at 1e-7)
  and at each read, t seconds after programming:
    drift         g(t) = g_prog ((t + t0) / t0)^(-nu),  t0 = 20 s
    read (1/f)    g = max(0, g(t) (1 + sigma_rel xi'')),  sigma_rel = Q_s sqrt(ln((t + t0 + t_read) / (2 t_read))),
                  Q_s = min(0.0088 / gT^0.65, 0.2),  t_read = 250 ns
    (recent aihwkit evaluates Q_s at |g_prog| instead of gT; we follow the formula above.)
  Global drift compensation (optional, aihwkit ``GlobalDriftCompensation``): one factor per layer,
    alpha = mean|y_prog| / mean|y_t| over a fixed probe input, applied digitally to the layer's output. We use
    aihwkit's probe, the one-hot vectors (identity), for which mean|y| = mean|W|, so alpha = sum|W_prog| /
    sum|W_t|; a linear layer's output alpha (W_t x) equals (alpha W_t) x, so alpha is folded into the weights
    (biases are digital and untouched). With converter hooks this places alpha before the ADC instead of
    after it (the ADC then sees the compensated, not the drifted, output range).
  ``sigma`` in a sweep multiplies the programming-noise std, the drift exponents and the read-noise std
  together (aihwkit's prog_noise_scale = drift_scale = read_noise_scale = sigma): 1 is the device as
  measured, 0 the clean model. The time is ``t_seconds``.
  The mapping to conductances is noisynn.noise.mapping's; stuck devices as noisynn.noise.mapping.stuck_mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import NoisyNNError
from ..seeding import derive_seed, make_generator
from .base import register_noise
from .mapping import G_MAX_US, DeviceModel, conductance_targets, mapping_range, stuck_mask
from .units import TIME_UNITS, parse_time, time_label  # noqa: F401 - re-exported: pcm read times

PROG_COEFF_US = (0.26348, 1.9650, -1.1731)  # programming-noise std polynomial in gT, in uS at g_max = 25 uS
T0 = 20.0  # s: time of the first read after programming (drift reference)
T_READ = 250e-9  # s: read duration in the 1/f fit
NU_MU = (-0.0155, 0.0244, 0.049, 0.1)  # mu_nu = clip(a ln gT + b, lo, hi)
NU_SIGMA = (-0.0125, -0.0059, 0.008, 0.045)  # sigma_nu = clip(a ln gT + b, lo, hi)
Q_S = (0.0088, 0.65, 0.2)  # Q_s = min(c / gT^e, cap)
G_FLOOR = 1e-7  # gT floor inside ln and powers (aihwkit's _ZERO_CLIP)


# ---------------------------------------------------------------- formulas (tensors or floats, gT in g_max)

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


def read_noise_q(g_t):
    """Q_s = min(0.0088 / gT^0.65, 0.2)."""
    c, e, cap = Q_S
    if isinstance(g_t, torch.Tensor):
        return g_t.clamp(min=G_FLOOR).log().mul_(-e).exp_().mul_(c).clamp_(max=cap)
    return min(c / max(float(g_t), G_FLOOR) ** e, cap)


def read_noise_std(g_t, t_seconds: float):
    """Relative read-noise std sigma_rel = Q_s(gT) sqrt(ln((t + t0 + t_read) / (2 t_read)))."""
    return read_noise_q(g_t) * read_noise_growth(t_seconds)


@dataclass
class PCMState:
    """One tensor's programmed pair: drawn once (``seed``), computed at the first read of a level, reused."""

    seed: int
    w_max: torch.Tensor | float
    level: float | None = None
    g_on: torch.Tensor | None = None  # signed: sign(W) g+ for W >= 0 ... (device carrying W)
    g_off: torch.Tensor | None = None  # signed: -sign(W) g (the partner device, target 0)
    nu_on: torch.Tensor | None = None
    nu_off: torch.Tensor | None = None
    q_on: torch.Tensor | None = None  # Q_s of each device, times the read-noise scale
    q_off: torch.Tensor | float = 0.0
    l1_programmed: float = float("nan")  # sum |W_prog| (reference of drift compensation)
    l1_read: float = float("nan")  # sum |W_t| at the last read, before compensation
    alpha: float = 1.0  # compensation factor applied at the last read

    def release(self) -> None:
        self.g_on = self.g_off = self.nu_on = self.nu_off = self.q_on = None
        self.level = None


@register_noise("pcm")
class PCMNoise(DeviceModel):
    """PCM-like conductances: programming noise, power-law drift, 1/f read noise (see the module doc).

    ``t_seconds``: time of the read after programming. ``drift_compensation``: global per-layer factor.
    ``stuck_fraction``/``stuck_on_ratio``: stuck devices. ``clip_std``: clip the mapping at k std(W).
    ``prog_scale``/``drift_scale``/``read_scale``: per-effect multipliers (times sigma).
    """

    sigma_meaning = ("multiplier of the PCM model's programming-noise std, drift exponents nu and read-noise std "
                     "(1 = as measured, 0 = clean), read t_seconds after programming")

    def __init__(self, t_seconds: float = 86400.0, drift_compensation: bool = False, stuck_fraction: float = 0.0,
                 stuck_on_ratio: float = 0.5, clip_std: float | None = None, prog_scale: float = 1.0,
                 drift_scale: float = 1.0, read_scale: float = 1.0, **params):
        t_seconds = float(t_seconds)
        if not (math.isfinite(t_seconds) and t_seconds >= 0):
            raise NoisyNNError(f"pcm needs t_seconds >= 0, got {t_seconds}")
        if not 0 <= stuck_fraction <= 1 or not 0 <= stuck_on_ratio <= 1:
            raise NoisyNNError("stuck_fraction and stuck_on_ratio must lie in [0, 1]")
        if clip_std is not None and not clip_std > 0:
            raise NoisyNNError(f"clip_std must be > 0, got {clip_std}")
        super().__init__(t_seconds=t_seconds, drift_compensation=bool(drift_compensation),
                         stuck_fraction=float(stuck_fraction), stuck_on_ratio=float(stuck_on_ratio), clip_std=clip_std,
                         prog_scale=float(prog_scale), drift_scale=float(drift_scale), read_scale=float(read_scale),
                         **params)
        self.t_seconds = t_seconds
        self.drift_compensation = bool(drift_compensation)
        self.stuck_fraction, self.stuck_on_ratio = float(stuck_fraction), float(stuck_on_ratio)
        self.clip_std = clip_std
        self.prog_scale, self.drift_scale, self.read_scale = float(prog_scale), float(drift_scale), float(read_scale)

    def describe(self) -> dict:
        out = super().describe()
        out["params"] = {**out["params"], "t_seconds": self.t_seconds, "drift_compensation": self.drift_compensation}
        out["constants"] = {"g_max_uS": G_MAX_US, "prog_coeff_uS": PROG_COEFF_US, "t0_s": T0, "t_read_s": T_READ,
                            "nu_mu": NU_MU, "nu_sigma": NU_SIGMA, "q_s": Q_S}
        return out

    def program(self, clean, unit, generator, out_axis=0) -> PCMState:
        """Draw this tensor's programming seed; conductances follow at the first read of a level."""
        return PCMState(self._generator_seed(generator), mapping_range(clean, unit, self.clip_std, out_axis))

    @torch.no_grad()
    def programmed(self, clean: torch.Tensor, state: PCMState, level: float) -> PCMState:
        """Program the pair at noise multiplier ``level`` (once; the same random numbers at every level)."""
        if state.level == level and state.g_on is not None:
            return state
        state.release()
        gen = make_generator(state.seed, clean.device)
        g_t, sign = conductance_targets(clean, state.w_max)
        shape, dev = g_t.shape, g_t.device
        prog, drift, read = level * self.prog_scale, level * self.drift_scale, level * self.read_scale
        # Programming: the device carrying W aims at gT, its partner at 0 (both noisy, clipped at 0).
        g_on = torch.randn(shape, generator=gen, device=dev).mul_(programming_noise_std(g_t)).mul_(prog).add_(g_t)
        g_on.clamp_(min=0.0)
        g_off = torch.randn(shape, generator=gen, device=dev).mul_(prog * programming_noise_std(0.0)).clamp_(min=0.0)
        # Drift exponents, drawn once per device.
        mu, sd = drift_nu_params(g_t)
        nu_on = torch.randn(shape, generator=gen, device=dev).mul_(sd).add_(mu).abs_().mul_(drift)
        mu0, sd0 = drift_nu_params(0.0)
        nu_off = torch.randn(shape, generator=gen, device=dev).mul_(sd0).add_(mu0).abs_().mul_(drift)
        q_on = read_noise_q(g_t).mul_(read)
        q_off: torch.Tensor | float = read_noise_q(0.0) * read
        del mu, sd
        if self.stuck_fraction > 0:
            for g, nu in ((g_on, nu_on), (g_off, nu_off)):
                stuck = stuck_mask(g, self.stuck_fraction, self.stuck_on_ratio, gen)
                nu.masked_fill_(stuck, 0.0)
                if g is g_on:
                    q_on.masked_fill_(stuck, 0.0)
                else:
                    q_off = torch.full(shape, q_off, device=dev).masked_fill_(stuck, 0.0)
        state.g_on, state.g_off = g_on.mul_(sign), g_off.mul_(sign).neg_()
        state.nu_on, state.nu_off, state.q_on, state.q_off = nu_on, nu_off, q_on, q_off
        state.l1_programmed = _l1(g_on + g_off, state.w_max)
        state.level = level
        return state

    @torch.no_grad()
    def read(self, state: PCMState, t_seconds: float, generator: torch.Generator | None) -> torch.Tensor:
        """W_t / w_max (float32): drifted pair with read noise at time t; ``generator`` None = no read noise."""
        log_ratio = math.log((t_seconds + T0) / T0)
        growth = read_noise_growth(t_seconds)
        acc = None
        for g, nu, q in ((state.g_on, state.nu_on, state.q_on), (state.g_off, state.nu_off, state.q_off)):
            factor = torch.mul(nu, -log_ratio).exp_()  # drift ((t + t0) / t0)^-nu
            if generator is not None:
                xi = torch.randn(g.shape, generator=generator, device=g.device)
                if isinstance(q, torch.Tensor):
                    factor.addcmul_(factor, xi.mul_(q), value=growth)  # factor (1 + sigma_rel xi)
                else:
                    factor.addcmul_(factor, xi, value=growth * q)
                factor.clamp_(min=0.0)  # conductances stay >= 0
            if acc is None:
                acc = factor.mul_(g)
            else:
                acc.addcmul_(factor, g)
        return acc

    @torch.no_grad()
    def weights(self, clean, state: PCMState, level, unit, generator, out) -> None:
        self.programmed(clean, state, level)
        read_gen = make_generator(derive_seed(self._generator_seed(generator), "read", repr(self.t_seconds)),
                                  clean.device)
        x = self.read(state, self.t_seconds, read_gen)
        state.l1_read = _l1(x, state.w_max)
        state.alpha = 1.0
        if self.drift_compensation and state.l1_read > 0:
            state.alpha = state.l1_programmed / state.l1_read
        torch.mul(x, state.w_max * state.alpha if state.alpha != 1.0 else state.w_max, out=out)


def _l1(x: torch.Tensor, w_max) -> float:
    """sum |x w_max| without materializing the product (w_max: a number or a per-channel tensor)."""
    if not isinstance(w_max, torch.Tensor):
        return float(torch.linalg.vector_norm(x, 1, dtype=torch.float64)) * w_max
    dims = [d for d in range(x.dim()) if w_max.shape[d] == 1]
    return float((torch.linalg.vector_norm(x, 1, dim=dims, keepdim=True).double() * w_max).sum())
