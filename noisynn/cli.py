"""``noisynn <experiment> [flags]``: one console script for every experiment and tool (see ``registry``)."""

from __future__ import annotations

import sys

from . import registry


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: noisynn <experiment> [flags]   (noisynn <experiment> --help for its flags)\n\nexperiments:")
        for name in registry.names():
            print(f"  {name}")
        print("tools:\n" + "".join(f"  {name}\n" for name in registry.TOOLS), end="")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in registry.EXPERIMENTS and name not in registry.TOOLS:
        sys.stderr.write(f"noisynn: error: unknown experiment '{name}'; "
                         f"known: {', '.join([*registry.EXPERIMENTS, *registry.TOOLS])}\n")
        return 2
    try:  # Ctrl-C while torch and the experiment load: one line, not a traceback
        module = registry.command_module(name)
    except KeyboardInterrupt:
        sys.stderr.write(f"noisynn {name}: interrupted while starting; nothing was run\n")
        return 130
    sys.argv[0] = f"noisynn {name}"
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
