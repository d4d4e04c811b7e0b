"""The original toolkit's noise module: the registry, the built-in distributions, inject_thermal_noise."""
from noisynn.compat import NoiseType, get_model_weight_stats, get_noise_distribution
from noisynn.inject import inject_thermal_noise, noisy_weights
from noisynn.noise import *
from noisynn.noise import NOISE_REGISTRY, CauchyNoise, GaussianNoise, NoiseDistribution, UniformNoise, register_noise
