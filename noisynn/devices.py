"""Physical analog in-memory-computing models: weights stored as device conductances, read through converters.

Weight-to-conductance mapping (a differential pair per weight, as aihwkit's ``SinglePairConductanceConverter``)
    Each weight W of a tensor is held by two devices, g+ and g-, with W = (g+ - g-) w_max / g_max. The device
    of W's sign is programmed to the target gT = min(|W| / w_max, 1) (in units of g_max = 25 uS), the other to
    0. ``w_max`` is max|W| over the tensor (``--scale relative_max``) or over each output channel
    (``--scale relative_channel``, one row of conductances per output); with ``clip_std = k`` it is
    min(max|W|, k std(W)) and larger weights are clipped to g_max (Buechel et al., NeurIPS 2025, clip at 2.5 std).

PCM (``pcm``; Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11, 2473, 2020; aihwkit
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

Stuck-at faults (``stuck_at``): each device of the pair is independently stuck with probability ``sigma``
  (the sweep variable is the fault fraction), at g_max with probability ``stuck_on_ratio`` and else at 0.
  Faults are nested across levels (a device stuck at 5% is also stuck at 10%). ``pcm`` takes the same
  faults at a fixed ``stuck_fraction``; stuck devices neither drift nor add read noise.

Weight quantization (``quantize``), the digital baseline: W_q = round(W / (sigma u)) sigma u, i.e. ``sigma`` is
  the step in units of the scale unit u; symmetric b-bit quantization per channel is ``--scale
  relative_channel`` with sigma = 1 / (2^(b-1) - 1) (b = 8: 1/127, b = 4: 1/7).

Converters (``ConverterHooks``, forward hooks on the targeted layers; aihwkit ``IOParameters`` conventions,
  defaults DAC 7 bits, ADC 9 bits, out_noise 0.06, out_bound 12). For each input vector x (a token):
    DAC   r = max|x| (dynamic, per token; or a fixed / calibrated per-layer range, inputs clipped to +-r),
          x_q = round(x / d) d, d = 2 r / (2^dac_bits - 2)   (resolution as a number of steps over [-r, r])
    MVM   y = x_q W^T, normalized y_n = y / (r w_max)   (w_max per tensor, or per channel with relative_channel)
    noise y_n += out_noise N(0, 1)
    ADC   y_n = clip(y_n, -out_bound, out_bound), quantized with step 2 out_bound / (2^adc_bits - 2)
    out   y = y_n r w_max + b   (rescaled to weight units; the bias is added digitally)
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from .errors import NoisyNNError
from .noise import NoiseDistribution, register_noise
from .seeding import derive_seed, make_generator

G_MAX_US = 25.0  # uS: conductance that max|W| maps to
PROG_COEFF_US = (0.26348, 1.9650, -1.1731)  # programming-noise std polynomial in gT, in uS at g_max = 25 uS
T0 = 20.0  # s: time of the first read after programming (drift reference)
T_READ = 250e-9  # s: read duration in the 1/f fit
NU_MU = (-0.0155, 0.0244, 0.049, 0.1)  # mu_nu = clip(a ln gT + b, lo, hi)
NU_SIGMA = (-0.0125, -0.0059, 0.008, 0.045)  # sigma_nu = clip(a ln gT + b, lo, hi)
Q_S = (0.0088, 0.65, 0.2)  # Q_s = min(c / gT^e, cap)
G_FLOOR = 1e-7  # gT floor inside ln and powers (aihwkit's _ZERO_CLIP)
SOURCES = ("Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11, 2473 (2020); "
           "aihwkit PCMLikeNoiseModel, GlobalDriftCompensation, IOParameters")

TIME_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "mo": 30 * 86400.0, "y": 365 * 86400.0}


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


def parse_time(text: str) -> float:
    """Seconds from '3600', '1s', '1min', '1h', '1d', '1mo' (30 d) or '1y' (365 d)."""
    text = str(text).strip()
    for unit in sorted(TIME_UNITS, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].strip():
            number = text[: -len(unit)]
            break
    else:
        number, unit = text, "s"
    try:
        value = float(number) * TIME_UNITS[unit]
    except ValueError:
        raise NoisyNNError(f"'{text}' is not a time (a number of seconds, or with a unit: "
                           f"{', '.join(TIME_UNITS)})") from None
    if not (math.isfinite(value) and value >= 0):
        raise NoisyNNError(f"time '{text}' must be finite and >= 0")
    return value


def time_label(seconds: float) -> str:
    """Short label: 1 s, 1 min, 1 h, 1 d, 1 mo, 1 y (largest unit that divides evenly), else seconds."""
    for unit in ("y", "mo", "d", "h", "min", "s"):
        n = seconds / TIME_UNITS[unit]
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{round(n)} {unit}"
    return f"{seconds:g} s"


# ---------------------------------------------------------------- mapping

def mapping_range(clean: torch.Tensor, unit, clip_std: float | None = None, out_axis: int = 0):
    """w_max, the weight that maps to g_max: ``unit`` (max|W| per tensor or channel), or min(unit, k std)."""
    w_max = unit
    if clip_std is not None:
        w = clean.detach().float()
        if isinstance(unit, torch.Tensor):
            dims = [d for d in range(w.dim()) if d != out_axis]
            std = w.std(dim=dims, keepdim=True)
            w_max = torch.minimum(unit.float(), std * clip_std)
        else:
            w_max = min(float(unit), float(w.std()) * clip_std)
    if isinstance(w_max, torch.Tensor):
        return w_max.float().clamp(min=torch.finfo(torch.float32).tiny)
    return max(float(w_max), torch.finfo(torch.float32).tiny)


def _targets(clean: torch.Tensor, w_max) -> tuple[torch.Tensor, torch.Tensor]:
    """(gT in [0, 1], sign in {-1, +1}); zero weights count as positive (both devices near 0)."""
    w = clean.detach().float()
    g_t = w.abs().div_(w_max).clamp_(max=1.0)
    sign = torch.where(w < 0, -1.0, 1.0)
    return g_t, sign


class DeviceModel(NoiseDistribution):
    """Base of the conductance-based models: weights are not perturbed by i.i.d. samples but programmed."""

    location_scale = False
    scales = ("relative_channel", "relative_max")
    sigma_meaning = ""

    def sample(self, shape, scale, device=None, generator=None):
        raise NoisyNNError(f"'{self.name}' is a device model, not an i.i.d. distribution: use noisy_weights(), "
                           "NoiseInjector or --noise_type in an experiment")

    def describe(self) -> dict:
        return {**super().describe(), "sigma": self.sigma_meaning, "sources": SOURCES}

    def _generator_seed(self, generator: torch.Generator) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def _stuck(g: torch.Tensor, fraction: float, on_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Bool mask of stuck devices (u < fraction); sets g in place to 1 (stuck on, v < on_ratio) or 0 there.

    Two uniforms per device, u (whether) and v (where), so faults are nested across fractions: a device
    stuck at a fraction is stuck, at the same value, at every larger fraction.
    """
    u = torch.rand(g.shape, generator=generator, device=g.device)
    v = torch.rand(g.shape, generator=generator, device=g.device)
    stuck = u < fraction
    g.masked_fill_(stuck, 0.0)
    g.masked_fill_(stuck & (v < on_ratio), 1.0)
    return stuck


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
        g_t, sign = _targets(clean, state.w_max)
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
                stuck = _stuck(g, self.stuck_fraction, self.stuck_on_ratio, gen)
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


