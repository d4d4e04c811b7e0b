"""Metrics: perplexity and bits per byte, next-token entropy, generation, diversity, repetition.

Perplexity is exp of the mean next-token negative log-likelihood (NLL, nats) over the scored
tokens; bits per byte = total NLL / ln 2 / UTF-8 bytes of the scored text, comparable across
tokenizers. Entropy is H = -sum_i p_i log2 p_i of the model's next-token distribution, in bits.
Non-finite logits (heavy-tailed noise produces them) give inf/nan metrics and ``finite=False``
instead of an exception.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import NoisyNNError

LN2 = math.log(2.0)
# The prompt generations start from unless one is given (the sweep, the drift experiments, the explorer).
DEFAULT_PROMPT = "The history of science shows that"


class PerplexityResult(float):
    """The perplexity itself, as a ``float``, carrying the details of its computation.

    It behaves as the number the original toolkit returned: ``f"{ppl:.2f}"``, ``ppl < 100``,
    ``round(ppl)``, ``ppl * 2`` (arithmetic gives plain floats), ``json.dumps(ppl)`` and
    ``str(ppl)`` all see the perplexity. Attributes: ``perplexity`` (the same number),
    ``nll`` (mean next-token NLL, nats), ``bits_per_byte``, ``n_tokens`` (scored tokens),
    ``n_bytes`` (UTF-8 bytes of the scored text), ``finite``. ``repr`` shows them all.
    """

    def __new__(cls, perplexity: float, nll: float = float("nan"), bits_per_byte: float = float("nan"),
                n_tokens: int = 0, n_bytes: int = 0, finite: bool | None = None):
        self = super().__new__(cls, perplexity)
        self.nll = float(nll)
        self.bits_per_byte = float(bits_per_byte)
        self.n_tokens = int(n_tokens)
        self.n_bytes = int(n_bytes)
        self.finite = math.isfinite(self.nll) if finite is None else bool(finite)
        return self

    @property
    def perplexity(self) -> float:
        return float(self)

    def as_dict(self) -> dict:
        return {"perplexity": float(self), "nll": self.nll, "bits_per_byte": self.bits_per_byte,
                "n_tokens": self.n_tokens, "n_bytes": self.n_bytes, "finite": self.finite}

    # Pickle and copy rebuild from all fields (the float value alone would lose them).
    def __reduce__(self):
        return (type(self), (float(self), self.nll, self.bits_per_byte, self.n_tokens, self.n_bytes, self.finite))

    __str__ = float.__repr__  # print(ppl) and f"{ppl}" show the number, as before

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"PerplexityResult({fields})"

    def metrics(self) -> dict:
        """The run folder's columns for this result: perplexity, nll, bits_per_byte, eval_tokens, finite."""
        return {"perplexity": self.perplexity, "nll": self.nll, "bits_per_byte": self.bits_per_byte,
                "eval_tokens": self.n_tokens, "finite": self.finite}


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def tokenize(tokenizer, text: str | torch.Tensor, max_tokens: int | None = None) -> torch.Tensor:
    """1-D token ids of ``text`` (a tensor passes through), cut to ``max_tokens + 1`` ids."""
    ids = text if isinstance(text, torch.Tensor) else torch.tensor(
        tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    ids = ids.flatten()
    if max_tokens is not None:
        ids = ids[: max_tokens + 1]
    return ids


def default_window(model) -> int:
    """The window ``compute_perplexity`` uses when ``max_length`` is None (the original toolkit's rule).

    ``config.n_positions`` where the config has it (GPT-2 family), else 1024, cut to the model's
    ``max_position_embeddings`` (or ``n_ctx``) when that is smaller.
    """
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    n_positions = getattr(cfg, "n_positions", None)
    if n_positions:
        return int(n_positions)
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_ctx", None)
    return min(1024, int(limit)) if limit else 1024


@torch.inference_mode()
def compute_perplexity(model, tokenizer, text: str | torch.Tensor, device=None, stride: int | None = 512,
                       max_length: int | None = None, *, batch_size: int = 4, max_tokens: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> PerplexityResult:
    """Perplexity of ``text`` with sliding windows of ``max_length`` tokens moved by ``stride``.

    The original toolkit's call and order: ``compute_perplexity(model, tokenizer, text, device,
    stride=512, max_length=None)``; ``max_length=None`` takes ``default_window(model)``.
    Every token after the first is scored exactly once; with ``stride < max_length`` each
    window re-reads ``max_length - stride`` tokens of context. A ``stride`` longer than the
    window (or None) is cut to the window, so no token is skipped. ``max_tokens`` caps the
    number of scored tokens. Windows of equal length run as one batch of up to ``batch_size``.
    ``progress(scored, total)``, if given, is called after each batch (the UI's progress bar).
    ``device`` is where the inputs go (default: the model's device). Returns a
    ``PerplexityResult``, a float equal to exp(mean NLL).
    """
    device = device or _device_of(model)
    max_length = default_window(model) if max_length is None else int(max_length)
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    stride = max_length if stride is None else min(int(stride), max_length)
    if stride <= 0:
        raise ValueError(f"stride must be in (0, max_length], got {stride}")
    ids = tokenize(tokenizer, text, max_tokens)
    n = ids.numel()
    if n < 2:
        raise ValueError("need at least two tokens to compute a perplexity")
    # Window k reads ids[s : s + L] and predicts ids[s + 1 : s + L + 1]; it scores only targets
    # not scored before.
    windows, done, start = [], 1, 0
    while done < n:
        end = min(start + max_length, n - 1)
        first_new = done - (start + 1)  # index, within the window's predictions, of the first new target
        windows.append((start, end, max(first_new, 0)))
        done = end + 1
        start += stride
    total = torch.zeros((), dtype=torch.float64)
    scored = 0
    for length in sorted({e - s for s, e, _ in windows}, reverse=True):
        group = [w for w in windows if w[1] - w[0] == length]
        for i in range(0, len(group), batch_size):
            batch = group[i: i + batch_size]
            x = torch.stack([ids[s:e] for s, e, _ in batch]).to(device)
            y = torch.stack([ids[s + 1:e + 1] for s, e, _ in batch]).to(device)
            logits = model(input_ids=x, use_cache=False).logits
            for row, (_, _, skip) in enumerate(batch):  # one window at a time: the log-softmax buffer is a window's
                nll = F.cross_entropy(logits[row:row + 1].float().transpose(1, 2), y[row:row + 1], reduction="none")[0]
                total += nll[skip:].double().sum().cpu()
                scored += nll.shape[0] - skip
            del logits, nll
            if progress is not None:
                progress(scored, n - 1)
    mean_nll = float(total) / scored
    n_bytes = len(tokenizer.decode(ids[1:].tolist()).encode("utf-8")) if tokenizer is not None else 0
    finite = math.isfinite(mean_nll)
    perplexity = math.exp(mean_nll) if finite and mean_nll < 700 else (float("inf") if mean_nll == mean_nll else float("nan"))
    bpb = float(total) / LN2 / n_bytes if n_bytes else float("nan")
    return PerplexityResult(perplexity, mean_nll, bpb, scored, n_bytes, finite)


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of softmax(logits) along the last axis (nan where logits are not finite)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    h = -(logp.exp() * logp).nan_to_num(nan=0.0).sum(-1) / LN2
    bad = ~torch.isfinite(logits).all(-1)
    return h.masked_fill(bad, float("nan"))


@dataclass
class Generation:
    """Output of ``decode``: continuations and per-step traces, shape (batch, steps)."""

    texts: list[str]
    token_ids: torch.Tensor
    entropy_bits: torch.Tensor  # next-token entropy at each step (model distribution, T = 1)
    logprob: torch.Tensor  # natural log-probability of the chosen token
    finished: torch.Tensor  # True once the row has produced EOS (steps after it are padding)
    finite: bool = True
    extras: dict = field(default_factory=dict)


def _kept_ids(token_ids: torch.Tensor, finished: torch.Tensor, eos: int | None) -> list[int]:
    """One row's continuation: the chosen ids before EOS (EOS itself and the padding after it dropped)."""
    return [int(tok) for tok, fin in zip(token_ids, finished) if not fin and int(tok) != eos]


def left_padded(tokenizer, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of ``prompts``, each (batch, longest), padded on the left.

    Padded here rather than by the tokenizer, so a tokenizer without a pad token or with
    right padding (GPT-2's from the hub has both) works; the pad id only fills masked slots.
    """
    rows = [list(tokenizer(p)["input_ids"]) for p in prompts]
    if not rows or not all(rows):  # nothing to continue from (no BOS token is added here)
        raise NoisyNNError("a prompt is empty (no tokens); give a few words for the model to continue")
    width = max(len(r) for r in rows)
    fill = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    ids = torch.tensor([[fill] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def cache_names(model) -> tuple[str, str]:
    """(forward kwarg, output field) of the KV cache: ``cache`` in transformers >= 5.2x, else ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return ("cache", "cache") if "cache" in params else ("past_key_values", "past_key_values")


def _choose(logits: torch.Tensor, greedy: torch.Tensor, temperature: float, top_k: int | None,
            top_p: float | None, generator: torch.Generator | None) -> torch.Tensor:
    safe = logits.float().nan_to_num(nan=-1e30, posinf=1e30, neginf=-1e30)
    choice = safe.argmax(-1)
    if (~greedy).any():
        scaled = safe / max(temperature, 1e-6)
        if top_k:
            kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[..., -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        if top_p is not None and top_p < 1.0:
            sorted_logits, order = scaled.sort(-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) > top_p
            scaled = scaled.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = scaled.softmax(-1)
        bad = ~torch.isfinite(probs).all(-1) | (probs.sum(-1) <= 0)
        probs[bad] = 1.0 / probs.shape[-1]
        sampled = torch.multinomial(probs.cpu() if generator is not None and generator.device.type == "cpu" else probs,
                                    1, generator=generator).squeeze(-1).to(logits.device)
        choice = torch.where(greedy, choice, sampled)
    return choice


@torch.inference_mode()
def decode(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, *, greedy: bool | Sequence[bool] = True,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None, before_step: Callable[[int], None] | None = None,
           after_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
           stop_at_eos: bool = True) -> Generation:
    """Batched, KV-cached decoding; each row is greedy or sampled.

    ``before_step(t)`` runs before the forward pass that produces token ``t`` (t = 0 is the
    prompt pass): the temporal-drift experiment changes the weights there. ``after_step(t,
    tokens, logits)`` sees each step's chosen ids (batch,) and logits (batch, vocab): the UI
    streams text with it. Rows of different prompt lengths are left-padded (``left_padded``)
    with matching position ids. ``stop_at_eos=False`` keeps decoding through EOS for all ``max_new_tokens``
    steps (fixed-length traces).
    """
    if int(max_new_tokens) < 1:
        raise NoisyNNError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = _device_of(model)
    ids, mask = left_padded(tokenizer, prompts)
    ids, mask = ids.to(device), mask.to(device)
    batch = ids.shape[0]
    greedy_rows = torch.tensor([greedy] * batch if isinstance(greedy, bool) else list(greedy), device=device)
    cache_kw, cache_out = cache_names(model)
    keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
    eos = tokenizer.eos_token_id if stop_at_eos else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    tokens, entropies, logprobs = [], [], []
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    finished_trace = []
    cache, step_input, step_pos, finite = None, ids, positions, True
    for t in range(max_new_tokens):
        if before_step is not None:
            before_step(t)
        kwargs = {"input_ids": step_input, "attention_mask": mask, "position_ids": step_pos, "use_cache": True}
        if keep_last:
            kwargs["logits_to_keep"] = 1
        if cache is not None:
            kwargs[cache_kw] = cache
        out = model(**kwargs)
        cache = getattr(out, cache_out)
        logits = out.logits[:, -1, :]
        finite = finite and bool(torch.isfinite(logits).all())
        choice = _choose(logits, greedy_rows, temperature, top_k, top_p, generator)
        choice = torch.where(finished, torch.full_like(choice, pad), choice)
        logp = F.log_softmax(logits.float(), -1).gather(-1, choice[:, None]).squeeze(-1)
        entropies.append(entropy_bits(logits))
        logprobs.append(logp)
        tokens.append(choice)
        finished_trace.append(finished.clone())
        if after_step is not None:
            after_step(t, choice, logits)
        if eos is not None:
            finished = finished | (choice == eos)
        step_input = choice[:, None]
        mask = torch.cat([mask, torch.ones_like(step_input)], dim=1)
        step_pos = step_pos[:, -1:] + 1
        if bool(finished.all()):
            break
    token_ids = torch.stack(tokens, 1).cpu()
    done = torch.stack(finished_trace, 1).cpu()
    texts = [tokenizer.decode(_kept_ids(token_ids[row], done[row], eos), skip_special_tokens=True)
             for row in range(batch)]
    return Generation(texts, token_ids, torch.stack(entropies, 1).cpu(), torch.stack(logprobs, 1).cpu(), done, finite)


def generate_text_samples(model, tokenizer, prompt: str, device=None, n_samples: int = 3, max_new_tokens: int = 50,
                          temperature: float = 0.8, top_p: float | None = 0.95, do_sample: bool = True, *,
                          top_k: int | None = 50, include_prompt: bool = True, seed: int | None = None,
                          generator: torch.Generator | None = None, num_samples: int | None = None) -> list[str]:
    """``n_samples`` texts from ``prompt``, in one batched, KV-cached pass; each stops at EOS.

    The original toolkit's call and order. As there, each text *includes the prompt* (prompt
    and continuation tokens decoded together, special tokens skipped); ``include_prompt=False``
    gives the continuation alone. Sampling: temperature, then top-k (50, the transformers
    default the original got from ``generate``), then nucleus ``top_p``; ``do_sample=False`` is
    greedy. Randomness: ``generator``, else a fresh one from ``seed``, else torch's global RNG
    (so ``torch.manual_seed`` before the call reproduces it, as before). ``num_samples`` is
    the older spelling of ``n_samples``. ``device`` is accepted for the original order; the
    inputs go to the model's device.
    """
    if num_samples is not None:
        n_samples = num_samples
    n_samples = int(n_samples)
    if n_samples <= 0:
        return []
    if generator is None and seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
    gen = decode(model, tokenizer, [prompt] * n_samples, max_new_tokens, greedy=not do_sample,
                 temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    if not include_prompt:
        return gen.texts
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    eos = tokenizer.eos_token_id
    return [tokenizer.decode(prompt_ids + _kept_ids(gen.token_ids[row], gen.finished[row], eos),
                             skip_special_tokens=True) for row in range(n_samples)]


def mean_entropy(gen: Generation, row: int = 0, steps: int | None = None) -> float:
    """Mean next-token entropy (bits) of one row over its first ``steps`` steps before EOS."""
    h = gen.entropy_bits[row][~gen.finished[row]]
    h = h[:steps] if steps else h
    return float(h.mean()) if h.numel() else float("nan")


def compute_output_entropy(model, tokenizer, prompt: str, device=None, n_next_tokens: int = 10, *,
                           num_tokens: int | None = None) -> float:
    """Mean entropy (bits) of the next-token distribution along ``n_next_tokens`` greedy steps.

    The original toolkit's call: the prompt is extended by the argmax token each step, through
    EOS, and H = -sum_i p_i log2 p_i is averaged over the steps. For uniform logits over a
    vocabulary of V tokens this is log2(V). Non-finite logits give nan (the original returned
    inf). ``num_tokens`` is the older spelling of ``n_next_tokens``.
    """
    steps = int(num_tokens if num_tokens is not None else n_next_tokens)
    if steps <= 0:
        return 0.0
    gen = decode(model, tokenizer, [prompt], steps, greedy=True, stop_at_eos=False)
    return mean_entropy(gen)


def get_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """Word n-grams of ``text``, lower-cased and split on whitespace, in order (with repeats)."""
    words = text.lower().split()
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def compute_distinct_n(texts: str | Sequence[str], n: int = 2) -> float:
    """distinct-n (Li et al., 2016): unique word n-grams / all word n-grams over ``texts``; 0 if none."""
    texts = [texts] if isinstance(texts, str) else texts
    grams = [g for t in texts for g in get_ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def compute_repetition_ratio(texts: str | Sequence[str], n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier n-gram of the same text (0 = no loops); 0 if none."""
    texts = [texts] if isinstance(texts, str) else texts
    repeats = total = 0
    for t in texts:
        grams = get_ngrams(t, n)
        total += len(grams)
        repeats += len(grams) - len(set(grams))
    return repeats / total if total else 0.0


def compute_vocabulary_richness(texts: str | Sequence[str]) -> dict:
    """Word statistics over ``texts`` (lower-cased, split on whitespace).

    Keys as in the original toolkit: ``type_token_ratio`` (unique words / words),
    ``unique_words``, ``total_words``, ``distinct_1``, ``distinct_2``, ``distinct_3``; with no
    words every value is 0 (the original then left out the distinct-n keys).
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    words = [w for t in texts for w in t.lower().split()]
    unique = len(set(words))
    return {"type_token_ratio": unique / len(words) if words else 0.0, "unique_words": unique,
            "total_words": len(words), **{f"distinct_{n}": compute_distinct_n(texts, n) for n in (1, 2, 3)}}


def quality_metrics(model, tokenizer, eval_ids: torch.Tensor, prompt: str, *, n_samples: int = 3,
                    max_new_tokens: int = 40, entropy_tokens: int = 10, temperature: float = 0.8,
                    top_k: int | None = 50, sample_seed: int = 0, max_length: int = 512) -> tuple[dict, list[str], str]:
    """The sweep's metrics for the model as it is now: one perplexity pass and one decode pass.

    The decode batch holds one greedy row (its first ``entropy_tokens`` steps give the
    entropy) and ``n_samples`` sampled rows (distinct-n and repetition). Returns (metrics,
    sampled texts, greedy text).
    """
    ppl = compute_perplexity(model, tokenizer, eval_ids, max_length=max_length)
    gen_rng = torch.Generator(device="cpu").manual_seed(int(sample_seed))
    rows = [True] + [False] * n_samples
    gen = decode(model, tokenizer, [prompt] * len(rows), max(max_new_tokens, entropy_tokens), greedy=rows,
                 temperature=temperature, top_k=top_k, generator=gen_rng)
    samples = gen.texts[1:]
    entropy = mean_entropy(gen, 0, entropy_tokens)
    metrics = {**ppl.metrics(), "entropy_bits": entropy,
               "distinct_1": compute_distinct_n(samples, 1), "distinct_2": compute_distinct_n(samples, 2),
               "repetition": compute_repetition_ratio(samples),
               "finite": bool(ppl.finite and gen.finite and math.isfinite(entropy))}
    return metrics, samples, gen.texts[0]
