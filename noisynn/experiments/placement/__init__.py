"""Which weights must stay digital? A placement planner for hybrid analog/digital chips.

``plan.py``: units, the additive prediction and the greedy choice (no torch); ``run.py``: arguments, trial and
run (torch); ``report.py``: decision, tables and figure from a run folder (no torch).
"""
