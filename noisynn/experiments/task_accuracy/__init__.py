"""Downstream task accuracy under noise through lm-evaluation-harness (offline tasks by default).

``run.py``: arguments, trial and run (torch, lm-eval); ``report.py``: summary, drop sigma and figure from a run folder (no torch).
"""
