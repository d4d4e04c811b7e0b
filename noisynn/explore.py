"""The logic behind ``noisynn ui``: settings, clean-vs-noisy comparison, drift, saved runs, export.

No UI library here: ``ui.py`` only lays out widgets and calls these functions, so everything
is testable without a browser. Nothing is reimplemented: models come from ``load_model``,
noise from ``NoiseInjector`` (the sweep's seeds, so the exported command reproduces a setting),
text and metrics from ``decode``, ``compute_perplexity`` and ``entropy_bits``. The Saved runs
tab reads ``saved_runs``.

Why this module is long: it is one idea, the explorer's state and every action of its tabs
(settings and their checks, the model cache, clean-vs-noisy comparison, drift, export, the
figures); the page layout lives in ``ui.py`` and the Saved runs tab in ``saved_runs.py``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import queue
import shlex
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from .corpus import load_text
from .errors import NoisyNNError
from .evaluation import DEFAULT_PROMPT, PerplexityResult, compute_perplexity, decode, entropy_bits, tokenize
from .inject import NoiseInjector, select_targets
from .models import DEFAULT_MODEL, LoadedModel, fit_context, load_model
from .noise import NOISE_REGISTRY
from .results import format_value
from .runner import Point
from .spec import NoiseSpec, make_noise_spec, parse_blocks

log = logging.getLogger(__name__)

TARGET_CHOICES = ("attention", "mlp", "head")
MAX_NEW_TOKENS = 256
MAX_EVAL_TOKENS = 4096
MAX_TOP_K = 50
SIGMA_DIGITS = 4  # the UI's sigma is rounded to this many significant digits, so the CLI command is exact
CSV_COLUMNS = ("experiment", "model", "noise_type", "scale", "sigma", "trial", "seed", "targets", "blocks",
               "prompt", "max_new_tokens", "perplexity", "nll", "bits_per_byte", "eval_tokens", "entropy_bits",
               "continuation")


@dataclass(frozen=True)
class Setting:
    """Everything that determines what the explorer shows."""

    model: str = DEFAULT_MODEL
    noise_type: str = "gaussian"
    sigma: float = 0.02
    scale: str = "absolute"
    targets: tuple[str, ...] = ("attention", "mlp")
    blocks: str = "all"  # "0-9,20": attention/mlp weights of these blocks only
    seed: int = 0
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 30
    top_k: int = 8
    eval_tokens: int = 1024
    max_length: int = 512
    df: float | None = None  # student_t degrees of freedom
    include_bias: bool = False

    @property
    def target_spec(self) -> str:
        return ",".join(self.targets)

    @property
    def block_list(self) -> list[int] | None:
        return parse_blocks(self.blocks)

    @property
    def noise_params(self) -> dict:
        return {"df": self.df} if self.df is not None else {}

    @property
    def spec(self) -> NoiseSpec:
        """The checked noise spec, by the same function as the command line's (``noisynn.spec``)."""
        return make_noise_spec(self.noise_type, self.noise_params, self.scale, self.target_spec, self.blocks,
                               self.include_bias)


def sigma_from_slider(log10_sigma: float) -> float:
    """The log-scale slider's value (log10 sigma) as sigma, rounded to SIGMA_DIGITS significant digits."""
    return float(f"{10 ** float(log10_sigma):.{SIGMA_DIGITS}g}")


