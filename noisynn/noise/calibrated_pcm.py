"""The hardware-calibrated PCM noise of Analog Foundation Models (``pcm_afm``).

Sources: Buechel et al., NeurIPS 2025; IBM/analog-foundation-models ``apply_noise_model.py``, cited below
as afm:LINE (the code is ours).

Why a second PCM model: ``pcm`` is aihwkit's phenomenological model (fitted polynomials for programming noise,
a drift law and 1/f read noise, g_max = 25 uS). This one is the noise *measured* on IBM's PCM chip as
Analog Foundation Models evaluate their models with: one Gaussian draw per weight whose std is a cubic
polynomial of the conductance, no drift and no time (the measurement is what the chip reads). The name keeps
it next to ``pcm`` in the list of noise types and says whose calibration it is.

Per weight of a layer (out, in), outputs on ``out_axis``:
    mapping   w_max = max|W| over each output row within each tile of ``tile_size[0]`` inputs (default 512;
              afm:88-102, the tiles split as aihwkit's, afm:39-54), g = W / w_max * G_MAX, G_MAX = 180 (afm:65)
    noise     g_noisy = g + sigma * std(|g|) xi, std a cubic polynomial of |g| (highest power first, afm:16-36):
                |g| <= 52.5   AFM_STD_LOW  (afm:68-76, WEIGHT_NOISE_MODEL_OD)
                |g| >  52.5   AFM_STD_HIGH (afm:77-85, WEIGHT_NOISE_MODEL_TD; the split OD_TD_DIVERGENCE, afm:66)
    zeroing   |g| < 0.6 -> 0 (afm:110): devices below 0.6 are not programmed
    W_noisy = g_noisy w_max / G_MAX (afm:118)
sigma multiplies the measured std: 1 = the chip as measured; 0 = the clean model (the injector restores the
clean weights at sigma 0, and ``weights`` at level 0 does the same); any sigma > 0 zeroes the |g| < 0.6 devices
in full, since a device is programmed or not. Two differences from afm, both tiny: the std is not rounded to
float16 (afm:30, a relative 5e-4 at most), and the range is max|W| rather than max|W| + 6.1e-5 (float16's tiny,
afm:87-98; a relative 6.1e-5 / max|W|, 0.1% for max|W| = 0.06). Checked against afm's add_PCM_noise on a
3000 x 1100 layer: the noise std per |g| band agrees within 0.2%, and the same weights are zeroed.
The output-tile size is irrelevant (the range is per row). afm's own default, ``max_inp_size = -1`` (afm:13),
is one tile per row (``tile_size`` 0); its script uses 512 (afm:184), our default.
"""

from __future__ import annotations

import torch

from ..errors import NoisyNNError
from ..seeding import make_generator
from .base import register_noise
from ..analog.fields import default
from ..tiling import tile_shape
from .mapping import DeviceModel, DeviceState, mapping_range, work_dtype

AFM_G_MAX = 180.0  # the conductance max|W| of a row in a tile maps to (afm:65)
AFM_G_SPLIT = 52.5  # OD_TD_DIVERGENCE: the low set of coefficients up to here, the high one above (afm:66)
AFM_G_ZERO = 0.6  # conductances below are set to 0 (afm:110)
AFM_STD_LOW = (2.939751381126213e-05, -0.00371581208142707, 0.22419685954327148, 2.5797410660159494)  # afm:68-76
AFM_STD_HIGH = (1.2329755395573392e-05, -0.003054993405157235, 0.2453487119885723, 2.110295720240385)  # afm:77-85
AFM_SOURCES = ("Buechel et al., Analog Foundation Models, NeurIPS 2025; "
               "IBM/analog-foundation-models apply_noise_model.py (add_PCM_noise)")


def _polyval(coeffs, x: torch.Tensor) -> torch.Tensor:
    """Horner's rule, highest power first (numpy.polyval's order, afm:16-28)."""
    y = torch.zeros_like(x)
    for c in coeffs:
        y = y.mul_(x).add_(c)
    return y


def afm_noise_std(g):
    """std of the measured conductance noise at |g| (G_MAX = 180 units): AFM_STD_LOW for |g| <= 52.5, else
    AFM_STD_HIGH. A number or a tensor."""
    if not isinstance(g, torch.Tensor):
        g = abs(float(g))
        coeffs = AFM_STD_LOW if g <= AFM_G_SPLIT else AFM_STD_HIGH
        y = 0.0
        for c in coeffs:
            y = y * g + c
        return y
    a = g.abs()
    return torch.where(a > AFM_G_SPLIT, _polyval(AFM_STD_HIGH, a), _polyval(AFM_STD_LOW, a))


@register_noise("pcm_afm")
class CalibratedPCMNoise(DeviceModel):
    """Analog Foundation Models' hardware-calibrated PCM noise (see the module doc).

    ``tile_size``: (inputs, outputs) of the tiles; the range is max|W| per output row in each input tile.
    """

    scales = ("relative_channel",)  # per output row (within each tile), as afm:89-97
    sigma_meaning = ("multiplier of the PCM noise std measured on hardware (Analog Foundation Models: 1 = as "
                     "measured, 0 = clean); conductances below 0.6 of 180 are zero at any sigma > 0")

    def __init__(self, tile_size=default("tile_size"), **params):
        self.tile_size = tile_shape(tile_size)
        super().__init__(tile_size=list(self.tile_size), **params)

    def describe(self) -> dict:
        out = super().describe()
        out["sources"] = AFM_SOURCES
        out["constants"] = {"g_max": AFM_G_MAX, "g_split": AFM_G_SPLIT, "g_zero": AFM_G_ZERO,
                            "std_low": AFM_STD_LOW, "std_high": AFM_STD_HIGH}
        return out

    def program(self, clean, unit, generator, out_axis=0) -> DeviceState:
        if not isinstance(unit, torch.Tensor) and clean.dim() == 2:
            raise NoisyNNError("pcm_afm maps each output row of a tile to g_max: it needs --scale relative_channel")
        return DeviceState(self._generator_seed(generator),
                           mapping_range(clean, unit, None, out_axis, self.tile_size))

    @torch.no_grad()
    def conductances(self, clean: torch.Tensor, state: DeviceState) -> torch.Tensor:
        """g = W / w_max * 180, the target conductances (signed)."""
        return clean.detach().to(work_dtype(clean)).div(state.w_max).mul_(AFM_G_MAX)

    @torch.no_grad()
    def weights(self, clean, state: DeviceState, level, unit, generator, out) -> None:
        if level == 0:
            out.copy_(clean)
            return
        g = self.conductances(clean, state)
        gen = make_generator(state.seed, clean.device)  # the same draw at every level: common random numbers
        xi = torch.randn(g.shape, generator=gen, device=g.device, dtype=g.dtype)
        noisy = afm_noise_std(g).mul_(xi).mul_(level).add_(g)
        noisy.masked_fill_(g.abs() < AFM_G_ZERO, 0.0)
        out.copy_(noisy.mul_(state.w_max).div_(AFM_G_MAX))
