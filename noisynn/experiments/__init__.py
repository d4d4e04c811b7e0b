"""One folder per experiment: run.py (flags, trial, run, main; torch) and report.py (figures, tables; no torch).

``<name>/run.py`` (torch: ``build_parser``, trial, ``run``, ``main``) and ``<name>/report.py`` (no torch:
``plot(run_dir)``, summaries, verdicts, console tables).

Experiments import the library, never each other; ``noisynn.registry`` lists them.
"""
