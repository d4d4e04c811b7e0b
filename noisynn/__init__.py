"""Noisy Neural Network: analog-hardware noise in the weights of real language models.

Public API (re-exported; see each module for details)::

    from noisynn import load_model, load_text, inject_thermal_noise, noisy_weights
    from noisynn import NoiseDistribution, NOISE_REGISTRY, register_noise
    from noisynn import compute_perplexity, compute_output_entropy, generate_text_samples
    from noisynn import PCMNoise, StuckAtFaults, WeightQuantization          # device models (noisynn.noise)
    from noisynn import AnalogIO, ConverterHooks, NoiseSpec, make_noise_spec  # converters, the checked spec
    from noisynn import analog_matmul, get_preset, PRESETS                    # the analog forward, named settings

Names are imported on first use (PEP 562), so ``import noisynn.plotting`` (figures from saved
results, used by ``generate_graphs``) does not import torch.
"""

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "load_text": "corpus",
    "NoisyNNError": "errors",
    **{name: "evaluation" for name in (
        "PerplexityResult", "compute_distinct_n", "compute_output_entropy", "compute_perplexity",
        "compute_repetition_ratio", "compute_vocabulary_richness", "decode", "generate_text_samples", "get_ngrams")},
    **{name: "compat" for name in ("NoiseType", "get_model_weight_stats", "get_noise_distribution")},
    **{name: "inject" for name in ("NoiseInjector", "inject_thermal_noise", "noisy_weights")},
    **{name: "targets" for name in ("classify_weight", "original_targets", "select_targets", "untie_head")},
    "load_model": "models.loading",
    **{name: "noise" for name in (
        "NOISE_REGISTRY", "CauchyNoise", "GaussianNoise", "LaplacianNoise", "NoiseDistribution", "StudentTNoise",
        "UniformNoise", "get_noise", "register_noise", "PCMNoise", "StuckAtFaults", "WeightQuantization")},
    **{name: "spec" for name in ("NoiseSpec", "make_noise_spec")},
    "ConverterSpec": "analog.setting",
    "set_seed": "seeding",
    "AnalogIO": "analog.mvm", "analog_matmul": "analog.mvm", "ConverterHooks": "analog.hooks",
    **{name: "analog.presets" for name in ("PRESETS", "get_preset")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'noisynn' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
