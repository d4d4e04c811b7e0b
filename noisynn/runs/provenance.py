"""Provenance of a run: the commit of the code that made it and the versions of what it ran on (run.json)."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path


def git_hash() -> str | None:
    """HEAD's commit, + "-dirty" when a tracked file other than a run's output (results/, images/) changed."""
    here = Path(__file__).resolve().parent
    outputs = [":(top)"] + [f":(top,exclude){d}" for d in ("results", "images", "benchmarks/results")]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *outputs], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("noisynn", "torch", "transformers", "numpy", "gguf", "accelerate", "datasets"):
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return found
