"""Analog attention (a leaking gain-cell KV cache) on the embedded SmolLM2-135M (see `--help`); same as `noisynn analog_attention`."""
import sys
try:  # Ctrl-C while the imports load: one line, like Ctrl-C during a run
    from noisynn.experiments.analog_attention.run import main
except KeyboardInterrupt:
    sys.stderr.write("interrupted while starting; nothing was run\n")
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
