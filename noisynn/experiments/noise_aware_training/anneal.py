"""The ``--anneal`` flags of noise-aware training (both recipes): the training noise over the steps.

The schedule itself (``NoiseSchedule``, ``noise_factor``: formulas there) lives in ``training.py`` next to the
learning-rate schedule; this module only reads and checks the flags.
"""

from __future__ import annotations

from ...options.argtypes import nonneg_float, positive_int, unit_float
from .training import ANNEAL_DEFAULTS, ANNEAL_KINDS, NoiseSchedule, make_schedule


def add_anneal_args(g) -> None:
    """The noise schedule over the steps (both recipes); all default None: a run folder written before them, or
    one with --anneal constant, records and resumes as before."""
    g.add_argument("--anneal", choices=ANNEAL_KINDS, default=None,
                   help="the training noise over the steps: constant (the level at every step, default) | linear | "
                        "cosine | step: from --anneal_start to --anneal_end times the level (--noise_level; with "
                        "--recipe afm the weight noise) over the first --anneal_ramp of the steps, then held")
    g.add_argument("--anneal_start", type=nonneg_float, default=None,
                   help="noise multiplier at the first step (default: 0 with --anneal other than constant); "
                        "start > end anneals the noise down, start < end is a curriculum up")
    g.add_argument("--anneal_end", type=nonneg_float, default=None,
                   help="noise multiplier at the end of the ramp and after it (default: 1)")
    g.add_argument("--anneal_ramp", type=unit_float, default=None,
                   help="fraction of the steps the schedule takes, in (0, 1] (default: 1)")
    g.add_argument("--anneal_stairs", type=positive_int, default=None,
                   help="levels of --anneal step, start and end included, >= 2 (default: 4)")


def resolve_anneal(p, args) -> None:
    """Check the --anneal flags (a usage error, exit 2, before anything is written) and fill in the defaults of a
    non-constant schedule; --anneal constant is recorded as no flag (the record of today's runs)."""
    given = [k for k in ANNEAL_DEFAULTS if getattr(args, k) is not None]
    if args.anneal in (None, "constant"):
        if given:
            p.error(f"--{given[0]} needs --anneal linear, cosine or step")
        args.anneal = None
        return
    if args.anneal_ramp is not None and args.anneal_ramp <= 0:
        p.error(f"argument --anneal_ramp: '{args.anneal_ramp}' must be > 0")
    if args.anneal_stairs is not None and args.anneal != "step":
        p.error("--anneal_stairs needs --anneal step")
    if args.anneal_stairs is not None and args.anneal_stairs < 2:
        p.error(f"argument --anneal_stairs: '{args.anneal_stairs}' must be >= 2")
    if args.noise_level == 0 or getattr(args, "no_weight_noise", None) or getattr(args, "no_analog", None):
        p.error(f"--anneal {args.anneal} scales the training noise, and this run trains without any")
    for k, v in ANNEAL_DEFAULTS.items():
        if getattr(args, k) is None and (k != "anneal_stairs" or args.anneal == "step"):
            setattr(args, k, v)
    if args.anneal_start == args.anneal_end:
        p.error(f"--anneal {args.anneal} with --anneal_start = --anneal_end = {args.anneal_start} is constant noise; "
                "give --noise_level instead")


def anneal_schedule(args) -> NoiseSchedule:
    """The ``NoiseSchedule`` of the resolved --anneal flags (``resolve_anneal``)."""
    return make_schedule(args.anneal, args.anneal_start, args.anneal_end, args.anneal_ramp, args.anneal_stairs)
