"""Where in the network does noise hurt (see `--help`); same as `noisynn layer_sensitivity`."""
import sys

from noisynn.experiments.layer_sensitivity.run import main

if __name__ == "__main__":
    sys.exit(main())
