"""Task accuracy (lm-evaluation-harness) against noise level (see `--help`); same as `noisynn task_accuracy`."""
import sys

from noisynn.experiments.task_accuracy.run import main

if __name__ == "__main__":
    sys.exit(main())
