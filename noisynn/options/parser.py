"""The parser every script uses: one-line errors with exit code 2, flag bounds, no empty values.

Every user error ends the same way: one line ``<prog>: error: <message>`` on stderr and exit code 2,
raised before the run folder is touched."""

from __future__ import annotations

import argparse

from ..analog.fields import FIELDS, above

EXIT_USAGE = 2


# The most each size or level flag takes, by destination name, and why: beyond these a run cannot
# finish (memory, the float range) or the value means nothing, and such values used to fail only
# after the run folder existed. Checked after parsing, so every script that has the flag gets it.
_GRID = "each point is a full evaluation: a larger grid would run for months and its list alone fills memory"
_TOKENS = "more tokens than any model's context or any text here"
_SIGMA = ("beyond 1e30 no float32 headroom is left (its largest value is 3.4e38): weights, figure axes and "
          "summaries overflow to inf, where every model was pure noise long before")
FLAG_BOUNDS: dict[str, tuple[float, str]] = {
    "n_trials": (10_000, _GRID), "n_levels": (10_000, _GRID), "n_points": (10_000, _GRID),
    "unit_trials": (10_000, _GRID), "max_verifications": (10_000, _GRID),
    "mean_draws": (100_000, "each draw programs a unit's devices once more"),
    "n_samples": (1_000, "the samples are decoded in one batch"),
    "eval_tokens": (10_000_000, _TOKENS), "heatmap_tokens": (10_000_000, _TOKENS),
    "eval_chars": (100_000_000, "more text than fits the evaluation"),
    "max_length": (1_048_576, _TOKENS), "seq_len": (1_048_576, _TOKENS),
    "max_new_tokens": (100_000, _TOKENS), "entropy_tokens": (100_000, _TOKENS),
    "total_tokens": (100_000, _TOKENS), "window": (100_000, _TOKENS), "rep_window": (100_000, _TOKENS),
    "top_k": (1_000_000, "no vocabulary is larger"),
    "steps": (10_000_000, "training that long is not a noise experiment"),
    "epochs": (100_000, "training that long is not a noise experiment"),
    "batch_size": (65_536, "a batch that large does not fit in memory"),
    "max_samples": (100_000_000, "more training windows than any text here"),
    "seed": (2**63 - 1, "seeds are 63-bit integers"),
    "limit": (10_000_000, "more items than any task here"), "num_fewshot": (10_000, _TOKENS),
    "bootstrap_iters": (1_000_000, "the confidence interval is resampled that often in memory"),
    "max_noise": (1e30, _SIGMA), "noise_level": (1e30, _SIGMA), "start_sigma": (1e30, _SIGMA),
    "end_sigma": (1e30, _SIGMA), "sigma": (1e30, _SIGMA), "search_range": (1e30, _SIGMA),
    "noise_scale": (1e30, _SIGMA), "clip_sigma": (1e30, _SIGMA),
    "weight_decay": (1e3, "AdamW multiplies the weights by (1 - lr x decay) each step: a decay that large erases "
                          "them in a few steps"),
    "temperature": (1e6, "beyond that sampling is uniform"),
    "lr": (1e3, "a learning rate that large diverges at the first step"),
    # the analog setting's fields: their bounds are declared with them (noisynn.analog.fields)
    **{name: (f.most, f.why) for name, f in FIELDS.items() if f.most is not None},
}


# String flags for which an empty value has a documented meaning ('' = none). Every other string flag
# refuses an empty value: "--text_file $TEXT" with TEXT unset must not fall back to the embedded text.
# Prompts say it in their own words ("the prompt is empty"), checked by each experiment.
MAY_BE_EMPTY = {"digital_bits", "prompt", "prompts"}


def empty_error(action: argparse.Action, value) -> str | None:
    """The message for an empty (or blank) string given to a flag that needs a value, else None."""
    if action.dest in MAY_BE_EMPTY or not action.option_strings:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, str) and not v.strip() for v in values) and value != action.default:
        return (f"argument {action.option_strings[0]}: an empty value (an unset shell variable?); "
                "give one, or leave the flag out for its default")
    return None


def bound_error(dest: str, value) -> str | None:
    """The message for a value of flag ``dest`` beyond its bound in ``FLAG_BOUNDS``, else None."""
    if dest not in FLAG_BOUNDS:
        return None
    bound, why = FLAG_BOUNDS[dest]
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > bound:
            return f"argument --{dest}: {above(v, bound, why)}"
    return None


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump) and exit code 2, and whose size and
    level flags are bounded (``FLAG_BOUNDS``)."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102 - argparse API
        parsed, rest = super().parse_known_args(args, namespace)
        given = vars(parsed)
        for action in self._actions:
            if action.dest in given:
                message = empty_error(action, given[action.dest])
                if message:
                    self.error(message)
        for dest, value in given.items():
            message = bound_error(dest, value)
            if message:
                self.error(message)
        defaulted = set(getattr(parsed, "_defaulted", ()))
        for action in self._actions:  # flags whose default a preset may replace: filled in after parsing
            if hasattr(action, "deferred_default") and not hasattr(parsed, action.dest):
                setattr(parsed, action.dest, action.deferred_default)
                defaulted.add(action.dest)
        if defaulted:
            parsed._defaulted = defaulted  # not in run.json's config (config_of skips "_" names)
        return parsed, rest
