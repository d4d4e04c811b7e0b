"""Noise-aware fine-tuning: can training with weight noise buy robustness back?

``run.py``: arguments, trial and run (torch); ``training.py``, ``data.py``, ``weights.py``: today's recipe, its
data and saved weights; ``analog_train.py``, ``afm.py``, ``afm_run.py``: the AFM recipe (``--recipe afm``);
``report.py``: summary, tables and figures from a run folder (no torch).
"""
