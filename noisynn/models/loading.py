"""load_model(): the embedded SmolLM2-135M by alias, a hub id, a local folder, or a .gguf file; names checked first.

The embedded model's GGUF is dequantized once into a safetensors cache (noisynn.models.embedded); a model's
fingerprint is the sha256 of its weight files (or the hub commit), recorded in run.json and compared on resume."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import urllib.parse
from pathlib import Path

import torch

from ..errors import NoisyNNError
from .mapped import materialize
from .checks import (check_causal, check_gguf, check_model_folder, check_vocabulary, context_limit, load_failures,
                     load_tokenizer)
from .devices import parse_max_memory, resolve_device, resolve_dtype
from .embedded import (DEFAULT_MODEL, EMBEDDED_MODELS, _dequantized_cache, cache_root, embedded_available,
                       embedded_gguf_path)
from ..runs.inputs import file_sha256
from .loaded import LoadedModel


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_folder(folder: str | Path, dtype: torch.dtype, local_only: bool = True, tokenizer: str | None = None,
                 **placement):
    """Model from ``folder`` (a local folder or a hub id); tokenizer from ``tokenizer`` if given, else the folder."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    # The model first: a tokenizer load reads config.json too, and would take its errors for its own.
    # Mismatched shapes are loaded (as random) so that they can be reported here, with the missing ones:
    # either way transformers would run a partly random model, a different model, silently.
    model, loading = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, local_files_only=local_only,
                                                          output_loading_info=True, ignore_mismatched_sizes=True,
                                                          **placement)
    mismatched = list(loading.get("mismatched_keys") or ())
    if mismatched:
        first = mismatched[0]
        shown = f"{first[0]}: {list(first[1])} in the file, {list(first[2])} by the config" \
            if isinstance(first, (tuple, list)) and len(first) == 3 else str(first)
        raise NoisyNNError(f"the weights of model {folder} do not fit its config.json: {len(mismatched)} parameters "
                           f"have other shapes ({shown})")
    missing = sorted(loading.get("missing_keys") or ())
    if missing:
        raise NoisyNNError(f"the weights of model {folder} do not fit its config.json: {len(missing)} parameters are "
                           f"missing from them (e.g. {missing[0]}), and would be random")
    tok = load_tokenizer(tokenizer or folder, local_only, of=None if tokenizer else str(folder))
    return model, tok