@dataclass
class DeviceState:
    seed: int
    w_max: torch.Tensor | float


@register_noise("stuck_at")
class StuckAtFaults(DeviceModel):
    """A fraction ``sigma`` of the devices stuck at g_max (share ``stuck_on_ratio``) or at 0; others exact."""

    sigma_meaning = "fraction of devices (two per weight) stuck, at g_max with probability stuck_on_ratio, else at 0"

    def __init__(self, stuck_on_ratio: float = 0.5, clip_std: float | None = None, **params):
        if not 0 <= stuck_on_ratio <= 1:
            raise NoisyNNError(f"stuck_on_ratio must lie in [0, 1], got {stuck_on_ratio}")
        super().__init__(stuck_on_ratio=float(stuck_on_ratio), clip_std=clip_std, **params)
        self.stuck_on_ratio, self.clip_std = float(stuck_on_ratio), clip_std

    def program(self, clean, unit, generator, out_axis=0) -> DeviceState:
        return DeviceState(self._generator_seed(generator), mapping_range(clean, unit, self.clip_std, out_axis))

    @torch.no_grad()
    def weights(self, clean, state: DeviceState, level, unit, generator, out) -> None:
        if level > 1:
            raise NoisyNNError(f"stuck_at: sigma is a fraction of devices and must be <= 1, got {level}")
        gen = make_generator(state.seed, clean.device)  # the same uniforms at every level: nested faults
        g_on, sign = _targets(clean, state.w_max)
        g_off = torch.zeros_like(g_on)
        _stuck(g_on, level, self.stuck_on_ratio, gen)
        _stuck(g_off, level, self.stuck_on_ratio, gen)
        torch.mul(g_on.sub_(g_off).mul_(sign), state.w_max, out=out)


