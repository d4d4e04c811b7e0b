"""Generation while the noise level drifts token by token (see `--help`); same as `noisynn temporal_drift`."""
import sys

from noisynn.experiments.temporal_drift.run import main

if __name__ == "__main__":
    sys.exit(main())
