"""Draw images/data_flow.png: how a run goes from flags to figures, and which modules do each step.

    python scripts/draw_data_flow.py                  # write images/data_flow.png
    python scripts/draw_data_flow.py --out FILE.png   # somewhere else

`make figures` runs it with the other figures. The drawing is deterministic: fixed size and dpi,
matplotlib's default style (whatever matplotlibrc says), and no "Software" version in the PNG, so
the same matplotlib draws the same bytes. docs/data_flow.md shows the figure and says the same in words.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "images" / "data_flow.png"
SIZE = (9.0, 9.6)  # inches
DPI = 100

# (step, what it is, the modules that do it), top to bottom; the same steps as docs/data_flow.md.
STEPS = [
    ("flags", "the command line: python <experiment>.py / noisynn <experiment>",
     "options/parser.py, options/flags.py, analog/flags.py, experiments/<name>/run.py"),
    ("setting", "NoiseSpec (noise, scale, targets, blocks), AnalogSetting (device, DAC, ADC, tiles): checked once",
     "spec.py (spec_from_args), analog/setting.py, analog/fields.py, analog/presets.py"),
    ("model + targets", "the model and tokenizer, the text, the weights that get noise",
     "models/loading.py (load_model), corpus.py (load_text), targets.py (select_targets)"),
    ("runner", "points = levels x trials (x targets); each point is one trial: noise on, measure, restore",
     "runs/context.py, runs/runner.py (run_sweep), inject.py, analog/hooks.py, evaluation.py"),
    ("run folder", "run.json (config, provenance), results.csv (a row per point), samples.jsonl",
     "runs/folder.py (RunFolder), runs/schema.py, runs/read.py (read_run)"),
    ("report", "summaries, verdicts, console tables, summary.csv; no torch, no model",
     "experiments/<name>/report.py, graphs.py (generate_graphs), plotting.py"),
    ("figures", "PNGs in the run folder; make figures redraws images/ from results/",
     "images/*.png"),
]

BOX = "#e8eef7"
EDGE = "#3b5b8c"
TEXT = "#1a1a1a"


def draw(path: Path = OUT) -> Path:
    """Draw the figure into ``path`` (the folder is created)."""
    with plt.style.context("default"):
        fig = plt.figure(figsize=SIZE, dpi=DPI)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
        ax.text(0.5, 0.975, "Data flow of a run", ha="center", va="center", fontsize=15, weight="bold", color=TEXT)
        top, step_h, box_h, left, width = 0.93, 0.133, 0.095, 0.04, 0.80
        centers = []
        for i, (name, what, modules) in enumerate(STEPS):
            y = top - i * step_h - box_h
            ax.add_patch(FancyBboxPatch((left, y), width, box_h, boxstyle="round,pad=0.004,rounding_size=0.012",
                                        facecolor=BOX, edgecolor=EDGE, linewidth=1.2))
            ax.text(left + 0.015, y + box_h - 0.018, name, ha="left", va="center", fontsize=12, weight="bold",
                    color=EDGE)
            ax.text(left + 0.015, y + box_h - 0.048, what, ha="left", va="center", fontsize=8.6, color=TEXT)
            ax.text(left + 0.015, y + 0.018, "noisynn/: " + modules if not modules.startswith("images") else modules,
                    ha="left", va="center", fontsize=7.6, family="monospace", color="#444444")
            centers.append((y, y + box_h))
        for (low, _), (_, high) in zip(centers, centers[1:]):
            ax.add_patch(FancyArrowPatch((left + width / 2, low - 0.002), (left + width / 2, high + 0.004),
                                         arrowstyle="-|>", mutation_scale=14, color=EDGE, linewidth=1.4))
        # a rerun resumes: the runner reads the rows already in the run folder and skips those points
        runner, folder = centers[3], centers[4]
        ax.add_patch(FancyArrowPatch((left + width + 0.004, (folder[0] + folder[1]) / 2),
                                     (left + width + 0.004, (runner[0] + runner[1]) / 2),
                                     connectionstyle="arc3,rad=0.5", arrowstyle="-|>", mutation_scale=12,
                                     color="#8c5b3b", linewidth=1.2, linestyle="--"))
        ax.text(left + width + 0.07, (runner[0] + folder[1]) / 2, "rerun:\nresume", ha="center", va="center",
                fontsize=8, color="#8c5b3b")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
        plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default: {OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    print(f"wrote {draw(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