@register_noise("quantize")
class WeightQuantization(NoiseDistribution):
    """Digital baseline: round W to a grid of step sigma * u (u: the scale unit, e.g. max|W| per channel)."""

    location_scale = False
    sigma_meaning = "quantization step in scale units (symmetric b bits with relative_channel: 1 / (2^(b-1) - 1))"

    def sample(self, shape, scale, device=None, generator=None):
        raise NoisyNNError("'quantize' rounds weights, it draws no samples: use noisy_weights() or NoiseInjector")

    def describe(self) -> dict:
        return {**super().describe(), "sigma": self.sigma_meaning}

    @torch.no_grad()
    def weights(self, clean, state, level, unit, generator, out) -> None:
        step = unit * level
        torch.div(clean, step, out=out)
        out.round_().mul_(step)


def bits_to_step(bits: int) -> float:
    """Quantization step (in units of max|W|) of symmetric ``bits``-bit weights: 1 / (2^(bits-1) - 1)."""
    if bits < 2:
        raise NoisyNNError(f"weight quantization needs >= 2 bits, got {bits}")
    return 1.0 / (2 ** (bits - 1) - 1)


# ---------------------------------------------------------------- converters (forward hooks)

@dataclass
class AnalogIO:
    """DAC / output noise / ADC of an analog tile (aihwkit IOParameters conventions; None or 0 = off).

    ``input_range``: "dynamic" (per-token abs-max, aihwkit's ABS_MAX noise management), "calibrated"
    (a fixed per-layer range: max|x| seen by ``ConverterHooks.calibrate``) or a number (fixed range).
    ``per_channel``: normalize outputs by max|W| per output channel (else per tensor).
    ``noise_pool``: size of the pool the output noise is sliced from (0: fresh draws at every call;
    torch's CPU generator makes those cost about as much as the matmul of a 576 x 1536 layer).
    """

    dac_bits: int | None = 7
    adc_bits: int | None = 9
    out_noise: float = 0.06
    out_bound: float | None = 12.0
    input_range: str | float = "dynamic"
    per_channel: bool = False
    noise_pool: int = 2 ** 23

    def __post_init__(self):
        for name in ("dac_bits", "adc_bits"):
            bits = getattr(self, name)
            if bits is not None and bits < 2:
                raise NoisyNNError(f"{name} must be >= 2 (2^bits - 2 steps), got {bits}")
        if self.out_noise < 0:
            raise NoisyNNError(f"out_noise must be >= 0, got {self.out_noise}")
        if self.adc_bits and not self.out_bound:
            raise NoisyNNError("an ADC needs an output bound (out_bound > 0)")
        if isinstance(self.input_range, str) and self.input_range not in ("dynamic", "calibrated"):
            try:
                self.input_range = float(self.input_range)
            except ValueError:
                raise NoisyNNError(f"input_range is dynamic, calibrated or a number, got '{self.input_range}'") from None
        if not isinstance(self.input_range, str) and not self.input_range > 0:
            raise NoisyNNError(f"a fixed input_range must be > 0, got {self.input_range}")

    def describe(self) -> dict:
        d = asdict(self)
        d["dac_steps"] = 2 ** self.dac_bits - 2 if self.dac_bits else None
        d["adc_steps"] = 2 ** self.adc_bits - 2 if self.adc_bits else None
        d["convention"] = ("aihwkit IOParameters: resolution = 1 / (2^bits - 2) of the full range [-r, r]; "
                           "outputs normalized by (input range x w_max), rescaled to weight units")
        return d


class _Shared:
    """State shared by one model's tiles: the output-noise pool and offsets, and the last converted input."""

    def __init__(self, io: AnalogIO, device):
        self.io, self.device = io, device
        self.pool: torch.Tensor | None = None
        self.rng = random.Random(0)
        self.generator = make_generator(0, device)
        self.last: tuple | None = None  # (input tensor, fixed range, converted input, range)

    def reseed(self, seed: int) -> None:
        self.rng = random.Random(derive_seed(seed, "converter-offsets"))
        self.generator = make_generator(derive_seed(seed, "converter-noise"), self.device)
        if self.io.out_noise and self.io.noise_pool:
            self.pool = torch.randn(self.io.noise_pool, generator=self.generator, device=self.device)
        self.last = None

    def noise(self, y: torch.Tensor) -> torch.Tensor:
        """N(0, 1) shaped like y: a slice of the pool at a random offset, or fresh draws when it is larger."""
        n = y.numel()
        if self.pool is not None and n <= self.pool.numel():
            start = self.rng.randrange(self.pool.numel() - n + 1)
            return self.pool[start:start + n].view(y.shape)
        return torch.randn(y.shape, generator=self.generator, device=y.device, dtype=y.dtype)


