"""What can be wrong with a model (files, GGUF magic, causality, context), found before a run starts.

Its folder's files (config.json, weights, tokenizer), a GGUF file's magic, attention that sees later tokens,
and a context shorter than the perplexity window or a prompt plus its generation. Also the one boundary of
loading (``load_failures``), where known errors of transformers, safetensors and gguf become one line, and the
tokenizer loader, which checks a folder holds a tokenizer before transformers guesses one."""

from __future__ import annotations

import json
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from ..errors import NoisyNNError

from .loaded import LoadedModel

DEFAULT_MAX_LENGTH = 512  # perplexity window when the model's context allows it
# Config fields that hold the number of positions a model was built for, by architecture family.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length",
                 "max_seq_len")
# Files one of which a folder needs for AutoTokenizer to build a tokenizer without converting
# a slow one (which asks for sentencepiece or tiktoken).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.tiktoken")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.pth")


# Packages whose own exception types (derived from Exception only) mean a broken model file.
LOADER_PACKAGES = ("safetensors", "gguf", "tokenizers", "transformers", "huggingface_hub", "accelerate")


@contextmanager
def load_failures(what: str, hint: str = "", anything: bool = False) -> Iterator[None]:
    """The one boundary of loading: the errors transformers, safetensors and gguf raise for a
    broken model (unreadable or invalid files, unknown architecture, wrong shapes, missing
    packages) become one NoisyNNError naming ``what`` and the cause. ``anything=True`` (a
    tokenizer's construction, where the Rust library raises a bare Exception) takes every error."""
    try:
        yield
    except NoisyNNError:
        raise
    # struct.error: a truncated binary header (a .gguf cut after its magic bytes)
    except (OSError, ValueError, KeyError, TypeError, ImportError, RuntimeError, EOFError, struct.error) as err:
        raise NoisyNNError(f"cannot load {what}: {_cause(err)}{hint}") from None
    except Exception as err:
        if not anything and type(err).__module__.split(".")[0] not in LOADER_PACKAGES:
            raise
        raise NoisyNNError(f"cannot load {what}: {_cause(err)}{hint}") from None


def _cause(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    first = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else "")
    return f"{type(err).__name__}: {first[:300]}" if first else type(err).__name__


def check_model_folder(path: Path) -> None:
    """What can be wrong with a local model folder, found without loading it: config.json missing,
    not JSON, without a known model_type; no weights file; a safetensors file cut short."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise NoisyNNError(f"model folder {path} has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NoisyNNError(f"model folder {path}: config.json is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise NoisyNNError(f"model folder {path}: config.json holds a {type(config).__name__}, not an object")
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        import transformers

        named = f"model_type '{model_type}'" if model_type is not None else "no model_type"
        raise NoisyNNError(f"model folder {path}: config.json names {named}, which transformers "
                           f"{transformers.__version__} does not know")
    weights = [f for pattern in WEIGHT_PATTERNS for f in sorted(path.glob(pattern))]
    if not weights:
        raise NoisyNNError(f"model folder {path} has no weights file (model.safetensors or pytorch_model.bin)")
    for f in weights:
        if f.name.endswith(".safetensors"):
            check_safetensors(f)


def check_safetensors(path: Path) -> None:
    """A safetensors file is an 8-byte little-endian header length N, N bytes of JSON header with
    each tensor's ``data_offsets``, then the data: the file must hold all of it."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        header = fh.read(n) if 0 < n <= min(size - 8, 100 << 20) else b""
    try:
        tensors = json.loads(header.decode("utf-8")) if header else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        tensors = None
    if not isinstance(tensors, dict):
        raise NoisyNNError(f"weights file {path} is damaged or not safetensors ({size:,} bytes, no readable header)")
    ends = [t["data_offsets"][1] for k, t in tensors.items()
            if k != "__metadata__" and isinstance(t, dict) and len(t.get("data_offsets", ())) == 2]
    need = 8 + n + max(ends, default=0)
    if size < need:
        raise NoisyNNError(f"weights file {path} is truncated: {size:,} bytes, its header describes {need:,}")


