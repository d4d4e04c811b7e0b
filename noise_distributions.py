"""The original toolkit's noise module: the registry, the built-in distributions, inject_thermal_noise."""
from noisynn.compat import NoiseType, get_model_weight_stats, get_noise_distribution  # noqa: F401
from noisynn.inject import inject_thermal_noise, noisy_weights  # noqa: F401
from noisynn.noise import *  # noqa: F401,F403
from noisynn.noise import (NOISE_REGISTRY, CauchyNoise, GaussianNoise, NoiseDistribution,  # noqa: F401
                           UniformNoise, register_noise)
