"""The original toolkit's noise module: the registry, the built-in distributions, inject_thermal_noise."""
from noisynn.inject import inject_thermal_noise, noisy_weights  # noqa: F401
from noisynn.noise import *  # noqa: F401,F403
from noisynn.noise import NOISE_REGISTRY, NoiseDistribution, register_noise  # noqa: F401
