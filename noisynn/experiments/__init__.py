"""One folder per experiment: ``<name>/run.py`` (torch: ``build_parser``, trial, ``run``, ``main``) and
``<name>/report.py`` (no torch: ``plot(run_dir)``, summaries, verdicts, console tables).

Experiments import the library, never each other; ``noisynn.registry`` lists them.
"""
