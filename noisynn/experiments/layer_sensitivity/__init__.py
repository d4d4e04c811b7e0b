"""Where in the network does noise hurt? Attention vs MLP vs all blocks, and a blocks x projection heatmap.

``run.py``: arguments, trial and run (torch); ``report.py``: summary, tables and figures from a run folder (no torch).
"""
