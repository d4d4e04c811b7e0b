"""Perplexity and text at times after programming the model onto PCM, with and without drift compensation.

``run.py``: arguments, trial and run (torch); ``report.py``: summary, tables and figures from a run folder (no torch).
"""
