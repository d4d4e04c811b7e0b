"""A randomly initialised Llama model folder, for memory and speed benchmarks at sizes we do not ship.

    python benchmarks/random_model.py --preset 1b        # -> ~/.cache/noisynn/random-models/1b
    python thermal_noise_simulation.py --model ~/.cache/noisynn/random-models/1b ...

The folder holds config.json, model.safetensors (float32) and the embedded SmolLM2-135M's
tokenizer files, so ``--model <folder>`` works with every script. The weights are random
(normal, std = the config's initializer_range; norms at 1): the model's text is noise, its
memory and compute are those of a real model of that shape.

The weights are written one tensor at a time, straight into the safetensors file, so building
the 1b preset (4.3 GB) never holds more than its largest tensor (the 400 MB embedding) in memory.
The folder is written under a temporary name and renamed when complete; an existing folder is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Shapes only; the vocabulary, special tokens and rope settings come from the embedded model's config.
PRESETS: dict[str, dict] = {
    # Llama-3.2-1B-like body on the SmolLM2 vocabulary: ~1.07e9 parameters, 4.3 GB in float32.
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
    # For tests: ~3.2e6 parameters (the 49152 x 64 embedding is most of them), 13 MB.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
DONE_MARKER = "noisynn_random_model.json"


def default_folder(preset: str) -> Path:
    """``<noisynn cache>/random-models/<preset>`` (the cache is $NOISYNN_CACHE or ~/.cache/noisynn)."""
    from noisynn.models.embedded import cache_root

    return cache_root() / "random-models" / preset


def embedded_folder() -> Path:
    """The embedded SmolLM2-135M's float cache folder (its config.json and tokenizer files)."""
    from noisynn.models.embedded import DEFAULT_MODEL, _dequantized_cache, embedded_gguf_path

    return _dequantized_cache(embedded_gguf_path(DEFAULT_MODEL), DEFAULT_MODEL)[0]


def build_config(preset: str, source: Path):
    """A LlamaConfig: the embedded model's config with the preset's shapes."""
    from transformers import LlamaConfig

    if preset not in PRESETS:
        raise SystemExit(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}")
    base = json.loads((source / "config.json").read_text())
    for key in ("_model_name_or_path", "transformers_version", "architectures"):
        base.pop(key, None)
    base.update(PRESETS[preset], dtype="float32")
    return LlamaConfig(**base)


def tensor_specs(config) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor the saved file holds, in the model's order (a tied head is not stored)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        skeleton = LlamaForCausalLM(config)
    specs, seen = [], set()
    for name, p in skeleton.named_parameters(remove_duplicate=False):
        if config.tie_word_embeddings and name == "lm_head.weight":
            continue
        if name not in seen:
            seen.add(name)
            specs.append((name, tuple(p.shape)))
    return specs


def init_tensor(name: str, shape: tuple[int, ...], std: float, gen: torch.Generator) -> torch.Tensor:
    """float32 weights: 1 for norm scales (1-D), else N(0, std^2) (transformers' Llama init)."""
    if len(shape) == 1:
        return torch.ones(shape)
    return torch.empty(shape).normal_(0.0, std, generator=gen)


def write_safetensors(path: Path, specs: list[tuple[str, tuple[int, ...]]], make) -> int:
    """Write a float32 safetensors file tensor by tensor (``make(name, shape) -> tensor``); returns its data bytes.

    Format: 8-byte little-endian header length, JSON header (name -> dtype, shape, byte offsets
    into the data), the tensors' raw bytes in header order.
    """
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in specs:
        n = 4 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape in specs:
            t = make(name, shape).contiguous()
            fh.write(t.numpy().tobytes())
            del t
    return offset


def build(preset: str, out: str | Path | None = None, seed: int = 0) -> Path:
    """Write the random model folder for ``preset`` (reused if complete) and return its path."""
    folder = Path(out).expanduser() if out else default_folder(preset)
    if (folder / DONE_MARKER).is_file():
        return folder
    source = embedded_folder()
    config = build_config(preset, source)
    specs = tensor_specs(config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        config.save_pretrained(tmp)
        gen = torch.Generator().manual_seed(seed)
        nbytes = write_safetensors(tmp / "model.safetensors", specs,
                                   lambda name, shape: init_tensor(name, shape, config.initializer_range, gen))
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        n_params = sum(int(torch.Size(s).numel()) for _, s in specs)
        (tmp / DONE_MARKER).write_text(json.dumps({"preset": preset, "seed": seed, "n_params": n_params,
                                                   "weights_bytes": nbytes, "tokenizer_from": str(source)}, indent=2))
        if folder.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="1b")
    p.add_argument("--out", help="model folder (default: <noisynn cache>/random-models/<preset>)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(build(args.preset, args.out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
