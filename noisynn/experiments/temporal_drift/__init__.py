"""Temporal drift: generation while the noise level changes token by token. Gradual or a cliff?

``run.py``: arguments, trial and run (torch); ``report.py``: summary, tables and figures from a run folder (no torch).
"""
