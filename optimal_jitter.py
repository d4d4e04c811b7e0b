"""Is there a Goldilocks zone of noise for text diversity (see `--help`); same as `noisynn optimal_jitter`."""
import sys

from noisynn.experiments.optimal_jitter.run import main

if __name__ == "__main__":
    sys.exit(main())
