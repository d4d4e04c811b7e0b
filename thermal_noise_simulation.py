"""The main noise sweep on the embedded SmolLM2-135M (see `--help`); same as `noisynn sweep`."""
import sys

from noisynn.experiments.sweep.run import main

if __name__ == "__main__":
    sys.exit(main())