def load_model(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str | None = None,
               device_map: str | dict | None = None, max_memory: str | dict | None = None,
               tokenizer: str | None = None) -> LoadedModel:
    """Load ``name``: an embedded alias, a local folder, a ``.gguf`` file, or a hub id.

    Returns the model in eval mode on ``device`` with a tokenizer that pads on the left (from
    ``tokenizer``, a folder, tokenizer.json or hub id, if given; else the model's own).
    ``device_map="auto"`` (with optional ``max_memory``) lets Accelerate shard the model across
    the GPUs and the CPU of the node instead; every weight must stay in memory (no disk offload).
    A broken or non-causal model raises NoisyNNError, one line naming it and the cause.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    placement = {}
    if device_map:
        memory = parse_max_memory(max_memory) if isinstance(max_memory, str) or max_memory is None else max_memory
        placement = {"device_map": device_map, **({"max_memory": memory} if memory else {})}
    # Without sharding, load float32 and cast afterwards, to measure the rounding error.
    load_dtype = torch_dtype if placement else torch.float32
    info: dict = {"name": name}
    if tokenizer:
        info["tokenizer"] = str(tokenizer)
    path = Path(os.path.expanduser(name))
    with load_failures(f"model {name}"):
        if name in EMBEDDED_MODELS:
            gguf = embedded_gguf_path(name)
            folder, meta = _dequantized_cache(gguf, name)
            model, tok = _from_folder(folder, load_dtype, tokenizer=tokenizer, **placement)
            info.update(source="embedded", description=EMBEDDED_MODELS[name].description,
                        license=EMBEDDED_MODELS[name].license, fingerprint=meta["gguf_sha256"], cache=str(folder))
        elif path.suffix == ".gguf":
            if not path.is_file():
                raise NoisyNNError(f"model file {name} does not exist")
            check_gguf(path)
            folder, meta = _dequantized_cache(path, path.stem)
            model, tok = _from_folder(folder, load_dtype, tokenizer=tokenizer, **placement)
            info.update(source="gguf", fingerprint=meta["gguf_sha256"], cache=str(folder))
        elif path.is_dir():
            check_model_folder(path)
            model, tok = _from_folder(path, load_dtype, tokenizer=tokenizer, **placement)
            weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
            info.update(source="folder", fingerprint=_fingerprint_files(weights))
        elif path.exists():
            raise NoisyNNError(_not_a_model(name))
        elif name.startswith(("/", "./", "../", "~")) or os.sep in name and not _looks_like_repo_id(name):
            raise NoisyNNError(f"model path {name} does not exist")
        else:
            model, tok = _from_hub(name, load_dtype, tokenizer=tokenizer, **placement)
            info.update(source="hub", fingerprint=getattr(model.config, "_commit_hash", None))
    rounding = {}
    if torch_dtype != torch.float32 and not placement:
        rounding = rounding_error_std(model, torch_dtype)
        model.to(torch_dtype)
    if placement:
        offloaded = sorted({d for d in getattr(model, "hf_device_map", {}).values() if d in ("disk", "meta")})
        if offloaded:
            raise NoisyNNError(f"--device_map placed weights on {offloaded[0]}, which cannot be noised; give "
                               "--max_memory enough GPU/CPU memory to hold the whole model")
        model.eval()
        info["device_map"] = {k: str(v) for k, v in getattr(model, "hf_device_map", {}).items()}
    else:
        model.to(dev).eval()
        if dev.type == "cpu" and torch_dtype == torch.float32:  # a cast to another dtype has copied already
            materialize(model)
    check_vocabulary(model, tok, name)
    check_causal(model, name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    info.update(architecture=type(model).__name__, model_type=model.config.model_type,
                n_params=sum(p.numel() for p in model.parameters()),
                tied_embeddings=bool(getattr(model.config, "tie_word_embeddings", False)),
                context_length=context_limit(model.config),
                device=str(dev), dtype=str(torch_dtype).replace("torch.", ""))
    return LoadedModel(model, tok, info, rounding)


@torch.no_grad()
def rounding_error_std(model: torch.nn.Module, dtype: torch.dtype) -> dict:
    """name -> (numel, std(W.to(dtype) - W)) for every float32 parameter of ``model``."""
    out = {}
    for name, p in model.named_parameters():
        if p.dtype == torch.float32:
            err = p.detach().to(dtype).float() - p.detach()
            out[name] = (p.numel(), float(err.std()) if p.numel() > 1 else float(err.abs().max()))
    return out


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith(".")


def _fingerprint_files(files) -> str | None:
    """sha256 over the weight files' names and contents (a resume compares it: other weights
    under the same path are refused). Each file's digest is cached by (path, size, mtime, inode),
    so a big model is read once, not at every start."""
    if not files:
        return None
    cache_file = cache_root() / "fingerprints.json"
    try:
        cache = json.loads(cache_file.read_text())
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    digest, changed = hashlib.sha256(), False
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        if key not in cache:
            cache[key], changed = file_sha256(f), True
        digest.update(f"{f.name}:{cache[key]}".encode())
    if changed:
        try:  # best effort: without the cache the next start hashes again
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_file)
        except OSError:
            pass
    return digest.hexdigest()


def _not_a_model(name: str) -> str:
    kind = "a file" if Path(os.path.expanduser(name)).is_file() else "not a regular file"
    return f"model path {name} is {kind}, not a model folder or a .gguf file"


def _offline_hint(name: str, flag: str = "--model") -> str:
    return (f"cannot reach the Hugging Face hub to download '{name}' (no network?); use the embedded model "
            f"{flag} {DEFAULT_MODEL}, or {flag} PATH to a local model folder or .gguf file")


def check_model_name(name: str, flag: str = "--model") -> None:
    """Cheap checks of a model name without loading it, so a bad one fails before a run folder is
    written: an embedded alias must be installed, a path must exist, and a hub id must be in the
    local hub cache or the hub reachable."""
    if name in EMBEDDED_MODELS:
        if not embedded_available(name):
            raise NoisyNNError(f"model '{name}' is not installed; {EMBEDDED_MODELS[name].install}")
        return
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        check_model_folder(path)
        return
    if path.is_file() and path.suffix == ".gguf":
        check_gguf(path)
        return
    if path.exists():
        raise NoisyNNError(_not_a_model(name))
    if path.suffix == ".gguf" or name.startswith(("/", "./", "../", "~")) or os.sep in name and not _looks_like_repo_id(name):
        raise NoisyNNError(f"model path {name} does not exist")
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str) and not _hub_reachable():
        raise NoisyNNError(_offline_hint(name, flag))


def model_skeleton(name: str) -> torch.nn.Module | None:
    """The model's architecture without weights (on the meta device), to check target names
    before the slow load; None where its config cannot be read without loading (then the load
    itself reports the problem)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(os.path.expanduser(name))
    try:
        if name in EMBEDDED_MODELS or path.suffix == ".gguf":
            gguf = embedded_gguf_path(name) if name in EMBEDDED_MODELS else path
            folder = str(_dequantized_cache(gguf, name if name in EMBEDDED_MODELS else path.stem)[0])
        else:
            folder = str(path) if path.is_dir() else name
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError):
        return None


def _from_hub(name: str, dtype: torch.dtype, tokenizer: str | None = None, **placement):
    offline_hint = _offline_hint(name)
    try:  # already in the local hub cache: no network needed
        return _from_folder(name, dtype, local_only=True, tokenizer=tokenizer, **placement)
    except (OSError, ValueError, NoisyNNError):
        pass
    if not _hub_reachable():
        raise NoisyNNError(offline_hint)
    try:
        return _from_folder(name, dtype, local_only=False, tokenizer=tokenizer, **placement)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NoisyNNError(f"cannot load '{name}' from the hub: {first}") from None
