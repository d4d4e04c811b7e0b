"""Several models under the same relative noise (see `--help`); same as `noisynn llama_scaling`."""
import sys
try:  # Ctrl-C while the imports load: one line, like Ctrl-C during a run
    from noisynn.experiments.llama_scaling.run import main
except KeyboardInterrupt:
    sys.stderr.write("interrupted while starting; nothing was run\n")
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
