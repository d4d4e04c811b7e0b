"""The one list of experiments (and tools): name -> package, imported only when asked for.

Each experiment is a folder ``noisynn/experiments/<name>/`` with ``run.py`` (the torch side:
``build_parser()``, its trial function, ``run(argv)`` and ``main(argv) -> exit code``) and
``report.py`` (no torch: ``plot(run_dir) -> list[Path]`` and the summaries and tables of a
finished run folder). Adding an experiment = adding its folder and one line to EXPERIMENTS;
the command line (``noisynn <name>``), ``generate_graphs``, the explorer and the tests read
this map. Importing this module imports neither torch nor any experiment.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from .errors import NoisyNNError

# name (as recorded in run.json's "experiment") -> package holding run.py and report.py
EXPERIMENTS: dict[str, str] = {
    "sweep": "noisynn.experiments.sweep",
    "drift_over_time": "noisynn.experiments.drift_over_time",
    "layer_sensitivity": "noisynn.experiments.layer_sensitivity",
    "optimal_jitter": "noisynn.experiments.optimal_jitter",
    "noise_aware_training": "noisynn.experiments.noise_aware_training",
    "temporal_drift": "noisynn.experiments.temporal_drift",
    "llama_scaling": "noisynn.experiments.llama_scaling",
    "task_accuracy": "noisynn.experiments.task_accuracy",
    "placement": "noisynn.experiments.placement",
    "analog_attention": "noisynn.experiments.analog_attention",
}

# name -> module with build_parser() and main(argv): commands that are not experiments (no run folder)
TOOLS: dict[str, str] = {
    "generate_graphs": "noisynn.graphs",
    "ui": "noisynn.ui.app",
}


def names() -> list[str]:
    """The experiments, in the order the command line lists them."""
    return list(EXPERIMENTS)


def _unknown(name: str, known) -> NoisyNNError:
    return NoisyNNError(f"unknown experiment '{name}'; known: {', '.join(known)}")


def run_module(name: str) -> ModuleType:
    """The torch side of an experiment (``build_parser``, ``run``, ``main``)."""
    if name not in EXPERIMENTS:
        raise _unknown(name, EXPERIMENTS)
    return importlib.import_module(f"{EXPERIMENTS[name]}.run")


def report_module(name: str) -> ModuleType:
    """The report side of an experiment: ``plot(run_dir) -> list[Path]``; imports no torch."""
    if name not in EXPERIMENTS:
        raise _unknown(name, EXPERIMENTS)
    return importlib.import_module(f"{EXPERIMENTS[name]}.report")


def command_module(name: str) -> ModuleType:
    """The module behind ``noisynn <name>``: an experiment's run module or a tool."""
    if name in TOOLS:
        return importlib.import_module(TOOLS[name])
    if name not in EXPERIMENTS:
        raise _unknown(name, [*EXPERIMENTS, *TOOLS])
    return run_module(name)


def parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of an experiment or tool (for ``--help`` and the generated CLI reference)."""
    return command_module(name).build_parser()
