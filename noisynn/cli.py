"""``noisynn <experiment> [flags]``: one console script for every experiment."""

from __future__ import annotations

import importlib
import sys

# name -> module under noisynn.experiments; each has main(argv) -> exit code.
EXPERIMENTS = {
    "sweep": "sweep",
    "drift_over_time": "drift_over_time",
    "layer_sensitivity": "layer_sensitivity",
    "optimal_jitter": "optimal_jitter",
    "noise_aware_training": "noise_aware_training",
    "temporal_drift": "temporal_drift",
    "llama_scaling": "llama_scaling",
    "generate_graphs": "generate_graphs",
}

# name -> module (full path) with main(argv) -> exit code: tools that are not experiments.
TOOLS = {
    "ui": "noisynn.ui",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: noisynn <experiment> [flags]   (noisynn <experiment> --help for its flags)\n\nexperiments:")
        for name in EXPERIMENTS:
            print(f"  {name}")
        print("tools:\n" + "".join(f"  {name}\n" for name in TOOLS), end="")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS and name not in TOOLS:
        sys.stderr.write(f"noisynn: error: unknown experiment '{name}'; known: {', '.join([*EXPERIMENTS, *TOOLS])}\n")
        return 2
    try:  # Ctrl-C while torch and the experiment load: one line, not a traceback
        module = importlib.import_module(TOOLS.get(name) or f"noisynn.experiments.{EXPERIMENTS[name]}")
    except KeyboardInterrupt:
        sys.stderr.write(f"noisynn {name}: interrupted while starting; nothing was run\n")
        return 130
    sys.argv[0] = f"noisynn {name}"
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
