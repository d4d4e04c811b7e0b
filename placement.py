"""Which tensors must stay digital: the placement planner (see `--help`); same as `noisynn placement`."""
import sys
try:  # Ctrl-C while the imports load: one line, like Ctrl-C during a run
    from noisynn.experiments.placement.run import main
except KeyboardInterrupt:
    sys.stderr.write("interrupted while starting; nothing was run\n")
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