class _TileIO:
    """Pre- and post-hook of one layer: its w_max and fixed range, and the range of the input in flight."""

    def __init__(self, name: str, module: nn.Module, weight: torch.Tensor, out_axis: int, io: AnalogIO,
                 shared: _Shared):
        self.name, self.io, self.shared = name, io, shared
        w = weight.detach().float()
        if io.per_channel:
            dims = [d for d in range(w.dim()) if d != out_axis]
            self.w_max = w.abs().amax(dim=dims).clamp_(min=torch.finfo(torch.float32).tiny).to(weight.dtype)
            self.w_scalar = 1.0
        else:
            self.w_max = None
            self.w_scalar = max(float(w.abs().max()), torch.finfo(torch.float32).tiny)
        self.bias = getattr(module, "bias", None)
        self.fixed = None if isinstance(io.input_range, str) else float(io.input_range)
        self.enabled = True
        self.scale = None
        self.record: float | None = None  # calibration: running max|x|
        self.dac_half = (2 ** io.dac_bits - 2) / 2 if io.dac_bits else None
        self.adc_half = (2 ** io.adc_bits - 2) / 2 if io.adc_bits else None
        self.analog_out = bool(io.out_noise or io.out_bound or io.adc_bits)

    def pre(self, module, args):
        self.scale = None
        if not self.enabled:
            return None
        x = args[0]
        if self.record is not None:  # calibration pass: observe, do not convert
            self.record = max(self.record, float(x.amax()), -float(x.amin()))
            return None
        last = self.shared.last
        if last is not None and last[0] is x and last[1] == self.fixed:  # q, k, v (gate, up) share their input
            _, _, converted, self.scale = last
        else:
            converted, self.scale = self._convert(x)
            self.shared.last = (x, self.fixed, converted, self.scale)
        return None if converted is None else (converted,) + tuple(args[1:])

    def _convert(self, x: torch.Tensor):
        """(input for the layer or None if unchanged, range r). With a DAC the layer receives the integer
        levels round(x / d), d = r / half: its output is rescaled by d in ``post``."""
        if self.fixed is None:  # per-token abs-max (aihwkit ABS_MAX noise management)
            r = torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg_())
            r.clamp_(min=torch.finfo(x.dtype).tiny)
        else:
            r = self.fixed
        if not self.dac_half:
            return (None if self.fixed is None else x.clamp(-r, r)), r
        levels = x / (r / self.dac_half)
        levels.round_()
        if self.fixed is not None:
            levels.clamp_(-self.dac_half, self.dac_half)
        return levels, r

    def post(self, module, args, y):
        r = self.scale
        if r is None:
            return None
        io = self.io
        if self.bias is not None:
            y.sub_(self.bias)
        if self.analog_out:
            # Work in ADC steps k of the normalized output y / (r w_max): one factor in, one factor out.
            k = io.out_bound / self.adc_half if self.adc_half else 1.0
            if self.dac_half:  # y = levels W^T: the normalized output is y / (half w_max)
                y.mul_(1.0 / (self.dac_half * self.w_scalar * k))
            else:
                y.mul_(1.0 / (r * (self.w_scalar * k)))
            if self.w_max is not None:
                y.div_(self.w_max)
            if io.out_noise:
                y.add_(self.shared.noise(y), alpha=io.out_noise / k)
            if io.out_bound:
                y.clamp_(-io.out_bound / k, io.out_bound / k)
            if self.adc_half:
                y.round_()
            y.mul_(r * (self.w_scalar * k))
            if self.w_max is not None:
                y.mul_(self.w_max)
        elif self.dac_half:
            y.mul_(r / self.dac_half)
        if self.bias is not None:
            y.add_(self.bias)
        return y


