"""The main sweep: perplexity, entropy and text diversity against noise level, several trials each.

``run.py``: arguments, trial and run (torch); ``report.py``: summary, tables and figures from a run folder (no torch).
"""
