"""Is there a Goldilocks zone: noise that makes sampled text more diverse without breaking the model?

``run.py``: arguments, trial and run (torch); ``report.py``: summary, tables and figures from a run folder (no torch).
"""