def _int_in(name: str, value, lo: int, hi: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NoisyNNError(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise NoisyNNError(f"{name} must be a whole number, got {value!r}")
    if not lo <= number <= hi:
        raise NoisyNNError(f"{name} must be between {lo} and {hi}, got {int(number)}")
    return int(number)


def check_setting(s: Setting, n_blocks: int | None = None) -> Setting:
    """The setting with numbers normalised; raises NoisyNNError with a one-line reason if it is bad."""
    if not (s.prompt or "").strip():
        raise NoisyNNError("the prompt is empty: type a few words for the model to continue")
    sigma = float(s.sigma) if s.sigma is not None else float("nan")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise NoisyNNError(f"sigma must be a finite number >= 0, got {s.sigma}")
    if not s.targets:
        raise NoisyNNError("choose at least one target (attention, mlp or head)")
    df = None if s.df in (None, "") or s.noise_type != "student_t" else float(s.df)
    if df is not None and not (math.isfinite(df) and df > 0):
        raise NoisyNNError(f"df must be > 0, got {s.df}")
    blocks = replace(s, df=df).spec.blocks  # noise, scale, targets, blocks: the command line's checks
    if blocks is not None and n_blocks is not None and blocks[-1] >= n_blocks:
        raise NoisyNNError(f"block {blocks[-1]} does not exist: this model has blocks 0-{n_blocks - 1}")
    return replace(
        s, sigma=sigma, df=df, prompt=s.prompt, blocks=_format_blocks(None if blocks is None else list(blocks)),
        seed=_int_in("seed", s.seed, 0, 2**31 - 1),
        max_new_tokens=_int_in("max new tokens", s.max_new_tokens, 1, MAX_NEW_TOKENS),
        top_k=_int_in("top-k", s.top_k, 1, MAX_TOP_K),
        eval_tokens=_int_in("evaluation tokens", s.eval_tokens, 16, MAX_EVAL_TOKENS),
        max_length=_int_in("perplexity window", s.max_length, 16, 8192))


def _format_blocks(blocks: list[int] | None) -> str:
    """[0, 1, 2, 3, 7] -> "0-3,7"; None -> "all"."""
    if blocks is None:
        return "all"
    parts, start = [], blocks[0]
    for prev, cur in zip(blocks, blocks[1:] + [None]):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(parts)


def noise_seed(seed: int) -> int:
    """Seed of the noise realization: the sweep's trial 0 at base seed ``seed`` (so its CLI reproduces it)."""
    return Point(0, 0.0, 0).seed(int(seed))


def cli_command(s: Setting, out: str = "runs/ui-export", text_file: str | None = None,
                dataset: str | None = None) -> str:
    """The ``thermal_noise_simulation.py`` command that reproduces this setting's noisy model and numbers.

    One level (``--max_noise sigma --n_levels 1``), one trial (trial 0 of ``--seed``, the same noise
    realization), perplexity on the same tokens; its greedy sample in samples.jsonl is the noisy
    continuation shown here.
    """
    argv = ["python", "thermal_noise_simulation.py", "--model", s.model]
    argv += ["--text_file", str(text_file)] if text_file else ["--dataset", dataset] if dataset else []
    argv += ["--noise_type", s.noise_type]
    if s.df is not None and s.noise_type == "student_t":
        argv += ["--df", repr(float(s.df))]
    argv += ["--scale", s.scale, "--targets", s.target_spec]
    if s.blocks != "all":
        argv += ["--blocks", s.blocks]
    if s.include_bias:
        argv += ["--include_bias"]
    argv += ["--max_noise", repr(float(s.sigma)), "--n_levels", "1", "--n_trials", "1", "--seed", str(s.seed),
             "--prompt", s.prompt, "--max_new_tokens", str(s.max_new_tokens),
             "--entropy_tokens", str(s.max_new_tokens), "--eval_tokens", str(s.eval_tokens),
             "--max_length", str(s.max_length), "--out", out]
    return shlex.join(argv)


@dataclass
class Continuation:
    """One greedy continuation: text, its tokens, per-step entropy (bits) and the first step's distribution."""

    text: str
    tokens: list[str]
    entropy: list[float]
    logprob: list[float]
    first_probs: torch.Tensor  # next-token probabilities after the prompt (vocab,)

    @property
    def mean_entropy(self) -> float:
        return float(sum(self.entropy) / len(self.entropy)) if self.entropy else float("nan")


@dataclass
class Comparison:
    setting: Setting
    clean: Continuation
    noisy: Continuation
    top: list[tuple[str, float, float]]  # (token, p_clean, p_noisy)
    injection: dict = field(default_factory=dict)


def token_label(tokenizer, token_id: int) -> str:
    return repr(tokenizer.decode([int(token_id)]))


def top_k_table(tokenizer, clean: torch.Tensor, noisy: torch.Tensor, k: int) -> list[tuple[str, float, float]]:
    """The union of both distributions' top-k tokens with their clean and noisy probabilities.

    Ordered by clean probability, then noisy; non-finite noisy probabilities (broken logits) read 0.
    """
    noisy = noisy.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    ids = list(dict.fromkeys(clean.topk(k).indices.tolist() + noisy.topk(k).indices.tolist()))
    ids.sort(key=lambda i: (-float(clean[i]), -float(noisy[i])))
    return [(token_label(tokenizer, i), float(clean[i]), float(noisy[i])) for i in ids]


def _continuation(lm: LoadedModel, prompt: str, max_new_tokens: int,
                  before_step: Callable[[int], None] | None = None,
                  on_token: Callable[[int, int, float, float], None] | None = None) -> Continuation:
    """Greedy decode with the library's decoder, keeping the first step's distribution."""
    first: dict = {}

    def after_step(t: int, choice: torch.Tensor, logits: torch.Tensor) -> None:
        if t == 0:
            first["probs"] = torch.softmax(logits[0].float(), -1).cpu()
        if on_token is not None:
            row = logits[0:1].float()
            chosen = int(choice[0])
            on_token(t, chosen, float(entropy_bits(row)[0]), float(torch.log_softmax(row, -1)[0, chosen]))

    gen = decode(lm.model, lm.tokenizer, [prompt], max_new_tokens, greedy=True, before_step=before_step,
                 after_step=after_step)
    live = ~gen.finished[0]
    ids = gen.token_ids[0][live].tolist()
    eos = lm.tokenizer.eos_token_id
    tokens = [lm.tokenizer.decode([i]) for i in ids if i != eos]
    return Continuation(gen.texts[0], tokens, gen.entropy_bits[0][live].tolist(), gen.logprob[0][live].tolist(),
                        first["probs"])


@dataclass
class DriftStep:
    """One token of drift mode: the sigma it was produced at, and the text so far."""

    t: int
    sigma: float
    token: str
    text: str
    entropy: float
    logprob: float


def drift_sigmas(sigma_start: float, sigma_end: float, n_tokens: int) -> list[float]:
    """Sigma at each generated token: geometric from start to end (linear if start is 0)."""
    if n_tokens == 1:
        return [float(sigma_end)]
    if sigma_start > 0 and sigma_end > 0:
        ratio = (sigma_end / sigma_start) ** (1 / (n_tokens - 1))
        return [float(sigma_start * ratio ** t) for t in range(n_tokens)]
    return [float(sigma_start + (sigma_end - sigma_start) * t / (n_tokens - 1)) for t in range(n_tokens)]


class _Cancelled(Exception):
    pass


class Explorer:
    """Loaded models (each loaded once), their evaluation tokens and clean results; one model user at a time.

    Noise is applied in place (from a snapshot, restored bit-exactly after every call), so every
    call that touches a model holds ``lock``.
    """

    def __init__(self, device: str = "auto", dtype: str | None = None, text_file: str | None = None,
                 dataset: str | None = None, loader: Callable[..., LoadedModel] = load_model, max_models: int = 2,
                 device_map: str | None = None, max_memory: str | None = None):
        self.device, self.dtype, self.loader, self.max_models = device, dtype, loader, max_models
        # a big model sharded across the node's devices (as --device_map/--max_memory of the scripts)
        self.placement = {"device_map": device_map, "max_memory": max_memory} if device_map else {}
        self.text_file, self.dataset = text_file, dataset
        self.lock = threading.RLock()
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._injectors: dict[str, tuple[tuple, NoiseInjector]] = {}
        self._clean_text: dict[tuple, Continuation] = {}
        self._clean_ppl: dict[tuple, PerplexityResult] = {}
        self._eval_ids: dict[tuple, torch.Tensor] = {}
        self._text = None

    # -- models and text -------------------------------------------------------------------------
    def model(self, name: str) -> LoadedModel:
        name = (name or "").strip() or DEFAULT_MODEL
        with self.lock:
            if name not in self._models:
                log.info("loading model %s", name)
                self._models[name] = self.loader(name, device=self.device, dtype=self.dtype, **self.placement)
                while len(self._models) > self.max_models:
                    old, _ = self._models.popitem(last=False)
                    self._injectors.pop(old, None)
            self._models.move_to_end(name)
            return self._models[name]

    def n_blocks(self, name: str) -> int:
        lm = self.model(name)
        blocks = [t.cls.block for t in select_targets(lm.model, "blocks") if t.cls.block is not None]
        return max(blocks) + 1 if blocks else 0

    def eval_ids(self, s: Setting) -> torch.Tensor:
        key = (s.model, s.eval_tokens)
        if key not in self._eval_ids:
            if self._text is None:
                self._text = load_text(self.text_file, self.dataset)
            ids = tokenize(self.model(s.model).tokenizer, self._text.text, s.eval_tokens)
            if ids.numel() - 1 < s.eval_tokens:
                raise NoisyNNError(f"the evaluation text has only {ids.numel() - 1} tokens; "
                                   f"lower evaluation tokens to at most that")
            self._eval_ids[key] = ids
        return self._eval_ids[key]

    def _injector(self, s: Setting) -> NoiseInjector:
        """The injector for this setting's noise and targets (reused while they stay); ``realize`` draws."""
        key = (s.noise_type, s.scale, s.target_spec, s.blocks, s.include_bias, s.df)
        cached = self._injectors.get(s.model)
        if cached is None or cached[0] != key:
            self._injectors.pop(s.model, None)
            cached = (key, NoiseInjector(self.model(s.model).model, s.spec))
            self._injectors[s.model] = cached
        return cached[1]

    def checked(self, s: Setting) -> Setting:
        """``check_setting`` including the model's block count and context (loads the model if needed):
        a window, or the prompt plus its generated tokens, beyond the model's positions is refused."""
        s = check_setting(s)
        if s.blocks != "all":
            s = check_setting(s, self.n_blocks(s.model))
        fit_context(self.model(s.model), s.max_length, [s.prompt], s.max_new_tokens)
        return s

    # -- live comparison -------------------------------------------------------------------------
    def compare(self, s: Setting) -> Comparison:
        """Clean and noisy greedy continuations of the prompt, their entropies and next-token top-k."""
        s = self.checked(s)
        with self.lock:
            lm = self.model(s.model)
            key = (s.model, s.prompt, s.max_new_tokens)
            if key not in self._clean_text:
                self._clean_text[key] = _continuation(lm, s.prompt, s.max_new_tokens)
            clean = self._clean_text[key]
            inj = self._injector(s)
            try:
                inj.realize(noise_seed(s.seed), s.sigma)
                noisy = _continuation(lm, s.prompt, s.max_new_tokens)
            finally:
                inj.restore()
            info = inj.describe()
        return Comparison(s, clean, noisy, top_k_table(lm.tokenizer, clean.first_probs, noisy.first_probs, s.top_k),
                          info)

    def perplexity(self, s: Setting, progress: Callable[[float], None] | None = None
                   ) -> tuple[PerplexityResult, PerplexityResult]:
        """(clean, noisy) perplexity and bits/byte on ``eval_tokens`` of the evaluation text."""
        s = self.checked(s)
        with self.lock:
            lm = self.model(s.model)
            ids = self.eval_ids(s)
            key = (s.model, s.eval_tokens, s.max_length)
            need_clean = key not in self._clean_ppl
            parts = 2 if need_clean else 1

            def report(part: int):
                return None if progress is None else (lambda done, total: progress((part + done / total) / parts))

            if need_clean:
                self._clean_ppl[key] = compute_perplexity(lm.model, lm.tokenizer, ids, max_length=s.max_length,
                                                          batch_size=1, progress=report(0))
            inj = self._injector(s)
            try:
                inj.realize(noise_seed(s.seed), s.sigma)
                noisy = compute_perplexity(lm.model, lm.tokenizer, ids, max_length=s.max_length, batch_size=1,
                                           progress=report(parts - 1))
            finally:
                inj.restore()
        return self._clean_ppl[key], noisy

    # -- drift mode ------------------------------------------------------------------------------
    def drift(self, s: Setting, sigma_start: float, sigma_end: float) -> Iterator[DriftStep]:
        """Generate greedily while sigma grows token by token (``decode``'s before_step); yields each token.

        One noise realization (the setting's seed) is scaled step by step, so the text degrades
        smoothly. The decoding runs in a worker thread; closing the iterator stops it.
        """
        s = self.checked(s)
        for name, value in (("start sigma", sigma_start), ("end sigma", sigma_end)):
            if value is None or not (math.isfinite(float(value)) and float(value) >= 0):
                raise NoisyNNError(f"{name} must be a finite number >= 0, got {value}")
        sigmas = drift_sigmas(float(sigma_start), float(sigma_end), s.max_new_tokens)
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        done = object()

        def work():
            try:
                with self.lock:
                    lm = self.model(s.model)
                    inj = self._injector(s)

                    def before_step(t):
                        if stop.is_set():
                            raise _Cancelled
                        inj.realize(noise_seed(s.seed), sigmas[t])

                    def on_token(t, token_id, entropy, logprob):
                        out.put((t, token_id, entropy, logprob))

                    try:
                        _continuation(lm, s.prompt, s.max_new_tokens, before_step, on_token)
                    finally:
                        inj.restore()
            except _Cancelled:
                pass
            except BaseException as err:  # handed to the consumer, which re-raises it
                out.put(err)
            finally:
                out.put(done)

        worker = threading.Thread(target=work, name="noisynn-drift", daemon=True)
        worker.start()
        tokenizer = self.model(s.model).tokenizer
        ids: list[int] = []
        try:
            while True:
                item = out.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                t, token_id, entropy, logprob = item
                if token_id == tokenizer.eos_token_id:
                    break
                ids.append(token_id)
                yield DriftStep(t, sigmas[t], tokenizer.decode([token_id]),
                                tokenizer.decode(ids, skip_special_tokens=True), entropy, logprob)
        finally:
            stop.set()
            worker.join(timeout=60)


# -- figures (matplotlib Figure objects, no pyplot state) ---------------------------------------------
def _figure(width: float = 6.4, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def probability_figure(top: Sequence[tuple[str, float, float]], sigma: float):
    """Horizontal bars: next-token probability after the prompt, clean vs noisy."""
    fig, ax = _figure(5.6, max(3.4, 0.24 * len(top) + 1.3))
    labels = [t for t, _, _ in top]
    y = list(range(len(top)))
    ax.barh([v - 0.2 for v in y], [c for _, c, _ in top], height=0.4, label="clean", color="tab:blue")
    ax.barh([v + 0.2 for v in y], [n for _, _, n in top], height=0.4, label=f"noisy (sigma={sigma:g})",
            color="tab:red")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("probability")
    ax.set_xlim(0, min(1.0, 1.15 * max([p for _, c, n in top for p in (c, n)] + [0.05])))
    ax.set_title("next token after the prompt (top-k of each)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def entropy_figure(clean: Sequence[float], noisy: Sequence[float], sigma: float):
    """Next-token entropy (bits) at each generated token, clean vs noisy."""
    fig, ax = _figure(5.6, 3.4)
    ax.plot(range(1, len(clean) + 1), clean, "o-", ms=3, label="clean", color="tab:blue")
    ax.plot(range(1, len(noisy) + 1), noisy, "o-", ms=3, label=f"noisy (sigma={sigma:g})", color="tab:red")
    ax.set_xlabel("generated token")
    ax.set_ylabel("entropy (bits)")
    top = max([h for h in list(clean) + list(noisy) if math.isfinite(h)] + [1.0])
    ax.set_ylim(0, top * 1.3)
    ax.set_title("next-token entropy along the generation", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    ax.grid(alpha=0.3)
    return fig


def drift_figure(steps: Sequence[DriftStep]):
    """Entropy and log-probability of each drift token against the sigma it was produced at."""
    fig, ax = _figure(6.4, 2.8)
    xs = [st.sigma for st in steps]
    ax.plot(xs, [st.entropy for st in steps], "o-", ms=3, color="tab:red", label="entropy (bits)")
    ax.plot(xs, [-st.logprob / math.log(2) for st in steps], "s-", ms=3, color="tab:gray",
            label="surprisal of the chosen token (bits)")
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("sigma at that token")
    ax.set_title("each token of the drift", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


# -- results table and CSV ------------------------------------------------------------------------
def result_rows(cmp: Comparison, ppl: tuple[PerplexityResult, PerplexityResult] | None = None) -> list[dict]:
    """Tidy rows (clean at sigma 0, noisy at sigma) with the run folder's leading columns."""
    s = cmp.setting
    rows = []
    for label, sigma, cont, p in (("clean", 0.0, cmp.clean, ppl[0] if ppl else None),
                                  ("noisy", s.sigma, cmp.noisy, ppl[1] if ppl else None)):
        rows.append({"experiment": "ui", "model": s.model, "noise_type": s.noise_type, "scale": s.scale,
                     "sigma": sigma, "trial": 0, "seed": noise_seed(s.seed), "targets": s.target_spec,
                     "blocks": s.blocks, "prompt": s.prompt, "max_new_tokens": s.max_new_tokens,
                     "perplexity": p.perplexity if p else None, "nll": p.nll if p else None,
                     "bits_per_byte": p.bits_per_byte if p else None, "eval_tokens": p.n_tokens if p else None,
                     "entropy_bits": cont.mean_entropy, "continuation": cont.text})
    return rows


def csv_text(rows: Sequence[dict], columns: Sequence[str] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([format_value(r.get(c)) for c in columns])
    return buf.getvalue()


def write_csv(rows: Sequence[dict], folder: str | Path | None = None) -> Path:
    """The rows as a CSV file in a fresh temporary folder (for the download button)."""
    folder = Path(folder or tempfile.mkdtemp(prefix="noisynn-ui-"))
    path = folder / "noisynn-ui-results.csv"
    path.write_text(csv_text(rows), encoding="utf-8")
    return path


def metrics_table(rows: Sequence[dict]) -> list[list]:
    """Rows for the on-page table: condition, sigma, perplexity, bits/byte, mean entropy, tokens."""
    def num(v, fmt):
        return "" if v is None else (format(v, fmt) if isinstance(v, float) and math.isfinite(v) else str(v))

    return [[label, num(r["sigma"], "g"), num(r["perplexity"], ".4g"), num(r["bits_per_byte"], ".3f"),
             num(r["entropy_bits"], ".2f"), "" if r["eval_tokens"] is None else r["eval_tokens"]]
            for label, r in zip(("clean", "noisy"), rows)]


METRICS_HEADERS = ["", "sigma", "perplexity", "bits/byte", "mean entropy (bits)", "eval tokens"]


def noise_choices() -> list[str]:
    """Every registered noise (built-ins, device models, plugins), read when the page is built."""
    return sorted(NOISE_REGISTRY)
