"""Noise-aware fine-tuning: can training with weight noise buy robustness back?

``run.py``: arguments, trial and run (torch); ``report.py``: summary, tables and figures from a run folder (no torch).
"""
