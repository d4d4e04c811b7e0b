"""Shared test helpers, in one place (fixtures that use them are in tests/conftest.py): the worktree root,
tiny random models and a byte-level tokenizer built in code (no downloads), the one-line exit check of a script's
``main(argv)``, and the CLI runner: a fresh interpreter with the worktree first on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]  # port 0: a free one


def byte_tokenizer():
    """A byte-level BPE tokenizer with no merges: 256 byte symbols + <eos> + <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    vocab["<pad>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    fast.padding_side = "left"
    return fast


def tiny_llama(seed: int = 0, tie: bool = True, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tie, eos_token_id=256, pad_token_id=257, bos_token_id=None)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=258, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                     eos_token_id=256, pad_token_id=257, bos_token_id=256)
    return GPT2LMHeadModel(cfg).eval()


def exits_2_with_one_line(main, argv, capsys) -> str:
    """Call a script's ``main(argv)``: it must end with code 2 (returned, or raised by argparse) and
    exactly one line on stderr, which is returned."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err and len(err.splitlines()) == 1, err
    return err


def script_env(**extra: str) -> dict:
    """The environment of a script run in a fresh interpreter: this one's, the worktree on PYTHONPATH, and ``extra``."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def run_python(args, *, cwd=ROOT, env=None, timeout=None, **kwargs) -> subprocess.CompletedProcess:
    """``python *args`` in a fresh interpreter (output captured as text); ``env`` defaults to ``script_env()``."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=script_env() if env is None else env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)
