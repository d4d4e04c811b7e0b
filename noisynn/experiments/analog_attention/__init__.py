"""Analog attention: perplexity and far-back recall against KV-cache noise, leakage and window, next to weight noise.

``run.py``: arguments, trial and run (torch); ``report.py``: summary, tables and figures from a run folder (no torch).
"""
