"""Several models under the same relative noise (see `--help`); same as `noisynn llama_scaling`."""
import sys

from noisynn.experiments.llama_scaling.run import main

if __name__ == "__main__":
    sys.exit(main())
