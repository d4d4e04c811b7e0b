"""PCM drift over time on the embedded SmolLM2-135M (see `--help`); same as `noisynn drift_over_time`."""
import sys

from noisynn.experiments.drift_over_time.run import main

if __name__ == "__main__":
    sys.exit(main())
