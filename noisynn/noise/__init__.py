"""Weight noise: the base class and registry, the additive distributions, and the device models.

    base       NoiseDistribution, NOISE_REGISTRY, register_noise, get_noise, draw (checked samples)
    additive   gaussian, uniform, cauchy, laplacian, student_t
    mapping    weights -> conductances (a differential pair per weight, per tile), tile_blocks, DeviceModel
    pcm        PCM programming noise, drift and read noise, aihwkit's model (pcm)
    calibrated_pcm  the hardware-calibrated PCM model of Analog Foundation Models (pcm_afm)
    faults     stuck-at devices (stuck_at)
    quantize   weight quantization, the digital baseline (quantize)
    units      read times: '1h', '1d' <-> seconds

Importing this package registers every built-in (in that order). Activation converters (DAC/ADC)
are not weight noise: they live in ``noisynn.analog.hooks``.
"""

from .base import (NOISE_REGISTRY, NoiseDistribution, add_scaled, check_sample, draw, get_noise, is_additive,
                   register_noise, unit_draw)
from .additive import CauchyNoise, GaussianNoise, LaplacianNoise, StudentTNoise, UniformNoise
from .mapping import G_MAX_US, SOURCES, DeviceModel, DeviceState, conductance_targets, mapping_range, stuck_mask
from .pcm import (G_FLOOR, NU_MU, NU_SIGMA, PROG_COEFF_US, Q_S, T0, T_READ, PCMNoise, PCMState, drift_factor,
                  drift_nu_params, programming_noise_std, read_noise_growth, read_noise_q, read_noise_std)
from .calibrated_pcm import AFM_G_MAX, AFM_STD_HIGH, AFM_STD_LOW, CalibratedPCMNoise, afm_noise_std
from .faults import StuckAtFaults
from .quantize import WeightQuantization, bits_to_step
from .units import TIME_UNITS, parse_time, time_label

__all__ = [
    "NOISE_REGISTRY", "NoiseDistribution", "add_scaled", "check_sample", "draw", "get_noise", "is_additive",
    "register_noise", "unit_draw",
    "CauchyNoise", "GaussianNoise", "LaplacianNoise", "StudentTNoise", "UniformNoise",
    "G_MAX_US", "SOURCES", "DeviceModel", "DeviceState", "conductance_targets", "mapping_range",
    "StuckAtFaults", "stuck_mask",
    "G_FLOOR", "NU_MU", "NU_SIGMA", "PROG_COEFF_US", "Q_S", "T0", "T_READ", "PCMNoise", "PCMState", "drift_factor",
    "drift_nu_params", "programming_noise_std", "read_noise_growth", "read_noise_q", "read_noise_std",
    "AFM_G_MAX", "AFM_STD_HIGH", "AFM_STD_LOW", "CalibratedPCMNoise", "afm_noise_std",
    "WeightQuantization", "bits_to_step",
    "TIME_UNITS", "parse_time", "time_label",
]
