"""Offline lm-eval tasks built from the embedded Wikipedia corpus (see ``noisynn.tasks.build``).

``build()`` writes them once into the cache (``$NOISYNN_CACHE/tasks/<fingerprint>/``) and returns
the folder to pass to ``lm_eval.tasks.TaskManager(include_path=...)``. No torch is imported.
"""

from .build import CHANCE, CLOZE, GROUP, NEXT_SENTENCE, TASKS, build, manifest

__all__ = ["CHANCE", "CLOZE", "GROUP", "NEXT_SENTENCE", "TASKS", "build", "manifest"]
