"""Redraw every figure from the saved run folders under results/ (see `--help`); same as `noisynn generate_graphs`."""
import sys

from noisynn.graphs import main

if __name__ == "__main__":
    sys.exit(main())
