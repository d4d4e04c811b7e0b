"""Do bigger or newer models tolerate more noise? The same relative noise on several models.

``run.py``: arguments, trial and run (torch); ``report.py``: summary, tables and figures from a run folder (no torch).
"""