def check_gguf(path: Path) -> None:
    """A GGUF file starts with the four bytes ``GGUF``."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise NoisyNNError(f"model file {path} is not a GGUF file (it does not start with the GGUF magic bytes)")


def check_vocabulary(model: torch.nn.Module, tokenizer, name: str) -> None:
    """Every token id of the tokenizer's vocabulary must have a row in the model's input embedding.

    Only the base vocabulary (``vocab_size``) counts: some models add tokens that text never
    produces (image placeholders) beyond their embedding rows.
    """
    rows = model.get_input_embeddings().num_embeddings
    size = getattr(tokenizer, "vocab_size", None) or len(tokenizer)
    if size > rows:
        raise NoisyNNError(f"the tokenizer of model {name} has {size:,} tokens but the model's embedding "
                           f"has {rows:,} rows: it is another model's tokenizer (check --tokenizer)")


@torch.no_grad()
def is_causal(model: torch.nn.Module, n: int = 16) -> bool:
    """True if the logits at each position ignore later tokens: two inputs of ``n`` tokens that
    share their first half must give the same logits over that half (to a few rounding steps of
    the weights' dtype; a causal model gives identical rows).

    A causal LM class is not enough: an encoder loaded as a causal LM (BertLMHeadModel with
    is_decoder=False) runs bidirectional attention and would score text it has already seen.
    """
    emb = model.get_input_embeddings()
    n = max(2, min(n, context_limit(model.config) or n))
    half = n // 2
    ids = (torch.arange(n) * 7 + 3) % emb.num_embeddings
    other = ids.clone()
    other[half:] = (ids[half:] * 13 + 5) % emb.num_embeddings
    logits = model(input_ids=torch.stack([ids, other]).to(emb.weight.device), use_cache=False).logits.float()
    a, b = logits[0, :half], logits[1, :half]
    tolerance = 4 * torch.finfo(emb.weight.dtype).eps * a.abs().max() + 1e-6
    return bool(((a - b).abs().max() <= tolerance).item())


_NOT_CAUSAL = ("is not a causal language model: {why}; noisynn scores next-token prediction, which needs a "
               "decoder-only model")


def check_causal_config(config, name: str) -> None:
    """Without weights: a config that can be an encoder or a decoder (BERT, RoBERTa...) and says
    ``is_decoder=False`` builds bidirectional attention, even in a causal-LM class."""
    if getattr(config, "is_decoder", None) is False:
        raise NoisyNNError(f"model {name} (model_type {config.model_type}) "
                           + _NOT_CAUSAL.format(why="its config has is_decoder=False, so attention sees later tokens"))


def check_causal(model: torch.nn.Module, name: str) -> None:
    """The config check, then the measured one (``is_causal``) for every other kind of model."""
    check_causal_config(model.config, name)
    if not is_causal(model):
        raise NoisyNNError(f"model {name} ({type(model).__name__}, model_type {model.config.model_type}) "
                           + _NOT_CAUSAL.format(why="its prediction at a position changes with later tokens"))


def context_limit(config) -> int | None:
    """The number of positions the model was built for, read from its config (``POSITION_KEYS``,
    also under ``text_config`` for multimodal configs); None where the config states none."""
    for cfg in (config, getattr(config, "text_config", None)):
        for key in POSITION_KEYS:
            value = getattr(cfg, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def context_window(max_length: int | None, limit: int | None, name: str) -> int:
    """``max_length`` if the model's ``limit`` holds it (else NoisyNNError); None -> min(512, limit)."""
    if max_length is None:
        return min(DEFAULT_MAX_LENGTH, limit) if limit else DEFAULT_MAX_LENGTH
    if limit is not None and max_length > limit:
        raise NoisyNNError(f"--max_length {max_length:,} is longer than the {limit:,} positions of model {name}; "
                           f"give --max_length {limit} or less")
    return max_length


def fit_context(lm: "LoadedModel", max_length: int | None = None, prompts: Sequence[str] = (), new_tokens: int = 0,
                windows: dict | None = None) -> int:
    """The perplexity window for ``lm``: ``max_length``, or min(512, the model's positions) if None.

    Refuses, before anything runs, a window, any of ``windows`` ({flag: tokens}), or a prompt
    plus ``new_tokens`` generated after it, longer than the model's positions (beyond them
    position embeddings run out, IndexError, or rotary models silently degrade).
    """
    limit = context_limit(lm.model.config)
    name = lm.info.get("name", "")
    window = context_window(max_length, limit, name)
    if limit is None:
        return window
    where = f"the {limit:,} positions of model {name}"
    for flag, n in (windows or {}).items():
        if n > limit:
            raise NoisyNNError(f"{flag} {n:,} is longer than {where}; give {flag} {limit} or less")
    if new_tokens >= limit:
        raise NoisyNNError(f"{new_tokens:,} generated tokens do not fit in {where} (with the prompt); "
                           "generate fewer")
    for prompt in prompts:
        n = len(lm.tokenizer(prompt)["input_ids"])
        if n + new_tokens > limit:
            raise NoisyNNError(f"the prompt {prompt[:24]!r}... is {n:,} tokens and {new_tokens:,} more are generated, "
                               f"{n + new_tokens:,} in all, beyond {where}; shorten the prompt or generate fewer "
                               "tokens")
    return window


def load_tokenizer(source: str | Path, local_only: bool = True, of: str | None = None):
    """A tokenizer from a folder, a ``tokenizer.json`` file or a hub id. ``of`` names the model
    whose own tokenizer this is (None: one the user gave), for the messages."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    what = f"the tokenizer of model {of}" if of else f"tokenizer {source}"
    hint = "; give --tokenizer PATH (a folder or tokenizer.json of this model's tokenizer)" if of else ""
    path = Path(os.path.expanduser(str(source)))
    if path.is_file() and path.suffix == ".json":
        with load_failures(what, hint, anything=True):
            return PreTrainedTokenizerFast(tokenizer_file=str(path))
    if path.is_dir():
        if not any((path / f).is_file() for f in TOKENIZER_FILES):
            whose = f"model folder {of}" if of else f"tokenizer folder {source}"
            raise NoisyNNError(f"{whose} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...){hint}")
    elif not of and (path.exists() or str(source).startswith(("/", "./", "../", "~"))):
        problem = "is not a folder or a .json file" if path.exists() else "does not exist"
        raise NoisyNNError(f"tokenizer {source} {problem}")
    with load_failures(what, hint, anything=True):
        return AutoTokenizer.from_pretrained(str(source), local_files_only=local_only)
