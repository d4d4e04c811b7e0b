"""Where in the network does noise hurt (see `--help`); same as `noisynn layer_sensitivity`."""
import sys
try:  # Ctrl-C while the imports load: one line, like Ctrl-C during a run
    from noisynn.experiments.layer_sensitivity.run import main
except KeyboardInterrupt:
    sys.stderr.write("interrupted while starting; nothing was run\n")
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
