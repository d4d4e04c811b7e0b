"""Fixtures: tiny randomly-initialised models built from a config (no downloads), a byte-level
tokenizer built in code, and the embedded SmolLM2-135M for integration tests (loaded once)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


@pytest.fixture
def tokenizer():
    return byte_tokenizer()


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture
def gpt2():
    return tiny_gpt2()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny LLaMA saved as a local model folder, for CLI tests (--model PATH)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(layers=2).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(("The quick brown fox jumps over the lazy dog. " * 40).strip(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M (dequantized and cached on first use)."""
    from noisynn.models.loading import load_model

    return load_model("smollm2-135m", device="cpu")


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
