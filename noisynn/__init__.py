"""Noisy Neural Network: analog-hardware noise in the weights of real language models.

Public API (re-exported; see each module for details)::

    from noisynn import load_model, load_text, inject_thermal_noise, noisy_weights
    from noisynn import NoiseDistribution, NOISE_REGISTRY, register_noise
    from noisynn import compute_perplexity, compute_output_entropy, generate_text_samples
    from noisynn import PCMNoise, StuckAtFaults, WeightQuantization, AnalogIO, ConverterHooks   # devices
"""

from .corpus import load_text
from .devices import AnalogIO, ConverterHooks, PCMNoise, StuckAtFaults, WeightQuantization
from .errors import NoisyNNError
from .evaluation import (PerplexityResult, compute_distinct_n, compute_output_entropy, compute_perplexity,
                         compute_repetition_ratio, decode, generate_text_samples)
from .inject import (NoiseInjector, classify_weight, inject_thermal_noise, noisy_weights, select_targets,
                     untie_head)
from .models import load_model
from .noise import (NOISE_REGISTRY, CauchyNoise, GaussianNoise, LaplacianNoise, NoiseDistribution, StudentTNoise,
                    UniformNoise, get_noise, register_noise)
from .seeding import set_seed

__version__ = "0.1.0"

__all__ = [
    "AnalogIO", "ConverterHooks", "PCMNoise", "StuckAtFaults", "WeightQuantization",
    "NOISE_REGISTRY", "CauchyNoise", "GaussianNoise", "LaplacianNoise", "NoiseDistribution", "NoiseInjector",
    "NoisyNNError", "PerplexityResult", "StudentTNoise", "UniformNoise", "classify_weight", "compute_distinct_n",
    "compute_output_entropy", "compute_perplexity", "compute_repetition_ratio", "decode", "generate_text_samples",
    "get_noise", "inject_thermal_noise", "load_model", "load_text", "noisy_weights", "register_noise",
    "select_targets", "set_seed", "untie_head",
]
