"""Noise-aware fine-tuning and its robustness sweep (see `--help`); same as `noisynn noise_aware_training`."""
import sys
try:  # Ctrl-C while the imports load: one line, like Ctrl-C during a run
    from noisynn.experiments.noise_aware_training.run import main
except KeyboardInterrupt:
    sys.stderr.write("interrupted while starting; nothing was run\n")
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
