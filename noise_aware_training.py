"""Noise-aware fine-tuning and its robustness sweep (see `--help`); same as `noisynn noise_aware_training`."""
import sys

from noisynn.experiments.noise_aware_training.run import main

if __name__ == "__main__":
    sys.exit(main())