class ConverterHooks:
    """DAC, output noise and ADC on the targeted layers through forward hooks (see the module doc).

    Vectorised over tokens, in place on the layer output. An input fed to several targeted layers
    (q, k, v; gate, up) is converted once. Output noise: slices of a pool of ``io.noise_pool`` N(0, 1)
    values drawn at ``reseed`` (exact i.i.d. normals within a layer call; different calls take random
    offsets into the pool, so two calls may reuse shifted values); ``noise_pool = 0`` draws afresh.
    ``reseed(seed)`` makes the noise reproducible; ``remove()`` detaches every hook (or use ``with``).
    """

    def __init__(self, model: nn.Module, targets: Sequence, io: AnalogIO, seed: int = 0):
        self.model, self.io = model, io
        self.tiles: list[_TileIO] = []
        self._handles = []
        self.calibration: dict | None = None
        self.shared = _Shared(io, next((t.param.device for t in targets), "cpu"))
        for t in targets:
            if not t.name.endswith(".weight") or t.param.dim() != 2:
                continue
            module = model.get_submodule(t.name[: -len(".weight")])
            if isinstance(module, nn.Embedding):
                continue
            tile = _TileIO(t.name[: -len(".weight")], module, t.param, t.out_axis, io, self.shared)
            self.tiles.append(tile)
            self._handles.append(module.register_forward_pre_hook(tile.pre))
            self._handles.append(module.register_forward_hook(tile.post))
        if not self.tiles:
            raise NoisyNNError("no Linear layers among the targets to put converters on")
        self.reseed(seed)

    def set_enabled(self, enabled: bool) -> None:
        """Switch the converters off (digital layers) or back on without removing the hooks."""
        for tile in self.tiles:
            tile.enabled = bool(enabled)

    def reseed(self, seed: int) -> None:
        self.shared.reseed(seed)

    @torch.no_grad()
    def calibrate(self, model: nn.Module, input_ids: torch.Tensor, max_length: int = 512) -> dict:
        """Fixed per-layer input ranges: max|x| of each layer's input over ``input_ids`` (in windows)."""
        for tile in self.tiles:
            tile.record = 0.0
        self.shared.last = None
        try:
            ids = input_ids.flatten()
            device = next(model.parameters()).device
            for start in range(0, ids.numel(), max_length):
                model(input_ids=ids[start:start + max_length][None].to(device), use_cache=False)
        finally:
            ranges = {}
            for tile in self.tiles:
                tile.fixed, tile.record = tile.record or 1.0, None
                ranges[tile.name] = tile.fixed
        return ranges

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.shared.last = self.shared.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def describe(self) -> dict:
        out = {**self.io.describe(), "n_layers": len(self.tiles)}
        if self.calibration:
            ranges = [t.fixed for t in self.tiles]
            out["calibration"] = {**self.calibration, "range_min": min(ranges), "range_max": max(ranges)}
        return out


def converter_io_from_args(args) -> AnalogIO | None:
    """AnalogIO from the converter flags (options.add_converter_args), or None when none is given.

    ``--analog_io`` starts from aihwkit's defaults (DAC 7, ADC 9, out_noise 0.06, out_bound 12); without it
    each flag turns on only its own effect.
    """
    names = ("dac_bits", "adc_bits", "out_noise", "out_bound", "input_range")
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if not given and not getattr(args, "analog_io", False):
        return None
    base = AnalogIO() if getattr(args, "analog_io", False) else AnalogIO(None, None, 0.0, None)
    values = {**asdict(base), **given}
    if values.get("adc_bits") and not values.get("out_bound"):
        values["out_bound"] = AnalogIO.out_bound
    values["per_channel"] = getattr(args, "scale", None) == "relative_channel"
    return AnalogIO(**values)


def install_converters(args, lm, targets, n_calibration_tokens: int = 512) -> ConverterHooks | None:
    """Converter hooks from the flags (None when none given); a calibrated range is measured here, on the
    embedded training split (or on the head of --text_file / --dataset, which is also the evaluation text)."""
    io = converter_io_from_args(args)
    if io is None:
        return None
    hooks = ConverterHooks(lm.model, targets, io, seed=getattr(args, "seed", 0))
    if io.input_range == "calibrated":
        from .corpus import load_text
        from .evaluation import tokenize

        text = load_text(getattr(args, "text_file", None), getattr(args, "dataset", None), split="train")
        ids = tokenize(lm.tokenizer, text.text, n_calibration_tokens)
        hooks.calibrate(lm.model, ids, getattr(args, "max_length", 512))
        hooks.calibration = {"text": text.info.get("split", text.info.get("source")), "tokens": int(ids.numel())}
    return hooks
