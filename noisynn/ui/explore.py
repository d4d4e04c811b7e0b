"""The logic behind ``noisynn ui``: settings, clean-vs-noisy comparison, noise during generation, sweeps.

No UI library here: ``ui.py`` only lays out widgets and calls these functions, so everything is
testable without a browser. Nothing is reimplemented: models come from ``load_model``, noise from
``NoiseInjector`` (the sweep's seeds, so the exported command reproduces a setting), converters from
``install_converters``, text and metrics from ``decode``, ``compute_perplexity`` and ``entropy_bits``,
sweeps from the runner. The device and converter controls are the CLI's flags (``explore_flags``); the
figures and tables are in ``explore_figures``, the growing curve in ``explore_curve``, the Saved runs
tab in ``saved_runs``.

Every computation can be cancelled: it takes ``cancelled()`` (a ticket of ``Requests``), checked before
each Linear layer's forward pass, so a newer slider release or the Stop button ends it within a layer.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..analog.attention import install_attention
from ..analog.hooks import install_converters
from ..analog.kv_store import ATTENTION_FLAGS
from ..corpus import load_text
from ..errors import NoisyNNError
from ..heap import bound_heap, release_heap
from ..evaluation import PerplexityResult, compute_perplexity, decode, entropy_bits, tokenize
from .figures import token_label
from .setting import Cancelled, Requests, Setting, check_setting, noise_seed
from ..inject import NoiseInjector
from ..targets import select_targets
from ..models.embedded import DEFAULT_MODEL
from ..models.loaded import LoadedModel
from ..models.checks import fit_context
from ..models.loading import load_model
from ..noise import NOISE_REGISTRY
from ..runs.schema import LEADING_COLUMNS
from ..runs.folder import RunFolder
from ..runs.runner import Point, TrialResult, grid, leading_columns, run_sweep

log = logging.getLogger(__name__)

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
    top: list[tuple[str, float, float]]  # (token label, p_clean, p_noisy)
    injection: dict = field(default_factory=dict)


def top_k_table(tokenizer, clean: torch.Tensor, noisy: torch.Tensor, k: int) -> list[tuple[str, float, float]]:
    """The union of both distributions' top-k tokens (escaped labels) with their clean and noisy probabilities.

    Ordered by clean probability, then noisy; non-finite noisy probabilities (broken logits) read 0.
    """
    noisy = noisy.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    ids = list(dict.fromkeys(clean.topk(k).indices.tolist() + noisy.topk(k).indices.tolist()))
    ids.sort(key=lambda i: (-float(clean[i]), -float(noisy[i])))
    return [(token_label(tokenizer.decode([int(i)])), float(clean[i]), float(noisy[i])) for i in ids]


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
    """One token generated under growing noise: the sigma it was produced at, and the text so far."""

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


CACHED = 32  # clean continuations, clean perplexities and token windows kept per explorer


def _never() -> bool:
    return False


class Recent(OrderedDict):
    """A dict of at most ``size`` entries; setting a new key past that drops the least recently set or read."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __getitem__(self, key):
        self.move_to_end(key)
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class Explorer:
    """Loaded models (each loaded once), their evaluation tokens and clean results; one model user at a time.

    Noise is applied in place (from a snapshot, restored bit-exactly after every call), so every
    call that touches a model holds ``lock``. Memory is bounded: at most ``max_models`` models (each with one
    snapshot), ``CACHED`` clean results of each kind, and the C heap shared by the server's threads and given back
    after every noisy pass (noisynn.heap). The clean results are the digital model's (no converters).
    """

    def __init__(self, device: str = "auto", dtype: str | None = None, text_file: str | None = None,
                 dataset: str | None = None, loader: Callable[..., LoadedModel] = load_model, max_models: int = 2,
                 device_map: str | None = None, max_memory: str | None = None, bound_heap_memory: bool = True):
        self.device, self.dtype, self.loader, self.max_models = device, dtype, loader, max_models
        # a big model sharded across the node's devices (as --device_map/--max_memory of the scripts)
        self.placement = {"device_map": device_map, "max_memory": max_memory} if device_map else {}
        self.text_file, self.dataset = text_file, dataset
        self.lock = threading.RLock()
        self.requests = Requests()
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._injectors: dict[str, tuple[tuple, NoiseInjector]] = {}
        self._hooks: dict[str, tuple[tuple, object]] = {}
        self._attention: dict[str, tuple[tuple, object]] = {}
        # Sized caches: a day of prompts and windows keeps at most CACHED of each (a clean result is small).
        self._clean_text: Recent = Recent(CACHED)
        self._clean_ppl: Recent = Recent(CACHED)
        self._eval_ids: Recent = Recent(CACHED)
        self._text = None
        if bound_heap_memory:
            bound_heap()  # the server's worker threads would each keep freed noise draws (noisynn.heap)

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
                    self._drop_hooks(old)
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
        key = (s.noise_type, s.scale, s.target_spec, s.blocks, s.include_bias, s.flags)
        cached = self._injectors.get(s.model)
        if cached is None or cached[0] != key:
            self._injectors.pop(s.model, None)
            self._drop_hooks(s.model)
            cached = (key, NoiseInjector(self.model(s.model).model, s.spec))
            self._injectors[s.model] = cached
        return cached[1]

    def _converters(self, s: Setting, inj: NoiseInjector):
        """The converter hooks of this setting (installed once, off outside noisy passes), or None."""
        key = (s.flags, s.scale, s.target_spec, s.blocks, s.include_bias, s.max_length)
        cached = self._hooks.get(s.model)
        if cached is not None and cached[0] == key:
            return cached[1]
        self._drop_hooks(s.model)
        hooks = install_converters(s.converter_spec(self.text_file, self.dataset), self.model(s.model), inj.targets,
                                   seed=s.seed)
        if hooks is not None:
            hooks.set_enabled(False)
        self._hooks[s.model] = (key, hooks)
        return hooks

    def _analog_attention(self, s: Setting):
        """The analog attention of this setting (installed once, off outside noisy passes), or None."""
        key = tuple((k, v) for k, v in s.flags if k in ATTENTION_FLAGS)
        cached = self._attention.get(s.model)
        if cached is not None and cached[0] == key:
            return cached[1]
        self._drop_hooks(s.model, converters=False)
        handle = install_attention(s.attention, self.model(s.model).model, seed=s.seed)
        if handle is not None:
            handle.set_enabled(False)
        self._attention[s.model] = (key, handle)
        return handle

    def _drop_hooks(self, name: str, converters: bool = True) -> None:
        """Remove the converter hooks (unless ``converters`` is False) and the analog attention of a model."""
        for store in ((self._hooks, self._attention) if converters else (self._attention,)):
            cached = store.pop(name, None)
            if cached is not None and cached[1] is not None:
                cached[1].remove()

    @contextmanager
    def _noisy(self, s: Setting, sigma: float | None = None):
        """The model with this setting's noise at ``sigma`` (default s.sigma) and its converters on."""
        inj = self._injector(s)
        hooks = self._converters(s, inj)
        attention = self._analog_attention(s)
        sigma = s.sigma if sigma is None else sigma
        try:
            inj.realize(noise_seed(s.seed), sigma)
            if hooks is not None:
                hooks.set_enabled(True)
                hooks.reseed(Point(0, sigma, 0).sample_seed(s.seed))  # the sweep's level 0, trial 0
            if attention is not None:  # the sweep's store (trial 0) and read noise (level 0, trial 0)
                attention.set_enabled(True)
                attention.reseed(noise_seed(s.seed), Point(0, sigma, 0).sample_seed(s.seed))
            yield inj
        finally:
            inj.restore()
            if hooks is not None:
                hooks.set_enabled(False)
            if attention is not None:
                attention.set_enabled(False)
            release_heap()

    @contextmanager
    def _watch(self, lm: LoadedModel, cancelled: Callable[[], bool] | None):
        """Raise Cancelled before any Linear layer's forward once ``cancelled()``: a stop within one layer."""
        if cancelled is None:
            yield
            return

        def check(module, args):
            if cancelled():
                raise Cancelled

        if cancelled():
            raise Cancelled
        handles = [m.register_forward_pre_hook(check) for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def checked(self, s: Setting) -> Setting:
        """``check_setting`` including the model's block count and context (loads the model if needed):
        a window, or the prompt plus its generated tokens, beyond the model's positions is refused."""
        s = check_setting(s)
        if s.blocks != "all":
            s = check_setting(s, self.n_blocks(s.model))
        fit_context(self.model(s.model), s.max_length, [s.prompt], s.max_new_tokens)
        return s

    # -- live comparison -------------------------------------------------------------------------
    def compare(self, s: Setting, cancelled: Callable[[], bool] | None = None) -> Comparison:
        """Clean and noisy greedy continuations of the prompt, their entropies and next-token top-k."""
        s = self.checked(s)
        with self.lock:
            lm = self.model(s.model)
            with self._watch(lm, cancelled):
                key = (s.model, s.prompt, s.max_new_tokens)
                if key not in self._clean_text:
                    self._clean_text[key] = _continuation(lm, s.prompt, s.max_new_tokens)
                clean = self._clean_text[key]
                with self._noisy(s) as inj:
                    noisy = _continuation(lm, s.prompt, s.max_new_tokens)
                info = inj.describe()
        return Comparison(s, clean, noisy, top_k_table(lm.tokenizer, clean.first_probs, noisy.first_probs, s.top_k),
                          info)

    def perplexity(self, s: Setting, progress: Callable[[float], None] | None = None,
                   cancelled: Callable[[], bool] | None = None) -> tuple[PerplexityResult, PerplexityResult]:
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

            with self._watch(lm, cancelled):
                if need_clean:
                    self._clean_ppl[key] = compute_perplexity(lm.model, lm.tokenizer, ids, max_length=s.max_length,
                                                              batch_size=1, progress=report(0))
                with self._noisy(s):
                    noisy = compute_perplexity(lm.model, lm.tokenizer, ids, max_length=s.max_length, batch_size=1,
                                               progress=report(parts - 1))
        return self._clean_ppl[key], noisy

    # -- noise during generation -----------------------------------------------------------------
    def drift(self, s: Setting, sigma_start: float, sigma_end: float,
              cancelled: Callable[[], bool] | None = None) -> Iterator[DriftStep]:
        """Generate greedily while sigma grows token by token (``decode``'s before_step); yields each token.

        One noise realization (the setting's seed) is set to each token's sigma, so the text degrades
        smoothly. The decoding runs in a worker thread; closing the iterator (or ``cancelled()``) stops it.
        """
        s = self.checked(s)
        for name, value in (("start sigma", sigma_start), ("end sigma", sigma_end)):
            if value is None or not (math.isfinite(float(value)) and float(value) >= 0):
                raise NoisyNNError(f"{name} must be a finite number >= 0, got {value}")
        sigmas = drift_sigmas(float(sigma_start), float(sigma_end), s.max_new_tokens)
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        done = object()
        cancelled = cancelled or _never

        def work():
            try:
                with self.lock:
                    lm = self.model(s.model)
                    inj = self._injector(s)
                    hooks = self._converters(s, inj)
                    attention = self._analog_attention(s)

                    def before_step(t):
                        if stop.is_set() or cancelled():
                            raise Cancelled
                        inj.realize(noise_seed(s.seed), sigmas[t])

                    def on_token(t, token_id, entropy, logprob):
                        out.put((t, token_id, entropy, logprob))

                    try:
                        for on in (hooks, attention):
                            if on is not None:
                                on.set_enabled(True)
                        _continuation(lm, s.prompt, s.max_new_tokens, before_step, on_token)
                    finally:
                        inj.restore()
                        for on in (hooks, attention):
                            if on is not None:
                                on.set_enabled(False)
                        release_heap()
            except Cancelled:
                pass
            except BaseException as err:  # handed to the consumer, which re-raises it
                out.put(err)
            finally:
                out.put(done)

        # The tokenizer before the worker starts: model() takes the lock the worker holds until its last
        # token, and waiting for it here held every token back to the end (nothing streamed).
        tokenizer = self.model(s.model).tokenizer
        worker = threading.Thread(target=work, name="noisynn-drift", daemon=True)
        worker.start()
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


def sweep_points(explorer: Explorer, s: Setting, sigmas: list[float], folder: str | Path,
                 cancelled: Callable[[], bool] | None = None) -> Iterator[tuple[int, float, PerplexityResult,
                                                                                 PerplexityResult]]:
    """Perplexity at each of ``sigmas`` for setting ``s`` by the runner (``run_sweep``: trial 0, the sweep's
    seeds and row schema, rows appended to the run folder ``folder``); yields (index, sigma, clean, noisy)
    as each point finishes. ``cancelled()`` stops it between layers; the points done so far stay."""
    s = explorer.checked(s)
    out: queue.Queue = queue.Queue()
    done = object()
    run = RunFolder(folder, list(LEADING_COLUMNS) + ["perplexity", "nll", "bits_per_byte", "eval_tokens"])

    def trial(point: Point) -> TrialResult:
        clean, noisy = explorer.perplexity(replace(s, sigma=point.sigma), cancelled=cancelled)
        out.put((point.level, point.sigma, clean, noisy))
        return TrialResult({"perplexity": noisy.perplexity, "nll": noisy.nll, "bits_per_byte": noisy.bits_per_byte,
                            "eval_tokens": noisy.n_tokens})

    def work():
        try:
            rows = run.open({"experiment": "ui-sweep", "setting": s.label, "sigmas": sigmas}, {"experiment": "ui-sweep"})
            try:
                run_sweep(run, grid(sigmas, 1), trial, leading_columns("ui-sweep", s.model, s.noise_type, s.scale,
                                                                      s.seed), rows)
                run.finish()
            finally:
                run.release()
        except Cancelled:
            pass
        except BaseException as err:  # handed to the consumer, which re-raises it
            out.put(err)
        finally:
            out.put(done)

    worker = threading.Thread(target=work, name="noisynn-sweep", daemon=True)
    worker.start()
    try:
        while (item := out.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        worker.join(timeout=120)


def noise_choices() -> list[str]:
    """Every registered noise (built-ins, device models, plugins), read when the page is built."""
    return sorted(NOISE_REGISTRY)


def result_rows(cmp: Comparison, ppl: tuple[PerplexityResult, PerplexityResult] | None = None) -> list[dict]:
    """Tidy rows (clean at sigma 0, noisy at sigma) with the run folder's leading columns.

    ``seed`` is the realization's derived seed (as in results.csv), ``base_seed`` the seed typed in the page.
    """
    s = cmp.setting
    rows = []
    for sigma, cont, p in ((0.0, cmp.clean, ppl[0] if ppl else None), (s.sigma, cmp.noisy, ppl[1] if ppl else None)):
        rows.append({"experiment": "ui", "model": s.model, "noise_type": s.noise_type, "scale": s.scale,
                     "sigma": sigma, "trial": 0, "seed": noise_seed(s.seed), "base_seed": s.seed,
                     "targets": s.target_spec, "blocks": s.blocks, "prompt": s.prompt,
                     "max_new_tokens": s.max_new_tokens, "perplexity": p.perplexity if p else None,
                     "nll": p.nll if p else None, "bits_per_byte": p.bits_per_byte if p else None,
                     "eval_tokens": p.n_tokens if p else None, "entropy_bits": cont.mean_entropy,
                     "continuation": cont.text})
    return rows
