"""Redraw every figure from saved run folders alone (no model is run; torch is not imported).

    python generate_graphs.py                 # = noisynn generate_graphs: results/ -> images/ (make figures)
    python generate_graphs.py --compare results/noise_types/* --output images/noise_types.png   # + a table

Every folder under ``--results_dir`` that holds a ``run.json`` is redrawn by the ``plot`` of
the experiment named in it (``registry.report_module(name).plot``), and its PNGs are copied to
``--output_dir``. A folder without ``run.json`` that holds two or more sweeps
(``results/noise_types/<type>/``) is drawn as one comparison figure, ``<folder name>.png``, with
one band per run. The run folders are left as they were (figures drawn into them are removed
unless they were there before), apart from their summary tables, which are rewritten.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from . import registry
from .errors import NoisyNNError
from .options.parser import EXIT_USAGE, ArgumentParser
from .options.flags import output_file
from .options.script import script_main
from .runs.schema import RUN_JSON
from .runs.read import read_meta, read_run


def add_args(p: ArgumentParser) -> None:
    g = p.add_argument_group("figures")
    g.add_argument("--results_dir", default="results", help="folder of saved run folders (default: %(default)s)")
    g.add_argument("--output_dir", default="images", help="where the figures go (default: %(default)s)")
    g.add_argument("--compare", nargs="+", default=None, metavar="RUN_DIR",
                   help="only draw these run folders (e.g. sweeps with different --noise_type) on one figure")
    g.add_argument("--output", type=output_file, default=None,
                   help="PNG path of the --compare figure (default: OUTPUT_DIR/noise_types.png)")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="generate_graphs.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.output and not args.compare:
        p.error("--output goes with --compare")
    return args


# Experiments whose runs can share one comparison figure (median perplexity against sigma): their
# report module has ``plot_compare(run_dirs, path)``.
COMPARABLE = {"sweep"}


def experiment_of(run_dir: Path) -> str | None:
    """The experiment named in a folder's run.json; None without a readable one."""
    if not (Path(run_dir) / RUN_JSON).is_file():
        return None
    try:
        meta = read_meta(Path(run_dir) / RUN_JSON)
    except NoisyNNError:
        return None
    return meta.get("experiment") or meta.get("config", {}).get("experiment")


def plot_compare(run_dirs, path: Path) -> Path:
    return registry.report_module("sweep").plot_compare(run_dirs, path)


def discover(root: Path) -> tuple[list[Path], dict[Path, list[Path]]]:
    """Run folders (holding run.json) under ``root``, and comparison groups: folders without
    run.json whose child run folders (two or more) are all sweeps."""
    # top-level runs first, so that they keep their figures' plain names in --output_dir
    runs = sorted((p.parent for p in root.rglob(RUN_JSON)), key=lambda r: (len(r.relative_to(root).parts), str(r)))
    groups: dict[Path, list[Path]] = {}
    for parent in sorted({r.parent for r in runs}, key=str):
        if parent == root or (parent / RUN_JSON).is_file():
            continue
        children = [r for r in runs if r.parent == parent]
        if len(children) >= 2 and {experiment_of(c) for c in children} <= COMPARABLE:
            groups[parent] = children
    return runs, groups


def redraw(run_dir: Path, out_dir: Path, taken: set[str]) -> list[Path]:
    """Redraw one run folder's figures and copy them to ``out_dir``; returns the copies."""
    run = read_run(run_dir)  # a damaged folder: one NoisyNNError line naming the file
    experiment = run.experiment
    if experiment not in registry.EXPERIMENTS:
        raise LookupError(f"no plot function for experiment '{experiment}'")
    if not run.rows:  # nothing to draw; the folder's figures and tables stay as they are
        raise LookupError("no finished rows yet")
    plot = registry.report_module(experiment).plot
    before = {p.name for p in run_dir.glob("*.png")}
    copies = []
    for fig in plot(run_dir):
        fig = Path(fig)
        if fig.name not in taken:
            name = fig.name
        else:  # a second run of the same experiment: results/temporal_drift_accumulate -> temporal_drift_accumulate.png
            name = f"{run_dir.name}{fig.suffix}" if fig.stem == experiment else f"{run_dir.name}_{fig.name}"
        taken.add(name)
        dest = out_dir / name
        shutil.copyfile(fig, dest)
        if fig.name not in before:
            fig.unlink()
        copies.append(dest)
    return copies


def run(argv=None) -> int:
    args = parse(argv)
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NoisyNNError(f"--output_dir {out_dir} is not a folder")
    if args.compare:
        dirs = [Path(d) for d in args.compare]
        missing = [str(d) for d in dirs if experiment_of(d) is None]
        if missing:
            raise NoisyNNError(f"not a run folder (no readable {RUN_JSON}): {', '.join(missing)}")
        path = plot_compare(dirs, args.output or out_dir / "noise_types.png")
        print(registry.report_module("sweep").compare_table(dirs))
        print(f"{len(dirs)} runs -> {path}")
        return 0
    root = Path(args.results_dir)
    if not root.is_dir():
        raise NoisyNNError(f"--results_dir {root} is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, groups = discover(root)
    for name in registry.names():  # the run folders the README's figures come from: results/<name>/
        if not (root / name).exists():
            print(f"note: {root / name} not found, skipped")
    grouped = {r for members in groups.values() for r in members}
    taken: set[str] = set()
    failed = 0
    for run_dir in runs:
        if run_dir in grouped:
            continue
        try:
            copies = redraw(run_dir, out_dir, taken)
        except LookupError as err:
            print(f"note: {run_dir}: {err}, skipped")
            continue
        except NoisyNNError as err:  # a damaged folder must not stop the others
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        except Exception as err:
            print(f"error: {run_dir}: {type(err).__name__}: {err}", file=sys.stderr)
            failed += 1
            continue
        note = read_run(run_dir).progress_note()
        print(f"{run_dir} ({experiment_of(run_dir)}{', ' + note if note else ''}) -> {', '.join(str(c) for c in copies)}")
    for group, members in groups.items():
        name = f"{group.relative_to(root).as_posix().replace('/', '_')}.png"
        try:
            path = plot_compare(members, out_dir / name)
        except Exception as err:
            print(f"error: {group}: {type(err).__name__}: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{group} ({len(members)} runs: {', '.join(m.name for m in members)}) -> {path}")
    return EXIT_USAGE if failed else 0  # a damaged folder is bad input, as everywhere


def main(argv=None) -> int:
    return script_main(run, argv)
