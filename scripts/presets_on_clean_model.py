"""Perplexity of the clean embedded model read through each analog preset's converters (no device noise).

    python scripts/presets_on_clean_model.py [--tokens 256] [--seeds 3] [--out FILE.json]

The converters of ``--analog_preset NAME`` (noisynn.analog.presets) on all 210 block projections of SmolLM2-135M,
static ranges calibrated as the experiments calibrate them (512 training tokens, through the analog forward),
perplexity on the first ``--tokens`` tokens of the embedded evaluation text; each seed reseeds the converters'
noise (the calibration is the same for every seed). Prints one line per setting: median [min, max] over the seeds
(with 3 seeds, [min, max] covers the true median with probability 75%). The figures in docs/analog.md
("What the presets do to the clean embedded model") come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from noisynn.analog.hooks import install_converters
    from noisynn.corpus import load_text
    from noisynn.evaluation import compute_perplexity, tokenize
    from noisynn.targets import select
    from noisynn.models.loading import load_model
    from noisynn.analog.presets import get_preset
    from noisynn.spec import make_noise_spec
    from noisynn.analog.setting import ConverterSpec

    lm = load_model()
    ids = tokenize(lm.tokenizer, load_text().text, args.tokens)
    targets = select(lm.model, make_noise_spec("gaussian"))
    window = min(512, args.tokens)
    settings = {
        "clean": None,
        "aihwkit_default": get_preset("aihwkit_default"),
        "aihwkit_default, out_noise 0": get_preset("aihwkit_default", out_noise=0.0),
        "aihwkit_default, out_noise 0, no bound management": get_preset("aihwkit_default", out_noise=0.0,
                                                                         bound_management="none"),
        "afm": get_preset("afm"),
        "aihwkit_hwa": get_preset("aihwkit_hwa"),
    }
    out = {"tokens": int(ids.numel()) - 1, "seeds": args.seeds, "settings": {}}
    for label, io in settings.items():
        hooks = install_converters(ConverterSpec(io, max_length=window), lm, targets) if io else None
        values = []
        for seed in range(args.seeds if io else 1):
            if hooks:
                hooks.reseed(seed)
            values.append(compute_perplexity(lm.model, lm.tokenizer, ids, max_length=window).perplexity)
        if hooks:
            hooks.remove()
        row = {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}
        out["settings"][label] = row
        print(f"{label:55s} {row['median']:10.4g} [{row['min']:.4g}, {row['max']:.4g}]", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
